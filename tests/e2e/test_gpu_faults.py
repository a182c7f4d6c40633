"""GPU reservations under faults, on real servers and processes with pretend GPUs (``--fake-gpus``):

- PostgreSQL down while a job ends: its reservation and GPU holds stay until its final write lands, are released
  the moment PostgreSQL is back and it does, and meanwhile the job waiting for that GPU is never given it.
- A host that vanishes: a dead agent (SIGKILL to the agent, its workers and their horses) has its reservations
  released within the liveness bound (under a second by design); a host cut off from the servers (a network
  namespace, tests/netns.py) within the partition bound (15 s by design), never before its attempt has fenced
  itself. Its jobs are re-queued from their checkpoints, and the freed GPUs are placed again once the host is back.

Every sample checks the database's rules directly: no GPU in two live reservations, and each reservation's GPUs
held (``gpu_holds``) by its job."""

from __future__ import annotations

import signal
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from api.queue import pid_alive
from api.stores import db, redis_connection
from api.worker import standby
from tests.e2e import test_partitions
from tests.e2e.test_partitions import FENCE, PARTITION_BOUND, Lab, assert_never_interleaved, step_log
from tests.support import assert_events_chain, events, row, wait_for, wait_status

pytestmark = pytest.mark.e2e
SAMPLE = {"TRAINQ_TASKS": "tests.task_modules.sample"}
lab_servers, lab = test_partitions.lab_servers, test_partitions.lab  # the other host, its servers (fixtures)
LIVENESS_BOUND = 1.0  # a dead process's session ends at once; the reconciler looks every LIVENESS_INTERVAL (0.25 s)
SLACK = 1.0  # a loaded CI machine's scheduling, on top of the bound


# ---------------------------------------------------------------- the record's view of the devices


def reservations() -> dict[str, dict[str, Any]]:
    """Each live reservation by job id: its host's name, attempt and GPUs."""
    rows = db.session.execute(text(
        "SELECT r.job_id, h.name, r.attempt, r.gpus FROM reservations r JOIN hosts h ON h.id = r.host_id")).all()
    db.session.commit()
    return {str(job_id): {"host": host, "attempt": attempt, "gpus": sorted(gpus)}
            for job_id, host, attempt, gpus in rows}


def holds(host: str) -> dict[int, str]:
    """The held GPUs of ``host``: index -> the job holding it."""
    rows = db.session.execute(text(
        "SELECT g.gpu, g.job_id FROM gpu_holds g JOIN hosts h ON h.id = g.host_id WHERE h.name = :host"),
        {"host": host}).all()
    db.session.commit()
    return {gpu: str(job_id) for gpu, job_id in rows}


def assert_never_double_booked() -> dict[str, dict[str, Any]]:
    """No GPU of a host in two live reservations, and every reserved GPU held by its own job in ``gpu_holds``."""
    overlapping = db.session.execute(text(
        "SELECT a.job_id, b.job_id FROM reservations a JOIN reservations b ON a.host_id = b.host_id"
        " AND a.job_id < b.job_id AND a.gpus && b.gpus")).all()
    unheld = db.session.execute(text(
        "SELECT r.job_id, g FROM reservations r CROSS JOIN LATERAL unnest(r.gpus) AS g WHERE NOT EXISTS"
        " (SELECT 1 FROM gpu_holds h WHERE h.host_id = r.host_id AND h.gpu = g AND h.job_id = r.job_id)")).all()
    stray = db.session.execute(text(
        "SELECT h.job_id, h.gpu FROM gpu_holds h LEFT JOIN reservations r ON r.job_id = h.job_id"
        " AND r.host_id = h.host_id WHERE r.job_id IS NULL OR NOT h.gpu = ANY(r.gpus)")).all()
    db.session.commit()
    assert not overlapping, f"a GPU in two live reservations: {overlapping}"
    assert not unheld and not stray, f"reservations and GPU holds disagree: {unheld} {stray}"
    return reservations()


def submit(client, task: str, resources: dict, max_attempts: int = 1, **params: Any) -> str:
    response = client.post("/api/training", json={"task": task, "params": params, "resources": resources,
                                                  "max_attempts": max_attempts})
    assert response.status_code == 201, response.get_json()
    return response.get_json()["job"]["id"]


def reason(job_id: str) -> str:
    return row(job_id).status_reason or ""


def family(pid: int) -> list[psutil.Process]:
    """A process and all its descendants (an agent: its pool of RQ workers and their work horses)."""
    process = psutil.Process(pid)
    return [process, *process.children(recursive=True)]


# ---------------------------------------------------------------- PostgreSQL down while a job ends


def test_postgres_down_while_a_job_ends_its_gpu_is_released_when_it_is_back_never_given_twice(
        client, workers, reconcilers, postgres_server):
    reconcilers()
    agent = workers("pg-box", TRAINQ_FAKE_GPUS="1", TRAINQ_CPUS="2", TRAINQ_SLOTS="2", **SAMPLE)
    ending = submit(client, "test-devices", {"gpus": 1}, seconds=4)
    job = wait_status(ending, "running", timeout=180)
    horse = job.worker_pid
    # it runs long enough to be seen holding the GPU (one that ended at once released it before the checks below)
    waiting = submit(client, "test-devices", {"gpus": 1}, seconds=20)
    wait_for(lambda: reason(waiting).startswith("waiting for 1 GPU"), 30, "the second job to wait for the GPU")
    assert assert_never_double_booked() == {ending: {"host": "pg-box", "attempt": 1, "gpus": [0]}}
    assert holds("pg-box") == {0: ending}

    postgres_server.stop()  # down while the first job's task returns: its final write waits for PostgreSQL
    restarted = False
    try:
        wait_for(lambda: "mark completed: database unavailable" in agent.log(), 60,
                 "the task to end and its final write to wait for PostgreSQL")
        assert pid_alive(horse)  # the attempt lives on, retrying its write (DB_RETRY_SECONDS)
        postgres_server.start()
        restarted = True
    finally:
        if not restarted:
            postgres_server.start()
    back = time.monotonic()
    db.session.remove()  # the pool's connections died with the server

    def sample() -> bool:
        """One look at the record, asserting its rules; True once the waiting job runs on the freed GPU."""
        try:
            live = assert_never_double_booked()
            ending_row, waiting_row = row(ending), row(waiting)
        except OperationalError:  # a pooled connection the restart broke: the next sample takes a fresh one
            db.session.rollback()
            db.session.remove()
            return False
        if waiting in live:  # placed: only once the first job's end is recorded and its GPU let go
            assert ending_row.status == "completed" and ending not in live, (ending_row.status, live)
        else:
            assert waiting_row.status == "queued", waiting_row.status
        return waiting_row.status == "running"

    wait_for(sample, 90, "the freed GPU to be placed again, for the waiting job")
    released = time.monotonic() - back
    finished = row(ending)
    assert finished.status == "completed", (finished.status, finished.status_reason)  # its own final write
    assert assert_never_double_booked() == {waiting: {"host": "pg-box", "attempt": 1, "gpus": [0]}}
    assert holds("pg-box") == {0: waiting}
    placed = client.get(f"/api/training/{waiting}").get_json()["placement"]
    assert placed["host"] == "pg-box" and placed["gpus"] == [0]
    assert row(waiting).started_at >= finished.finished_at  # it never ran while the first still held the GPU
    assert [to for _, to, _ in assert_events_chain(ending)] == ["queued", "running", "completed"]
    print(f"PostgreSQL back -> the freed GPU running the waiting job: {released:.2f} s")
    wait_status(waiting, "completed", timeout=120)
    assert reservations() == {} and holds("pg-box") == {}


# ---------------------------------------------------------------- a dead agent


def test_a_killed_agent_releases_its_gpus_within_the_liveness_bound_and_they_are_placed_again(
        client, workers, reconcilers, tmp_path: Path):
    """Three fake GPUs: a checkpointing 2-GPU job and a 1-GPU job without checkpoints run, a 2-GPU job waits. The
    agent, its workers and their horses are SIGKILLed together: both reservations go within the liveness bound,
    the first job is re-queued to resume from its checkpoint, the second fails (worker lost), as without GPUs.
    The host restarted, its GPUs are placed again: the waiting job, then the resumed one."""
    reconcilers()
    options = {"TRAINQ_FAKE_GPUS": "3", "TRAINQ_CPUS": "4", "TRAINQ_SLOTS": "3", **SAMPLE}
    agent = workers("doomed", **options)
    steps_log = tmp_path / "steps.log"
    moved = submit(client, "test-steps", {"gpus": 2}, max_attempts=2, steps=120, sleep=0.05,
                   step_log=str(steps_log))
    lost = submit(client, "test-devices", {"gpus": 1}, seconds=600)
    wait_for(lambda: (j := row(moved)).status == "running" and (j.step or 0) >= 5 and j.checkpoint_path, 120,
             "the 2-GPU job to train and checkpoint")
    wait_status(lost, "running", timeout=120)
    waiting = submit(client, "test-devices", {"gpus": 2}, seconds=0)
    wait_for(lambda: reason(waiting).startswith("waiting for 2 GPUs"), 30, "the second 2-GPU job to wait")
    assert assert_never_double_booked() == {moved: {"host": "doomed", "attempt": 1, "gpus": [0, 1]},
                                            lost: {"host": "doomed", "attempt": 1, "gpus": [2]}}

    victims = family(agent.pid)
    assert len(victims) >= 6, victims  # the agent, its three workers, the running jobs' horses
    for process in victims:  # the machine's processes die together: nothing of them writes an end
        try:
            process.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    killed = time.monotonic()
    wait_for(lambda: not assert_never_double_booked() and not holds("doomed"), LIVENESS_BOUND + 10,
             "the dead host's reservations and GPU holds to be released")
    took = time.monotonic() - killed
    print(f"agent SIGKILLed -> its reservations released: {took:.2f} s")
    assert took <= LIVENESS_BOUND + SLACK, took
    job = row(moved)
    assert job.status == "queued" and job.attempts == 2, (job.status, job.status_reason)
    assert "worker lost" in job.status_reason and "re-queued to resume from" in job.status_reason
    failed = row(lost)
    assert failed.status == "failed" and failed.status_reason.startswith("worker lost"), failed.status_reason
    wait_for(lambda: reason(waiting) == "waiting for a host offering task test-devices", 30,
             "the waiting job to say no live host offers its task now")
    assert row(waiting).status == "queued" and not holds("doomed")  # nothing placed on the dead host

    workers("doomed", **options)  # the host back (as its supervisor restarts it): its GPUs are placed again
    wait_for(lambda: assert_never_double_booked() is not None and row(moved).status == "completed", 240,
             "both jobs to run on the freed GPUs, checking every look that no GPU is held twice")
    first, done = row(waiting), row(moved)
    assert first.status == "completed" and first.attempts == 1
    assert first.started_at <= done.started_at  # queued before the re-queue: placed first
    assert done.attempts == 2 and done.resume_from and done.step == 120
    lines = assert_never_interleaved(steps_log)
    assert {a for a, _, _ in lines} == {1, 2} and lines[-1][:2] == (2, 120)
    assert ("running", "queued", "reconciler") in events(moved)
    assert reservations() == {} and holds("doomed") == {}


# ---------------------------------------------------------------- a host cut off from the servers


def lab_sample(host: str, allowed: set[str]) -> dict[str, dict[str, Any]]:
    """One look at the record: never double-booked, and nothing on ``host`` but ``allowed`` jobs."""
    live = assert_never_double_booked()
    on_host = {job_id for job_id, r in live.items() if r["host"] == host}
    assert on_host <= allowed, f"placed on the cut-off host: {on_host - allowed}"
    return live


def test_a_cut_off_host_releases_its_gpus_within_the_partition_bound_after_its_fence(lab: Lab):
    """A 2-GPU job on an agent in a network namespace, the link cut and left cut: the attempt fences itself
    (LEASE_FENCE), PostgreSQL drops the agent's and the attempt's sessions, and the reconciler re-queues the job
    from its checkpoint, which releases its reservation and GPU holds, within the partition bound and never before
    the fence. While cut, nothing is placed on the host. Healed, the agent takes its host back (a new database
    session, its pool's workers restarted) and the job resumes on the same two GPUs."""
    lab.reconciler()
    name = f"far-gpu-{uuid.uuid4().hex[:4]}"
    env = {**lab.settings, "TRAINQ_FAKE_GPUS": "2", "TRAINQ_CPUS": "2", "TRAINQ_SLOTS": "2"}
    remote = lab.host.start_worker(env, name, lab.log_dir, redis_connection.get())
    lab.started.append(remote)
    steps_log = lab.log_dir / "far-steps.log"
    moved = submit(lab.client(), "test-steps", {"gpus": 2}, max_attempts=3, steps=300, sleep=0.05,
                   step_log=str(steps_log))
    wait_for(lambda: (j := row(moved)).status == "running" and (j.step or 0) >= 5, 120, "the job to train")
    assert lab_sample(name, {moved})[moved] == {"host": name, "attempt": 1, "gpus": [0, 1]}
    agent = psutil.Process(lab.host.worker_pid(remote))
    horse = wait_for(lambda: next((h for w in agent.children() for h in w.children() if h.name() != standby.NAME),
                                  None), 30, "the job's horse")  # the idle worker's child is its stand-by

    lab.host.cut()
    cut, cut_wall = time.monotonic(), time.time()
    fenced = released = None
    try:
        def watch() -> bool:
            nonlocal fenced
            if fenced is None and not horse.is_running():
                fenced = time.monotonic() - cut
            if moved in lab_sample(name, {moved}):
                return False
            assert fenced is not None, "the reservation was released while the attempt could still train"
            return True

        wait_for(watch, PARTITION_BOUND + 30, "the cut-off host's reservation to be released")
        released = time.monotonic() - cut
        assert holds(name) == {}
        job = row(moved)
        assert job.status == "queued" and job.attempts == 2, (job.status, job.status_reason)
        assert "re-queued to resume from" in job.status_reason  # why it waits again stays until it is placed

        def host_gone() -> bool:  # nothing placed on it while it is cut, until its own session is dropped too
            lab_sample(name, set())
            return name not in {h["name"] for h in lab.client().get("/api/hosts").get_json()["hosts"]}

        wait_for(host_gone, PARTITION_BOUND + 30, "the cut-off host's own session to be dropped")
        lab_sample(name, set())
    finally:
        lab.host.heal()
    healed = time.monotonic()
    print(f"cut -> fenced {fenced:.2f} s, reservation released {released:.2f} s")
    assert FENCE - 1.5 <= fenced <= FENCE + 1.5, fenced
    assert fenced < released <= PARTITION_BOUND + SLACK * 3, (fenced, released)
    last_of_first = max(t for a, _, t in step_log(steps_log) if a == 1)
    assert last_of_first <= cut_wall + FENCE + 1.5  # it stopped training at its fence

    def resumed() -> bool:
        live = lab_sample(name, {moved})
        return moved in live and live[moved]["attempt"] == 2

    wait_for(resumed, 120, "the healed host's freed GPUs to be placed again")
    print(f"healed -> placed again on its GPUs: {time.monotonic() - healed:.2f} s")
    assert lab_sample(name, {moved})[moved]["gpus"] == [0, 1]
    done = wait_status(moved, "completed", timeout=120)
    assert done.attempts == 2 and done.step == 300 and done.resume_from
    assert [to for _, to, _ in events(moved)] == ["queued", "running", "queued", "running", "completed"]
    assert reservations() == {} and holds(name) == {}
    assert {a for a, _, _ in assert_never_interleaved(steps_log)} == {1, 2}
    assert agent.is_running()  # the same agent took its host back
