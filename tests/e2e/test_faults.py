"""Issue 26: faults that once recorded a finished or healthy job as failed, on real servers and workers (real Redis,
PostgreSQL and RQ worker processes): an artifact saved during a PostgreSQL outage, an outage longer than the
worker's retry plus a Redis flush, RQ's abandoned-job clean-up run by a worker whose clock runs ahead; and a full
checkpoint disk, and the scratch folders a SIGKILLed worker leaves."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from rq.registry import StartedJobRegistry

from api import queue
from api.queue import fetch
from api.record import outcome
from api.record.status import utcnow
from api.record.tables import JobArtifact
from api.service.reconcile import run_pass
from api.stores import db
from api.worker import scratch
from tests.support import (
    LONG,
    assert_events_chain,
    process_gone,
    row,
    submit,
    wait_for,
    wait_status,
    wait_training,
)

CHECKPOINTED = {"dataset": "digits", "epochs": 25, "hidden_sizes": [32], "batch_size": 16, "checkpoint_every": 0,
                "seed": 5}


def submit_task(client, task: str, params: dict, name: str = "t") -> str:
    response = client.post("/api/training", json={"name": name, "task": task, "params": params})
    assert response.status_code == 201, response.get_json()
    return response.get_json()["job"]["id"]


def artifacts(job_id: str) -> list[str]:
    names = [a.name for a in db.session.query(JobArtifact).filter_by(job_id=job_id)]
    db.session.commit()
    return names


def test_an_artifact_saved_during_a_postgres_outage_does_not_fail_the_job(client, workers, postgres_server):
    """Case 1: the task finishes and saves ``model.pt`` while PostgreSQL is down; the job ends completed with its
    artifact listed (it used to fail with the artifact row's OperationalError)."""
    worker = workers()
    job_id = submit_task(client, "diabetes-regression", {"epochs": 60})
    wait_for(lambda: (row(job_id).epoch or 0) >= 5, 120, "a few epochs")
    postgres_server.stop()
    try:
        wait_for(lambda: "its row waits for PostgreSQL" in (log := worker.log())
                 or "task diabetes-regression raised" in log, 180, "the task to save its artifact")
    finally:
        postgres_server.start()
    db.session.remove()
    job = wait_for(lambda: (j := row(job_id)).status != "running" and j, 120, "the job to end")
    assert job.status == "completed", job.status_reason
    assert job.epoch == 60 and job.metrics["val_r2"] is not None
    assert artifacts(job_id) == ["model.pt"]
    assert_events_chain(job_id)


def test_a_long_outage_plus_a_redis_flush_keeps_the_completion(app, client, workers, postgres_server, redis):
    """Case 2: PostgreSQL stays down past DB_RETRY_SECONDS when the job finishes, and Redis then loses everything
    (the RQ job and its result): the attempt's outcome file beside its checkpoints still says it completed, and the
    reconciler records that instead of "worker lost"."""
    worker = workers(DB_RETRY_SECONDS="3")
    job_id = submit(client, CHECKPOINTED)
    wait_for(lambda: (row(job_id).epoch or 0) >= 3, 120, "a few epochs")
    postgres_server.stop()
    try:
        wait_for(lambda: "finished, but the database stayed unreachable" in worker.log(), 180,
                 "the worker to give up its final write")
        # the horse logs that, then returns, and RQ writes the job's end to Redis after it: flush once that is in,
        # or the flush races RQ and the result survives it
        wait_for(lambda: fetch(job_id).get_status(refresh=True) in ("finished", "failed"), 60,
                 "RQ to record the job's end")
        redis.flushall()
    finally:
        postgres_server.start()
    db.session.remove()
    kept = outcome.outcome_path(app.config["CHECKPOINT_DIR"], job_id, 1)
    assert row(job_id).status == "running"  # the record missed the end, and RQ's result is gone
    report = run_pass(now=utcnow() + timedelta(minutes=5))  # every heartbeat stale
    assert report.actions.get("completed") == [job_id], report.actions
    job = row(job_id)
    assert job.status == "completed" and job.status_reason == outcome.RECORDED_FROM_FILE
    assert job.epoch == 25 and job.metrics["val_accuracy"] > 0.8
    assert [e[1] for e in assert_events_chain(job_id)] == ["queued", "running", "completed"]
    assert not kept.exists()  # recorded: the file goes


def test_rqs_abandoned_job_cleanup_by_a_clock_ahead_fails_no_healthy_job(client, workers, reconcilers, redis,
                                                                        monkeypatch: pytest.MonkeyPatch):
    """Case 3: a worker whose clock runs 2 minutes ahead runs RQ's registry clean-up (at its start, and every 10
    minutes); RQ moves the healthy job on another worker to its failed registry. The attempt holds its liveness lock,
    so it stays running on its first attempt and keeps training."""
    import rq.registry

    reconcilers()
    workers()
    job_id = submit(client, LONG, max_attempts=3)
    job = wait_training(job_id)
    registry = StartedJobRegistry(fetch(job.rq_job_id, redis).origin, connection=redis)  # its host's queue
    ahead = time.time() + 120
    monkeypatch.setattr(rq.registry, "current_timestamp", lambda: int(ahead))  # the skewed worker's clock
    assert registry.get_expired_job_ids(int(ahead)), "the started entry should look expired to the skewed clock"
    registry.cleanup()
    assert fetch(job.rq_job_id, redis).get_status() == "failed"  # RQ's verdict
    step = row(job_id).step
    deadline = time.monotonic() + 3 * 2.0 + 2.0  # three reconciler passes, and slack
    while time.monotonic() < deadline:
        now = row(job_id)
        assert now.status == "running" and now.attempts == 1, now.status_reason
        time.sleep(0.25)
    assert row(job_id).step > step  # still training
    assert client.delete(f"/api/training/{job_id}").status_code == 200
    wait_status(job_id, "cancelled")
    assert [e[1] for e in assert_events_chain(job_id)] == ["queued", "running", "cancelled"]
    assert queue.rq_job_id_for(job_id, 1) == job.rq_job_id


def test_scratch_folders_of_a_sigkilled_worker_are_swept_at_the_next_start(client, workers, tmp_path):
    """Case 5: SIGKILL of a worker (its horse dies with it) leaves the attempt's scratch folder behind, since the
    clean-up ran in the dead parent; the next worker on the host removes it at its start, and a live attempt's
    folder stays."""
    env = {"TMPDIR": str(tmp_path)}  # this test's own temp folder: other tests' folders are not ours to judge
    victim = workers(**env)
    doomed = submit(client, LONG)
    job = wait_training(doomed)
    folders = wait_for(lambda: list(tmp_path.glob(f"trainq-{doomed}-a1-*")), 30, "the attempt's scratch folder")
    os.kill(victim.pid, signal.SIGKILL)
    victim.process.wait(10)
    wait_for(lambda: process_gone(job.worker_pid), 10, "the horse to die with its worker")
    assert all(f.exists() for f in folders)  # leaked
    survivor = workers(**env)
    live = submit(client, LONG)
    wait_training(live)
    wait_for(lambda: list(tmp_path.glob(f"trainq-{live}-a1-*")), 30, "the live attempt's scratch folder")
    assert not any(f.exists() for f in folders), "the dead attempt's scratch folder is still there"
    removed = scratch.sweep(tmp_path)  # what the reconciler does every SCRATCH_SWEEP_INTERVAL on its host
    assert removed == [] and list(tmp_path.glob(f"trainq-{live}-a1-*"))  # a live attempt's folder stays
    survivor.kill()


@pytest.mark.parametrize("sweeper", ["reconcilers", "workers"])
def test_dead_attempts_scratch_folders_are_swept_on_their_host_periodically(sweeper, request, tmp_path):
    """Case 5, the periodic half: every SCRATCH_SWEEP_INTERVAL the reconciler, and each host's agent (so every
    host, the reconciler's or not), removes the scratch folders on its own host whose attempts died (their lock
    free), not only at its start; a held folder stays."""
    start = request.getfixturevalue(sweeper)

    def planted() -> Path:
        folder = tmp_path / f"{scratch.workdir_prefix(str(uuid.uuid4()), 1)}x1"
        folder.mkdir()
        (folder / scratch.LOCK_FILE).write_text("")
        return folder

    first, held = planted(), planted()
    fd = os.open(held / scratch.LOCK_FILE, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a live attempt's horse holds it
        start(TMPDIR=str(tmp_path), SCRATCH_SWEEP_INTERVAL="0.5")
        wait_for(lambda: not first.exists(), 60, "the first sweep")
        later = planted()  # after its start: only a periodic sweep removes it
        wait_for(lambda: not later.exists(), 30, "a later sweep")
        assert held.exists()
    finally:
        os.close(fd)


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 4 MB tmpfs of the test's own (mounting needs root; elsewhere the test is skipped, saying so)."""
    folder = tmp_path / "small-disk"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode:
        pytest.skip(f"needs root to mount a small tmpfs: {mounted.stderr.decode().strip()}")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_full_checkpoint_disk_pauses_its_worker_and_the_job_runs_elsewhere(client, workers, small_disk, redis):
    """Case 4: a worker whose CHECKPOINT_DIR is full. The job's reason names the cause and the folder, the job keeps
    its attempts (re-queued), the worker takes no more jobs and says why (/api/health), and resumes once space
    returns; a healthy worker runs what the full one refused."""
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (2 * 2**20 + 2**19))  # 1.5 MB left: less than one checkpoint (about 2.4 MB)
    full = workers(CHECKPOINT_DIR=str(small_disk / "checkpoints"), STORAGE_MIN_FREE_MB="1",
                   STORAGE_CHECK_INTERVAL="0.5")
    big = {"dataset": "digits", "epochs": 3, "hidden_sizes": [512, 512], "batch_size": 64, "checkpoint_every": 1}
    first = submit(client, big, max_attempts=2)
    job = wait_for(lambda: (j := row(first)).attempts == 2 and j, 120, "the job to leave the full worker")
    folder = small_disk / "checkpoints" / first
    assert job.status_reason.startswith(f"disk full: no space left on device writing checkpoint to {folder}; "
                                        "re-queued to run elsewhere (attempt 2 of 2"), job.status_reason
    paused = wait_for(lambda: client.get("/api/health").get_json()["workers_paused"], 30, "the worker to say why")
    assert paused[full.name].startswith("disk full: no space left on device writing checkpoint to"), paused
    listed = {h["name"]: h["paused"] for h in client.get("/api/hosts").get_json()["hosts"]}
    assert listed[full.name] == {full.name: paused[full.name]}  # its host's entry says it too
    second = submit(client, big)
    deadline = time.monotonic() + 3  # several of the full worker's checks: it takes neither job meanwhile
    while time.monotonic() < deadline:
        assert row(first).status == "queued" and row(second).status == "queued"
        time.sleep(0.25)
    workers()  # a healthy worker (the session's own folders) runs both
    for job_id in (first, second):
        wait_status(job_id, "completed", timeout=180)
    assert [e[1] for e in assert_events_chain(first)] == ["queued", "running", "queued", "running", "completed"]
    filler.unlink()  # space returns
    wait_for(lambda: not client.get("/api/health").get_json()["workers_paused"], 30, "the worker to resume")
    assert all(h["paused"] == {} for h in client.get("/api/hosts").get_json()["hosts"])
    assert "storage writable again; taking jobs" in full.log()
