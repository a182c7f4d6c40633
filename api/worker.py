"""The RQ side: the job function that trains one row, and the worker class that runs it safely.

Every write from here carries the attempt number, so a late write from a killed or superseded
attempt is refused. A refused progress write also tells the trainer to stop: a job cancelled in the
database stops training even if RQ's stop command never arrives.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

from flask import current_app
from rq.worker import Worker
from sqlalchemy import update

from api.extensions import db
from api.models import TrainingJob
from api.status import Actor, JobStatus, transition, utcnow

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Linux: have the kernel send ``sig`` to this process when its parent dies."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, sig)
    except (OSError, AttributeError):  # not Linux: the reconciler's heartbeat rules still apply
        pass


class TrainingWorker(Worker):
    """RQ's forking worker, plus what a horse needs before it touches anything shared."""

    def main_work_horse(self, job: Any, queue: Any) -> None:
        die_with_parent()
        if os.getppid() == 1:  # the worker died between fork and prctl
            os._exit(1)
        # Pooled connections must not cross a fork: forget the parent's pool without closing it.
        db.engine.dispose(close=False)
        super().main_work_horse(job, queue)


class JobLogger(logging.LoggerAdapter):
    def process(self, msg: str, kwargs: Any) -> tuple[str, Any]:
        return f"job {self.extra['job_id']}: {msg}", kwargs


class ProgressWriter:
    """Throttles progress writes to one per ``interval`` and remembers whether the row refused one."""

    def __init__(self, job_id: str, attempt: int, interval: float) -> None:
        self.job_id, self.attempt, self.interval = uuid.UUID(job_id), attempt, interval
        self._last = 0.0
        self.refused = False

    def __call__(self, progress: Any) -> None:
        now = time.monotonic()
        if not progress.epoch_end and now - self._last < self.interval:
            return
        self._last = now
        values: dict[str, Any] = {
            "epoch": progress.epoch,
            "step": progress.step,
            "total_steps": progress.total_steps,
            "loss": progress.loss,
            "metrics": progress.metrics or None,
            "heartbeat_at": utcnow(),
            "updated_at": utcnow(),
        }
        if progress.checkpoint_path:
            values["checkpoint_path"] = progress.checkpoint_path
        written = db.session.execute(
            update(TrainingJob)
            .where(
                TrainingJob.id == self.job_id,
                TrainingJob.status == JobStatus.RUNNING,
                TrainingJob.attempts == self.attempt,
            )
            .values(**values)
        ).rowcount
        db.session.commit()
        if not written:
            self.refused = True

    def should_stop(self) -> bool:
        return self.refused


def run_training_job(job_id: str, attempt: int) -> dict[str, Any]:
    """RQ job function: queued -> running -> completed | failed, every write guarded by ``attempt``."""
    from training import TrainingConfig, train

    jlog = JobLogger(log, {"job_id": job_id})
    started = transition(
        job_id,
        JobStatus.RUNNING,
        reason=f"started by worker {os.environ.get('RQ_WORKER_ID', '?')}",
        actor=Actor.WORKER,
        expected_from=[JobStatus.QUEUED],
        attempt=attempt,
        fields={
            "worker_name": os.environ.get("RQ_WORKER_ID"),
            "worker_pid": os.getpid(),
            "hostname": socket.gethostname(),
            "heartbeat_at": utcnow(),
        },
    )
    if not started.changed:
        jlog.warning("not started: row is %s on attempt %s (this is attempt %s)",
                     started.job.status, started.job.attempts, attempt)
        return {"skipped": True, "status": started.job.status}

    jlog.info("running (attempt %s, pid %s)", attempt, os.getpid())
    config = TrainingConfig.from_dict(started.job.config)
    writer = ProgressWriter(job_id, attempt, current_app.config["PROGRESS_INTERVAL"])
    checkpoint_dir = Path(current_app.config["CHECKPOINT_DIR"]) / job_id
    try:
        result = train(config, on_progress=writer, should_stop=writer.should_stop, checkpoint_dir=checkpoint_dir)
    except Exception as exc:
        jlog.exception("training failed")
        message = f"{exc.__class__.__name__}: {exc}"
        transition(
            job_id, JobStatus.FAILED, reason=f"training raised {message}"[:500], actor=Actor.WORKER,
            attempt=attempt, fields={"error_message": traceback.format_exc()[-4000:]},
        )
        raise
    if result.stopped:
        jlog.info("stopped at epoch %s: the row is no longer running on this attempt", result.epochs_completed)
        return {"stopped": True, "epochs_completed": result.epochs_completed}

    done = transition(
        job_id, JobStatus.COMPLETED, reason="training finished", actor=Actor.WORKER, attempt=attempt,
        fields={
            "epoch": result.epochs_completed, "step": result.steps, "metrics": result.metrics,
            "loss": result.metrics.get("train_loss"), "heartbeat_at": utcnow(),
            **({"checkpoint_path": result.checkpoint_path} if result.checkpoint_path else {}),
        },
    )
    jlog.info("finished %s epochs: %s (row %s)", result.epochs_completed, result.metrics, done.job.status)
    return {"epochs_completed": result.epochs_completed, "metrics": result.metrics}
