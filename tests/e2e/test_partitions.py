"""Hosts really apart: a worker on another host (a network namespace with a pid namespace and a host name of its
own, tests/netns.py) killed, or cut off from the servers while its processes live on, for less and for more than
the service's bound. Each test asserts the row's status timeline and reads the job's own log of steps
(``<attempt> <step> <time>`` per step, appended by the task itself to a file on the shared disk, whatever the
network does) to check that two attempts never trained at once.

Numbers (defaults as shipped): an attempt that can confirm neither its database session nor its Redis heartbeat
for ``LEASE_FENCE`` (7 s) stops its own training; PostgreSQL drops a silent peer's session no sooner than 10 s
after the last packet it got from it (``tcp_user_timeout``; keepalive probes from 5 s), about 11 s at most; the
reconciler reads that within ``LIVENESS_INTERVAL``. So a cut host's job leaves ``running`` within PARTITION_BOUND
and its attempt had stopped training about 3 s before.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
from sqlalchemy import text

from api.dev.servers import PostgresServer, RedisServer
from api.stores import db, redis_connection
from tests import netns
from tests.support import (
    WorkerProcess,
    assert_events_chain,
    events,
    row,
    start_flask,
    start_worker,
    wait_for,
    wait_status,
)

PARTITION_BOUND = 15.0  # the service's stated detection bound for a cut host (measured about 11 s)
FENCE = 7.0  # LEASE_FENCE's default


@dataclass
class Lab:
    host: netns.Host
    settings: dict[str, str]
    app: Any
    token: str
    log_dir: Path
    started: list[WorkerProcess] = field(default_factory=list)

    def client(self) -> Any:
        return self.app.test_client(token=self.token)

    def remote_worker(self, name: str) -> WorkerProcess:
        worker = self.host.start_worker(self.settings, name, self.log_dir, redis_connection.get())
        self.started.append(worker)
        return worker

    def local_worker(self, name: str) -> WorkerProcess:
        worker = start_worker(self.settings, name, self.log_dir, redis_connection.get())
        self.started.append(worker)
        return worker

    def reconciler(self) -> WorkerProcess:
        process = start_flask(self.settings, f"reconciler-{len(self.started)}", self.log_dir, "reconciler")
        self.started.append(process)
        return process

    def submit(self, steps: int, sleep: float = 0.05, max_attempts: int = 3) -> tuple[str, Path]:
        step_log = self.log_dir / f"steps-{len(self.started)}-{time.monotonic_ns()}.log"
        response = self.client().post("/api/training", json={
            "name": "netns", "task": "test-steps", "max_attempts": max_attempts,
            "params": {"steps": steps, "sleep": sleep, "step_log": str(step_log)}})
        assert response.status_code == 201, response.get_json()
        return response.get_json()["job"]["id"], step_log


@pytest.fixture(scope="module")
def lab_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[netns.Host, dict[str, str], Any, str]]:
    why = netns.unavailable()
    if why:
        pytest.skip(f"no network namespaces: {why}")
    import flask_migrate

    from api.service import users
    from tests.conftest import make_app

    host = netns.Host.create()
    redis_server = postgres = None
    try:
        redis_server = RedisServer(tmp_path_factory.mktemp("netns-redis"), also_listen=(host.host_ip,)).start()
        postgres = PostgresServer(tmp_path_factory.mktemp("netns-postgres"), ephemeral=True,
                                  also_listen=(host.host_ip,), clients=(f"{host.ip}/32",)).start()
        settings = {
            "DATABASE_URL": postgres.create_database("trainq_netns"), "REDIS_URL": redis_server.url,
            "CHECKPOINT_DIR": str(tmp_path_factory.mktemp("netns-checkpoints")),
            "ARTIFACT_DIR": str(tmp_path_factory.mktemp("netns-artifacts")),
            "PROGRESS_INTERVAL": "0.2", "LOG_LEVEL": "INFO",
            "TRAINQ_TASKS": "tests.task_modules.sample", "TRAINQ_SLOTS": "1",  # one worker per agent, named as asked
        }
        app = make_app(settings)
        with app.app_context():
            flask_migrate.upgrade()
            admin = users.create_user("netns-admin", admin=True)
            token = users.create_token(admin, "netns tests")[1]
            db.session.remove()
        yield host, settings, app, token
    finally:
        host.remove()
        if postgres:
            postgres.remove()
        if redis_server:
            redis_server.stop()
        assert not netns.leftovers(), netns.leftovers()


@pytest.fixture
def lab(lab_servers, tmp_path: Path) -> Iterator[Lab]:
    host, settings, app, token = lab_servers
    with app.app_context():
        db.session.execute(text("TRUNCATE training_jobs CASCADE"))
        db.session.commit()
        redis_connection.get().flushdb()
        lab = Lab(host, settings, app, token, tmp_path)
        try:
            yield lab
        finally:
            host.heal()
            for process in lab.started:
                process.kill()
            host.processes.clear()
            db.session.remove()


def step_log(path: Path) -> list[tuple[int, int, float]]:
    if not path.exists():
        return []
    return [(int(a), int(s), float(t)) for a, s, t in (line.split() for line in path.read_text().splitlines())]


def assert_never_interleaved(path: Path) -> list[tuple[int, int, float]]:
    """Once a later attempt logged a step, no earlier attempt ever logged one again; within an attempt, steps go
    one by one; a new attempt starts at or before the step after its predecessor's last (from a checkpoint)."""
    lines = step_log(path)
    for (a1, s1, t1), (a2, s2, t2) in zip(lines, lines[1:], strict=False):
        assert a2 >= a1, f"attempt {a1} trained after attempt {a2} had started: {(a1, s1, t1)} then {(a2, s2, t2)}"
        assert t2 >= t1
        if a2 == a1:
            assert s2 == s1 + 1, (a1, s1, s2)
        else:
            assert s2 <= s1 + 1, f"attempt {a2} skipped steps: {s1} then {s2}"
    return lines


def statuses(job_id: str) -> list[str]:
    return [to for _, to, _ in events(job_id)]


def wait_steps(job_id: str, n: int, timeout: float = 60) -> Any:
    return wait_for(lambda: (j := row(job_id)).status == "running" and (j.step or 0) >= n and j, timeout,
                    f"job {job_id} to reach step {n}")


def horse_of(lab: Lab, worker: WorkerProcess) -> psutil.Process | None:
    children = psutil.Process(lab.host.worker_pid(worker)).children()
    return children[0] if children else None


def test_a_killed_worker_on_another_host_leaves_running_within_2_seconds(lab: Lab):
    lab.reconciler()
    remote = lab.remote_worker("far-kill")
    job_id, steps = lab.submit(10_000, max_attempts=1)
    job = wait_steps(job_id, 3)
    assert job.hostname == "far-kill" and job.worker_pid != lab.host.worker_pid(remote)  # its own host and pids
    os.kill(lab.host.worker_pid(remote), signal.SIGKILL)
    killed = time.monotonic()
    job = wait_for(lambda: (j := row(job_id)).status != "running" and j, 2.0, "the row to leave running")
    assert time.monotonic() - killed < 2.0
    assert job.status == "failed" and job.status_reason.startswith("worker lost"), job.status_reason
    assert statuses(job_id) == ["queued", "running", "failed"]
    assert {a for a, _, _ in assert_never_interleaved(steps)} == {1}


def test_a_cut_shorter_than_the_bound_changes_nothing(lab: Lab):
    """Cut for 3 s, then healed: the attempt's session outlives the cut, so the row never leaves running, the
    attempt never stops, and the job completes on its first attempt with every step once."""
    lab.reconciler()
    lab.remote_worker("far-short")
    job_id, steps = lab.submit(200)
    wait_steps(job_id, 5)
    lab.host.cut()
    cut = time.monotonic()
    try:
        while time.monotonic() - cut < 3.0:  # watched throughout the cut
            assert row(job_id).status == "running", row(job_id).status_reason
            time.sleep(0.2)
    finally:
        lab.host.heal()
    job = wait_status(job_id, "completed", timeout=90)
    assert job.step == 200 and job.attempts == 1
    assert statuses(job_id) == ["queued", "running", "completed"]
    lines = assert_never_interleaved(steps)
    assert [(a, s) for a, s, _ in lines] == [(1, s) for s in range(1, 201)]


def test_a_cut_longer_than_the_bound_fences_the_attempt_before_the_job_moves(lab: Lab):
    """Cut and left cut: the attempt stops its own training after LEASE_FENCE, PostgreSQL drops its session, and
    the job leaves running (re-queued from its checkpoint) within the bound, never before the attempt stopped.
    Healed, a worker on that host takes the new attempt, which resumes where the old one stopped (a second one:
    RQ's worker quits on the Redis connection it lost, as a supervisor would restart it)."""
    lab.reconciler()
    remote = lab.remote_worker("far-long")
    job_id, steps = lab.submit(400)
    wait_steps(job_id, 5)
    horse = horse_of(lab, remote)
    assert horse is not None
    lab.host.cut()
    cut, cut_wall = time.monotonic(), time.time()
    try:
        horse.wait(FENCE + 3)  # it stopped itself: nothing else can reach it
        fenced = time.monotonic() - cut
        assert row(job_id).status == "running"  # the service has not given the job away yet
        job = wait_for(lambda: (j := row(job_id)).status != "running" and j, PARTITION_BOUND,
                       "the row to leave running")
        detected = time.monotonic() - cut
    finally:
        lab.host.heal()
    assert FENCE - 1.5 <= fenced <= FENCE + 1.5, fenced
    assert fenced < detected <= PARTITION_BOUND, (fenced, detected)
    assert job.status == "queued" and job.attempts == 2, (job.status, job.status_reason)
    assert "stops its own training" in remote.log()
    last_of_first = max(t for a, _, t in step_log(steps) if a == 1)
    assert last_of_first <= cut_wall + FENCE + 1.5  # no step after the fence
    lab.remote_worker("far-long-again")
    job = wait_status(job_id, "completed", timeout=120)
    assert job.step == 400 and job.attempts == 2 and job.hostname.startswith("far-long")
    assert statuses(job_id) == ["queued", "running", "queued", "running", "completed"], events(job_id)
    assert_events_chain(job_id)
    assert {a for a, _, _ in assert_never_interleaved(steps)} == {1, 2}


def test_healed_after_another_worker_took_the_job_the_old_attempt_stays_out(lab: Lab):
    """Cut past the bound while a worker on this host stands by: it takes the new attempt; healed while that
    attempt trains, the old host writes nothing to the row, and the job's step log shows the attempts one after
    the other, never together."""
    lab.reconciler()
    remote = lab.remote_worker("far-moved")
    job_id, steps = lab.submit(400)
    wait_steps(job_id, 5)
    lab.local_worker("near-standby")
    lab.host.cut()
    cut = time.monotonic()
    try:
        job = wait_for(lambda: (j := row(job_id)).status == "running" and j.attempts == 2 and j, PARTITION_BOUND + 30,
                       "the job to run again on the worker here")
        detected = time.monotonic() - cut
        assert job.hostname != "far-moved"
    finally:
        lab.host.heal()
    assert detected <= PARTITION_BOUND + 10, detected
    job = wait_status(job_id, "completed", timeout=120)
    assert job.step == 400 and job.attempts == 2 and job.hostname != "far-moved"
    evs = events(job_id)
    assert [to for _, to, _ in evs] == ["queued", "running", "queued", "running", "completed"], evs
    assert evs[2][2] == "reconciler"  # the move; after it, only the new attempt's own writes
    assert evs[3:] == [("queued", "running", "worker"), ("running", "completed", "worker")], evs
    assert "stops its own training" in remote.log()
    lines = assert_never_interleaved(steps)
    assert {a for a, _, _ in lines} == {1, 2}
    history_steps = [entry["step"] for entry in row(job_id).history or [] if "step" in entry]
    assert history_steps == sorted(set(history_steps)), "a step counted twice"
