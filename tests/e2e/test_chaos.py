"""Faults on real processes and servers: each test kills or restarts something, then asserts with a deadline
that no row is stuck, nothing ran twice at once, and the events explain every transition."""

from __future__ import annotations

import os
import signal
import threading
import time
from datetime import timedelta

import psutil
import pytest
from sqlalchemy import text

from api import queue
from api.queue import fetch
from api.record.locks import RECONCILER_KEY, Namespace
from api.record.status import Actor, JobStatus, utcnow
from api.record.status_writer import transition
from api.service import users
from api.service.reconcile import run_pass
from api.stores import db
from builtin_tasks import TrainingConfig, train
from tests.support import (
    LONG,
    TERMINAL,
    Link,
    assert_events_chain,
    events,
    lose,
    process_gone,
    relayed,
    row,
    start_flask,
    submit,
    wait_for,
    wait_status,
    wait_training,
)

# Defaults as shipped: a dead job must leave `running` within HEARTBEAT_TIMEOUT + RECONCILE_INTERVAL.
DETECTION_DEADLINE = 10.0 + 2.0 + 2.0  # threshold + one reconciler period + scheduling slack
CHECKPOINTED = {"dataset": "digits", "epochs": 60, "hidden_sizes": [32], "batch_size": 16, "checkpoint_every": 1,
                "seed": 5}


def test_sigkill_worker_parent_kills_its_horse_and_the_row_leaves_running(client, workers, reconcilers):
    reconcilers()
    worker = workers()
    job_id = submit(client, {**LONG, "num_workers": 1})
    job = wait_training(job_id)
    horse = psutil.Process(job.worker_pid)
    family = [horse.pid] + [c.pid for c in wait_for(lambda: horse.children(recursive=True), 30, "loader workers")]

    names = {p: psutil.Process(p).name() for p in family}  # a survivor is named in the failure: horse or loader
    os.kill(worker.pid, signal.SIGKILL)
    killed = time.monotonic()
    try:
        wait_for(lambda: all(process_gone(p) for p in family), 2.0, "the horse and its children to die with the worker")
    except TimeoutError as late:
        alive = [(p, names[p], psutil.Process(p).ppid()) for p in family if not process_gone(p)]
        raise AssertionError(f"alive 2 s after the worker's SIGKILL (pid, name, parent; horse {horse.pid}): "
                             f"{alive}") from late
    job = wait_for(lambda: (j := row(job_id)).status != "running" and j, DETECTION_DEADLINE, "the row to leave running")
    assert job.status == "failed" and job.status_reason == "worker lost", job.status_reason
    assert time.monotonic() - killed < DETECTION_DEADLINE
    assert events(job_id)[-1] == ("running", "failed", "reconciler")
    assert_events_chain(job_id)


def test_sigkill_worker_on_another_host_is_found_by_heartbeat(client, workers, reconcilers, redis):
    """No pid shortcut: the worker's RQ record names another host, so only its heartbeat key can tell."""
    reconcilers()
    worker = workers()
    job_id = submit(client, LONG)
    job = wait_training(job_id)
    redis.hset(f"rq:worker:{worker.name}", "hostname", "some-other-host")
    os.kill(worker.pid, signal.SIGKILL)
    os.kill(job.worker_pid, signal.SIGKILL)  # worker and horse together, as a machine dying would
    killed = time.monotonic()
    job = wait_for(lambda: (j := row(job_id)).status != "running" and j, DETECTION_DEADLINE, "the row to leave running")
    assert job.status == "failed" and job.status_reason.startswith("worker lost"), job.status_reason
    assert time.monotonic() - killed < DETECTION_DEADLINE
    assert_events_chain(job_id)


def test_sigkill_horse_only_retries_from_checkpoint_and_matches_an_unbroken_run(client, workers, reconcilers):
    reconcilers()
    worker = workers()
    job_id = submit(client, CHECKPOINTED, max_attempts=2)
    job = wait_for(lambda: (j := row(job_id)).status == "running" and j.checkpoint_path and j.epoch >= 3 and j,
                   60, "a checkpoint")
    os.kill(job.worker_pid, signal.SIGKILL)

    job = wait_status(job_id, "completed", timeout=120)
    assert job.attempts == 2 and job.resume_from and job.epoch == 60
    assert worker.process.poll() is None  # the worker survived its horse and ran the retry
    evs = assert_events_chain(job_id)
    assert ("running", "queued", "reconciler") in evs
    assert [e for e in evs if e[1] == "running"] == [("queued", "running", "worker")] * 2
    expected = train(TrainingConfig.model_validate(CHECKPOINTED)).metrics
    assert job.metrics["val_accuracy"] == pytest.approx(expected["val_accuracy"], abs=1e-6)
    assert job.metrics["val_loss"] == pytest.approx(expected["val_loss"], rel=1e-4)


def test_redis_restarted_empty_loses_no_job(client, workers, reconcilers, redis_server):
    reconcilers()
    workers()
    running = submit(client, LONG, name="running")
    wait_training(running)
    queued = submit(client, {**CHECKPOINTED, "epochs": 3}, name="queued")  # waits behind the running one

    redis_server.stop()
    redis_server.start()  # same port, empty: no persistence (the session fixture stops this one at the end)
    # The running attempt still beats, so it is left alone; let the reconciler see Redis empty meanwhile.
    time.sleep(0.1)
    wait_for(lambda: row(running).heartbeat_at and (utcnow() - row(running).heartbeat_at).total_seconds() < 3, 10,
             "the running job to keep beating")
    assert row(running).status == "running"

    response = client.delete(f"/api/training/{running}")  # RQ no longer knows it: the row's refusal stops it
    assert response.status_code == 200 and response.get_json()["rq_cancelled"] is False
    horse = row(running).worker_pid
    wait_for(lambda: process_gone(horse), 10, "the running horse to stop itself")

    job = wait_status(queued, "completed", timeout=90)
    assert job.attempts == 1
    assert [e for e in events(queued) if e[1] == "running"] == [("queued", "running", "worker")]
    for job_id in (running, queued):
        assert_events_chain(job_id)


def test_postgres_restarted_mid_job_keeps_the_final_status(client, workers, postgres_server):
    workers()
    job_id = submit(client, {**CHECKPOINTED, "epochs": 40})
    wait_training(job_id)
    postgres_server.stop()
    try:
        down = client.get(f"/api/training/{job_id}")
        assert down.status_code == 503 and down.get_json()["error"]["code"] == "database_unavailable"
        time.sleep(1.0)  # keep it down across several progress writes
    finally:
        postgres_server.start()
    db.session.remove()
    job = wait_status(job_id, "completed", timeout=120)
    assert job.epoch == 40 and job.metrics["val_accuracy"] > 0.8
    assert_events_chain(job_id)


def test_two_reconcilers_one_active_each_orphan_fixed_once(client, reconcilers, redis):
    ids = []
    for _ in range(5):
        job_id = submit(client, {"epochs": 1})
        transition(job_id, JobStatus.RUNNING, reason="test", actor=Actor.WORKER)
        db.session.execute(text("UPDATE training_jobs SET heartbeat_at = now() - interval '1 hour' WHERE id = :i"),
                           {"i": job_id})
        db.session.commit()
        lose(redis, job_id)
        ids.append(job_id)
    first, second = reconcilers(), reconcilers()
    for job_id in ids:
        wait_status(job_id, "failed", timeout=30)

    # Only the reconciler's own lock: the active one also takes others for moments (a scheduling pass's).
    holders = db.session.execute(text(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2"
        " AND classid::bigint = :ns AND objid::bigint = :key"),
        {"ns": int(Namespace.RECONCILER), "key": RECONCILER_KEY}).scalar()
    db.session.commit()
    assert holders == 1 and first.process.poll() is None and second.process.poll() is None
    for job_id in ids:
        assert [e for e in events(job_id) if e[1] == "failed"] == [("running", "failed", "reconciler")]


def test_force_start_twice_concurrently_makes_one_run(app, client, workers):
    job_id = submit(client, {**CHECKPOINTED, "epochs": 2})
    assert client.delete(f"/api/training/{job_id}").status_code == 200  # cancelled while queued
    barrier, answers = threading.Barrier(2), []

    def force_start() -> None:
        with app.app_context():
            barrier.wait()
            answers.append(app.test_client().post(f"/api/training/{job_id}/force-start").get_json())
            db.session.remove()

    threads = [threading.Thread(target=force_start) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert all(a.get("success") for a in answers), answers
    assert sorted(a["previous_status"] for a in answers) == ["cancelled", "queued"]
    assert all(a["new_status"] == "queued" for a in answers)
    workers()
    job = wait_status(job_id, "completed")
    assert job.attempts == 2
    assert [e for e in events(job_id) if e[1] == "running"] == [("queued", "running", "worker")]
    assert_events_chain(job_id)


def test_pause_then_resume_continues_from_the_checkpoint(client, workers):
    workers()
    config = {**CHECKPOINTED, "epochs": 50, "checkpoint_every": 0}
    job_id = submit(client, config)
    wait_for(lambda: row(job_id).step >= 100, 60, "some training")
    response = client.post(f"/api/training/{job_id}/pause")
    assert response.status_code == 202, response.get_json()
    paused = wait_status(job_id, "paused", timeout=30)
    assert paused.resume_from and os.path.exists(paused.resume_from) and paused.step >= 100
    [ckpt] = client.get(f"/api/training/{job_id}/checkpoints").get_json()["checkpoints"]
    assert ckpt["resume_point"] and ckpt["path"] == paused.resume_from

    response = client.post(f"/api/training/{job_id}/resume")
    body = response.get_json()
    assert response.status_code == 200, body
    assert (body["previous_status"], body["new_status"]) == ("paused", "queued")
    resumed_step = wait_for(lambda: (j := row(job_id)).attempts == 2 and j.status == "running" and j.step, 60,
                            "the second attempt to train")
    assert resumed_step >= paused.step  # continued, not from zero
    job = wait_status(job_id, "completed", timeout=120)
    expected = train(TrainingConfig.model_validate(config)).metrics
    assert job.metrics["val_loss"] == pytest.approx(expected["val_loss"], rel=1e-4)
    # across both attempts, each epoch once
    assert [h["epoch"] for h in job.history if "epoch" in h] == list(range(1, 51))
    evs = assert_events_chain(job_id)
    assert ("running", "paused", "worker") in evs and ("paused", "queued", "api") in evs
    # the worker wrote the pause, for the user who asked for it
    [pause] = [e for e in client.get(f"/api/training/{job_id}/events").get_json()["events"]
               if e["to_status"] == "paused"]
    assert pause["actor"] == "worker" and pause["user"] == users.first_admin().name


def test_a_step_slower_than_the_threshold_is_not_lost(client, workers, reconcilers):
    """A data-loading stall (the loader worker frozen) makes one step take 3x the threshold; the heartbeat
    comes from a thread, so the job stays running and is not stale."""
    fast = {"HEARTBEAT_TIMEOUT": "2", "HEARTBEAT_INTERVAL": "0.2", "RECONCILE_INTERVAL": "0.5",
            "WORKER_HEARTBEAT_TTL": "2"}
    reconcilers(**fast)
    workers(**fast)
    job_id = submit(client, {**LONG, "batch_size": 1, "num_workers": 1})
    job = wait_training(job_id)
    loaders = wait_for(lambda: psutil.Process(job.worker_pid).children(), 30, "the loader worker")
    for p in loaders:
        p.send_signal(signal.SIGSTOP)
    try:
        steps: list[int] = []  # the row catches up with the last reported step (PROGRESS_INTERVAL), then stays

        def settled() -> bool:
            steps.append(row(job_id).step)
            return len(steps) > 1 and steps[-1] == steps[-2]

        wait_for(settled, 10, "the row's step to settle", interval=0.5)
        stalled_at = steps[-1]
        deadline = time.monotonic() + 6.0  # three thresholds, while the reconciler runs every 0.5 s
        while time.monotonic() < deadline:
            job = row(job_id)
            assert job.status == "running", job.status_reason
            time.sleep(0.2)
        assert row(job_id).step <= stalled_at + 2  # it really stalled (a batch or two were prefetched)
    finally:
        for p in loaders:
            p.send_signal(signal.SIGCONT)
    body = client.get(f"/api/training/{job_id}").get_json()
    assert body["status"] == "running" and body["heartbeat_age_seconds"] < 2
    wait_for(lambda: row(job_id).step > stalled_at + 5, 30, "training to go on")
    assert client.delete(f"/api/training/{job_id}").status_code == 200
    assert events(job_id)[-1][1] in TERMINAL


def test_rq_registry_cleanup_of_a_dead_attempt_cannot_fail_the_retry(client, workers, reconcilers, redis):
    """RQ marks a job id failed when a dead execution's started entry expires (~810 s by default); a retry
    under the same id must not inherit that."""
    from rq.registry import StartedJobRegistry

    worker = workers()
    job_id = submit(client, {**LONG, "checkpoint_every": 1}, max_attempts=2)
    job = wait_for(lambda: (j := row(job_id)).checkpoint_path and j, 60, "a checkpoint")
    registry = StartedJobRegistry(fetch(job_id, redis).origin, connection=redis)  # its host's queue
    [dead_execution] = redis.zrange(registry.key, 0, -1)
    os.kill(worker.pid, signal.SIGKILL)
    wait_for(lambda: process_gone(job.worker_pid), 5, "the horse to die")
    reconcilers()
    workers()
    wait_for(lambda: (j := row(job_id)).attempts == 2 and j.status == "running" and j.step > j.epoch, 60,
             "the retry to train")
    redis.zadd(registry.key, {dead_execution: 1}, xx=True)  # if still registered, its lease has now run out
    registry.cleanup()  # what RQ's maintenance does
    report = run_pass()
    assert report.actions == {} and row(job_id).status == "running" and row(job_id).attempts == 2
    assert client.delete(f"/api/training/{job_id}").status_code == 200


def test_final_status_missed_by_postgres_is_recorded_from_rq(client, workers, postgres_server, redis):

    workers(DB_RETRY_SECONDS="1")
    job_id = submit(client, {**CHECKPOINTED, "epochs": 40, "checkpoint_every": 0})
    wait_for(lambda: row(job_id).epoch >= 3, 60, "a few epochs")
    postgres_server.stop()  # down until the job has ended: the worker's final write gives up
    try:
        wait_for(lambda: fetch(job_id, redis).get_status() == "finished", 60,
                 "RQ to record the finished job")
    finally:
        postgres_server.start()
    assert row(job_id).status == "running"  # the record missed the end...
    report = run_pass()
    assert report.actions["completed"] == [job_id]  # ...and the reconciler restores it from RQ's result
    job = row(job_id)
    assert job.status == "completed" and job.epoch == 40 and job.metrics["val_accuracy"] > 0.8
    assert_events_chain(job_id)


def test_a_worker_retrying_its_final_write_is_not_taken_for_lost(client, settings, workers, redis, postgres_server):
    """Redis flushed while the job ran, and PostgreSQL unreachable from the worker when the job finished, for
    longer than the heartbeat timeout: the worker is alive and retrying its final write, so a reconcile pass
    (which reaches PostgreSQL) leaves the job alone, and the row ends completed with its final metrics."""
    link = Link("127.0.0.1", postgres_server.port)  # the worker reaches PostgreSQL only through this
    try:
        worker = workers(DATABASE_URL=relayed(settings["DATABASE_URL"], link), HEARTBEAT_TIMEOUT="2",
                         DB_RETRY_SECONDS="300")
        job_id = submit(client, {**CHECKPOINTED, "epochs": 25, "checkpoint_every": 0})
        wait_for(lambda: row(job_id).epoch >= 2, 60, "a few epochs")
        redis.flushall()  # Redis loses the RQ job (and everything else) while it runs
        link.down()
        wait_for(lambda: "mark completed: database unavailable" in worker.log(), 120,
                 "the task to finish and its final write to wait for PostgreSQL")
        beat_key = queue.job_heartbeat_key(queue.rq_job_id_for(job_id, 1))
        deadline = time.monotonic() + 3 * 2  # three heartbeat timeouts: the key outlives its TTL only if renewed
        while time.monotonic() < deadline:
            assert redis.exists(beat_key), "the attempt stopped beating while it still had a result to record"
            time.sleep(0.2)
        assert not redis.exists(f"rq:job:{queue.rq_job_id_for(job_id, 1)}") and row(job_id).status == "running"
        report = run_pass(now=utcnow() + timedelta(minutes=5))  # the row's beat is stale
        assert not any(job_id in ids for ids in report.actions.values()), report.actions
        link.up()
        job = wait_status(job_id, "completed", timeout=60)
    finally:
        link.down()
    assert job.epoch == 25 and job.metrics["val_accuracy"] > 0.8
    assert [e[1] for e in assert_events_chain(job_id)] == ["queued", "running", "completed"]


def test_a_named_worker_restarted_after_sigkill_starts_at_once(client, settings, workers, redis, tmp_path):
    """As under systemd: the same --name again after a SIGKILL. RQ would refuse the name for minutes (its dead
    registration has no death recorded); the worker clears it once its heartbeat is gone, and runs jobs."""
    name = f"fixed-{tmp_path.name[:20]}"
    first = workers(name)
    os.kill(first.process.pid, signal.SIGKILL)
    first.process.wait(10)
    assert redis.exists(f"rq:worker:{name}") and not redis.hexists(f"rq:worker:{name}", "death")
    started = time.monotonic()
    again = start_flask(settings, f"{name}-again", tmp_path, "worker", "--name", name)
    try:
        wait_for(lambda: again.process.poll() is None and redis.hget(f"rq:worker:{name}", "pid")
                 == str(again.process.pid).encode(), 60, "the restarted worker to register under its name")
        assert time.monotonic() - started < 30, "it waited for RQ's stale registration to expire"
        assert "its registration is cleared" in again.log() and "ValueError" not in again.log()
        job_id = submit(client, {**CHECKPOINTED, "epochs": 2})
        assert wait_status(job_id, "completed", timeout=60).worker_name == name
    finally:
        again.kill()


def test_a_second_worker_with_a_live_workers_name_is_refused(settings, workers, tmp_path):
    name = f"taken-{tmp_path.name[:20]}"
    live = workers(name)
    second = start_flask(settings, f"{name}-second", tmp_path, "worker", "--name", name)
    try:
        assert second.process.wait(60) == 1
    finally:
        second.kill()
    assert f"a live worker named {name!r} is running" in second.log() and "Traceback" not in second.log()
    assert live.process.poll() is None


@pytest.mark.parametrize("kill", ["horse", "worker", "group"])
def test_a_killed_attempt_leaves_running_within_2_seconds(client, workers, reconcilers, kill):
    """Its database session ends with its process, and the reconciler reads that between passes: no waiting
    out a heartbeat's TTL (the defaults as shipped: HEARTBEAT_TIMEOUT 10 s)."""
    reconcilers()
    worker = workers()
    job_id = submit(client, LONG)
    job = wait_training(job_id)
    victims = {"horse": [job.worker_pid], "worker": [worker.pid], "group": [worker.pid, job.worker_pid]}[kill]
    killed = time.monotonic()
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    job = wait_for(lambda: (j := row(job_id)).status != "running" and j, 2.0, "the row to leave running")
    took = time.monotonic() - killed
    # the attempt's session ended, or RQ noticed its horse die first
    assert job.status == "failed" and job.status_reason.startswith(
        ("worker lost", "RQ job failed: Work-horse terminated unexpectedly")), job.status_reason
    assert took < 2.0
    assert events(job_id)[-1][1:] == ("failed", "reconciler")


def test_a_stopped_worker_and_horse_are_not_lost_while_their_session_lives(client, workers, reconcilers):
    """SIGSTOP the worker and its horse for four heartbeat timeouts: every heartbeat lapses, but the attempt's
    database session stays open, so the job stays running; continued, it trains on."""
    fast = {"HEARTBEAT_TIMEOUT": "2", "HEARTBEAT_INTERVAL": "0.2", "RECONCILE_INTERVAL": "0.5",
            "WORKER_HEARTBEAT_TTL": "2"}
    reconcilers(**fast)
    worker = workers(**fast)
    job_id = submit(client, LONG)
    job = wait_training(job_id)
    frozen = [worker.pid, job.worker_pid]
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 8.0
        while time.monotonic() < deadline:  # watched throughout, not only at the end
            assert row(job_id).status == "running", row(job_id).status_reason
            time.sleep(0.2)
        stalled_at = row(job_id).step
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
    wait_for(lambda: row(job_id).step > stalled_at + 5, 30, "training to go on")
    assert row(job_id).status == "running"
    assert client.delete(f"/api/training/{job_id}").status_code == 200
    assert [e[1] for e in events(job_id)] == ["queued", "running", "cancelled"]
