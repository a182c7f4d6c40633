"""End to end: the API in process, real RQ worker processes, real Redis and PostgreSQL."""

from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path

import psutil
import pytest
from rq.command import send_stop_job_command

from api.queue import fetch
from api.service.reconcile import run_pass
from api.worker.scratch import workdir_prefix
from tests.support import (
    LONG,
    SHORT,
    assert_events_chain,
    events,
    process_gone,
    row,
    submit,
    wait_for,
    wait_status,
    wait_training,
)


def test_submit_trains_to_completion(client, workers, settings):
    workers()
    response = client.post("/api/training", json={"name": "digits-3", "task": "mlp", "params": SHORT})
    assert response.status_code == 201
    job_id = response.get_json()["job"]["id"]
    assert response.headers["Location"].endswith(f"/api/training/{job_id}")

    job = wait_status(job_id, "completed")
    assert job.epoch == 3 and job.metrics["val_accuracy"] > 0.5 and job.metrics[job.metric] is not None
    assert (job.metric, job.metric_mode, job.total_epochs) == ("val_loss", "min", 3)  # as the task declared
    assert job.worker_name and job.worker_pid and job.hostname and job.started_at and job.finished_at
    assert job.attempts == 1 and job.rq_job_id == job_id
    epochs = [h for h in job.history if "epoch" in h]  # the monitor's curves: every epoch, sampled steps
    assert [h["epoch"] for h in epochs] == [1, 2, 3] and all("step" in h for h in job.history)
    assert job.history[-1]["val_accuracy"] == job.metrics["val_accuracy"]
    trained = sum(h["epoch_seconds"] for h in epochs)  # stamped when it ended (a horse left in a transaction
    assert (job.finished_at - job.started_at).total_seconds() >= trained > 0  # stamped its start's time)
    assert job.checkpoint_path and os.path.exists(job.checkpoint_path)
    kept = ["ckpt-000001-e1-s23.pt", "ckpt-000002-e2-s46.pt", "ckpt-000003-e3-s69.pt"]  # 23 batches of 64 an epoch
    folder = os.path.join(settings["CHECKPOINT_DIR"], job_id)  # the attempt's outcome file goes once its end landed
    wait_for(lambda: sorted(os.listdir(folder)) == kept, 30, f"only the checkpoints left in {folder}")
    assert events(job_id) == [(None, "queued", "api"), ("queued", "running", "worker"),
                              ("running", "completed", "worker")]
    body = client.get(f"/api/training/{job_id}").get_json()
    assert body["status"] == "completed" and body["metrics"]["val_accuracy"] == job.metrics["val_accuracy"]
    log = [line["line"] for line in client.get(f"/api/training/{job_id}/logs").get_json()["lines"]]
    assert any(f"job {job_id}: running (attempt 1" in line for line in log), log
    assert any(f"job {job_id}: epoch 3/3: train_loss" in line for line in log), log
    assert any(f"job {job_id}: finished in" in line for line in log), log
    scrape = client.get("/metrics").get_data(as_text=True)  # written by the horse, counted by the API
    assert 'trainq_transitions_total{actor="worker",from_status="running",to_status="completed"} 1.0' in scrape
    assert "trainq_workers_live 1.0" in scrape


def test_cancel_queued_job(client, redis, placeholder_host):
    job_id = submit(client, SHORT)  # placed on a host whose worker never takes it: it stays queued, in RQ
    response = client.delete(f"/api/training/{job_id}")
    body = response.get_json()
    assert response.status_code == 200, body
    assert body["success"] is True and body["rq_cancelled"] is True
    assert body["message"] == f"Job {job_id} cancelled successfully"
    assert body["job"]["status"] == "cancelled"
    assert fetch(job_id, redis).get_status() == "canceled"
    assert events(job_id)[-1] == ("queued", "cancelled", "api")
    # Idempotent.
    again = client.delete(f"/api/training/{job_id}")
    assert again.status_code == 200 and again.get_json()["rq_cancelled"] is False


def test_cancel_running_job_kills_horse_and_its_children(client, workers, redis):
    worker = workers()
    job_id = submit(client, {**LONG, "num_workers": 2})
    job = wait_training(job_id)
    horse = psutil.Process(job.worker_pid)
    children = wait_for(lambda: horse.children(recursive=True), 30, "DataLoader worker processes")
    pids = [horse.pid] + [c.pid for c in children]

    response = client.delete(f"/api/training/{job_id}")
    body = response.get_json()
    assert response.status_code == 200, body
    assert body["rq_cancelled"] is True and body["job"]["status"] == "cancelled"
    assert body["cleanup"]["checked"] >= 0
    wait_for(lambda: all(process_gone(p) for p in pids), 1.0, f"horse and children {pids} to be gone")

    assert row(job_id).status == "cancelled"
    assert events(job_id)[-1] == ("running", "cancelled", "api")
    assert fetch(job_id, redis).get_status() == "stopped"
    assert worker.process.poll() is None  # the worker itself lives on for the next job
    assert_events_chain(job_id)


def test_stop_in_rq_directly_is_mapped_to_cancelled(client, workers, redis, ctx):
    workers()
    job_id = submit(client, LONG)
    job = wait_training(job_id)
    live = client.get(f"/api/training/{job_id}/logs").get_json()["lines"]  # a running job's log, as it comes
    assert any("running (attempt 1" in line["line"] for line in live), live
    send_stop_job_command(redis, job_id)  # what rq-dashboard's stop does
    wait_for(lambda: fetch(job_id, redis).get_status() == "stopped", 10, "RQ to stop the job")
    wait_for(lambda: process_gone(job.worker_pid), 5, "horse to die")
    assert row(job_id).status == "running"  # nobody told the database yet

    report = run_pass()
    assert report.actions["cancelled"] == [job_id]
    job = row(job_id)
    assert job.status == "cancelled" and job.status_reason == "cancelled in RQ (e.g. from rq-dashboard)"
    assert events(job_id)[-1] == ("running", "cancelled", "dashboard-sync")


def test_sigkilled_worker_is_marked_worker_lost(client, workers, ctx):
    worker = workers()
    job_id = submit(client, LONG)
    job = wait_training(job_id)
    os.kill(worker.pid, signal.SIGKILL)
    worker.process.wait(10)
    wait_for(lambda: process_gone(job.worker_pid), 5, "the horse to die with its worker")

    # PostgreSQL frees the horse's liveness lock a moment after the process is gone
    report = wait_for(lambda: (r := run_pass()).actions and r, 5, "the pass to act")
    assert report.actions["worker_lost"] == [job_id]
    job = row(job_id)
    assert job.status == "failed" and job.status_reason == "worker lost"
    assert events(job_id)[-1] == ("running", "failed", "reconciler")


def test_sigkilled_horse_is_mapped_from_rq_failure(client, workers, ctx):
    workers()
    job_id = submit(client, LONG)
    job = wait_training(job_id)
    workdirs = list(Path(tempfile.gettempdir()).glob(workdir_prefix(job_id, 1) + "*"))
    assert len(workdirs) == 1 and workdirs[0].is_dir()  # the attempt's ctx.workdir
    os.kill(job.worker_pid, signal.SIGKILL)
    wait_for(lambda: fetch(job_id, ctx.extensions["redis"]).get_status() == "failed", 10,
             "RQ to mark the job failed")
    wait_for(lambda: not workdirs[0].exists(), 10, "the worker to remove the killed horse's scratch folder")
    report = run_pass()
    assert report.actions["worker_lost"] == [job_id]  # no checkpoint, no attempts left: failed
    job = row(job_id)
    assert job.status == "failed" and job.status_reason.startswith("RQ job failed: ")
    assert "Work-horse terminated unexpectedly" in job.status_reason


@pytest.mark.parametrize("cancel_at_step", [1, 60, 120, 170, 178, 10_000])
def test_cancel_racing_completion_ends_consistent(client, workers, cancel_at_step):
    """Cancel as the job nears its end: exactly one terminal status, and the API says which."""
    workers()
    job_id = submit(client, {**SHORT, "epochs": 2, "batch_size": 16, "checkpoint_every": 0})  # 180 steps
    wait_for(lambda: (j := row(job_id)).status == "completed" or j.step >= cancel_at_step, 60,
             f"the job to reach step {cancel_at_step} or finish")
    response = client.delete(f"/api/training/{job_id}")
    final = row(job_id)
    if response.status_code == 200:
        assert final.status == "cancelled"
    else:
        assert response.status_code == 409, response.get_json()
        assert final.status == "completed"
        assert "already completed" in response.get_json()["error"]["message"]
    # It stays that way: a late write from the horse cannot change a terminal status.
    wait_for(lambda: fetch(job_id, client.application.extensions["redis"]).get_status()
             in ("finished", "stopped"), 10, "RQ to settle")
    assert row(job_id).status == final.status
    assert_events_chain(job_id)


def test_cancel_a_job_waiting_to_be_placed(client, redis):
    job_id = submit(client, SHORT)  # no host at all: it waits unplaced, and nothing of it is in RQ
    assert client.get(f"/api/training/{job_id}").get_json()["status_reason"] == \
        "waiting for a host offering task mlp"
    body = client.delete(f"/api/training/{job_id}").get_json()
    assert body["job"]["status"] == "cancelled" and body["rq_cancelled"] is False
    assert events(job_id)[-1] == ("queued", "cancelled", "api")

