"""The RQ side: the job function that trains one row, and the worker class that runs it safely.

Every write from here carries the attempt number, so a late write from a killed or superseded
attempt is refused. A refused write also tells the trainer to stop: a job cancelled or failed in the
database stops training even if RQ's stop command never arrives.

Liveness: the worker and each running horse beat from background threads (never from the training
loop, so a slow step never looks dead): a key in Redis whose TTL is the timeout, and, more slowly, the
row's ``heartbeat_at``.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from flask import current_app
from redis import Redis
from redis.exceptions import RedisError
from rq.worker import Worker
from sqlalchemy import text, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError

from api import queue
from api.extensions import db
from api.joblog import JobLogCapture
from api.models import TrainingJob
from api.status import Actor, JobStatus, TransitionResult, transition, utcnow
from training.process import die_with_parent

log = logging.getLogger(__name__)

T = TypeVar("T")


class Beat(threading.Thread):
    """Calls ``beat`` every ``interval`` seconds from a daemon thread until stopped."""

    def __init__(self, name: str, interval: float, beat: Callable[[], None]) -> None:
        super().__init__(name=name, daemon=True)
        self.interval, self._beat, self._stopped = interval, beat, threading.Event()

    def run(self) -> None:
        while True:
            try:
                self._beat()
            except Exception:  # a beat must never kill the thread
                log.exception("%s failed", self.name)
            if self._stopped.wait(self.interval):
                return

    def stop(self) -> None:
        self._stopped.set()
        self.join(5)


class TrainingWorker(Worker):
    """RQ's forking worker, plus a heartbeat key and what a horse needs before it touches anything shared."""

    def __init__(self, *args: Any, heartbeat_redis: Redis, heartbeat_interval: float = 1.0,
                 heartbeat_ttl: float = 4.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Its own client: a lock held by the heartbeat thread at fork time must not be one the horse needs.
        self.heartbeat_redis = heartbeat_redis
        self.heartbeat_interval, self.heartbeat_ttl = heartbeat_interval, heartbeat_ttl

    def work(self, *args: Any, **kwargs: Any) -> bool:
        beat_redis = self.heartbeat_redis
        key, ttl_ms = queue.worker_heartbeat_key(self.name), int(self.heartbeat_ttl * 1000)
        beat = Beat("worker-heartbeat", self.heartbeat_interval, lambda: beat_redis.set(key, os.getpid(), px=ttl_ms))
        beat.start()
        try:
            return super().work(*args, **kwargs)
        finally:
            beat.stop()
            try:
                beat_redis.delete(key)
            except RedisError:
                pass

    def execute_job(self, job: Any, queue_: Any) -> None:
        refused = queue.refusal(job)
        if refused:
            self.log.error("Worker %s: refused RQ job %s, not run: %s", self.name, job.id, refused)
            self.handle_job_failure(job, queue_, exc_string=f"refused by the trainq worker: {refused}")
            return
        super().execute_job(job, queue_)

    def fork_work_horse(self, job: Any, queue_: Any) -> None:
        # Move the parent's objects out of the collector's sight before forking: otherwise every full
        # collection in the horse walks (and, copy-on-write, copies) the whole inherited heap.
        gc.freeze()
        super().fork_work_horse(job, queue_)

    def main_work_horse(self, job: Any, queue_: Any) -> None:
        die_with_parent()
        if os.getppid() == 1:  # the worker died between fork and prctl
            os._exit(1)
        # Pooled connections must not cross a fork: forget the parent's pool without closing it.
        db.engine.dispose(close=False)
        super().main_work_horse(job, queue_)


class JobLogger(logging.LoggerAdapter):
    def process(self, msg: str, kwargs: Any) -> tuple[str, Any]:
        return f"job {self.extra['job_id']}: {msg}", kwargs


def tag_log_lines(job_id: str) -> None:
    """In the horse (one job, one process), every log line, the trainer's and RQ's too, names the job."""
    make_record, prefix = logging.getLogRecordFactory(), f"job {job_id}: "

    def record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        rec = make_record(*args, **kwargs)
        if isinstance(rec.msg, str) and not rec.msg.startswith("job ") and job_id not in rec.msg:
            rec.msg = prefix + rec.msg
        return rec

    logging.setLogRecordFactory(record)


def retry_db(action: Callable[[], T], what: str, seconds: float, jlog: logging.LoggerAdapter) -> T:
    """Run ``action`` until PostgreSQL answers, backing off up to 5 s, for at most ``seconds``."""
    deadline, delay = time.monotonic() + seconds, 0.2
    while True:
        try:
            return action()
        except DBAPIError as exc:
            db.session.rollback()
            if not isinstance(exc, OperationalError | InterfaceError) or time.monotonic() + delay > deadline:
                raise
            jlog.warning("%s: database unavailable (%s); retrying in %.1fs", what, exc.__class__.__name__, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def this_attempts_row(job_id: str | uuid.UUID, attempt: int) -> Any:
    """UPDATE on the row only while it is running on ``attempt``: a refused write means the row moved on."""
    return update(TrainingJob).where(
        TrainingJob.id == uuid.UUID(str(job_id)), TrainingJob.status == JobStatus.RUNNING,
        TrainingJob.attempts == attempt,
    )


class JobHeartbeat:
    """The running attempt's pulse, and its ears: each beat also reads whether a pause was asked for and
    whether the row is still this attempt's (if not, the trainer is told to stop)."""

    def __init__(self, job_id: str, attempt: int, redis: Redis, engine: Engine, interval: float,
                 timeout: float) -> None:
        self.job_id, self.attempt, self.redis, self.engine = job_id, attempt, redis, engine
        self.key = queue.job_heartbeat_key(queue.rq_job_id_for(job_id, attempt))
        self.ttl_ms, self.db_every = int(timeout * 1000), max(interval, timeout / 4)
        self.pause_requested = self.refused = False
        self._last_db = 0.0
        self._thread = Beat(f"job-heartbeat-{job_id}", interval, self.beat)

    def beat(self) -> None:
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.set(self.key, f"{time.time():.3f}", px=self.ttl_ms)
            pipe.get(queue.control_key(self.job_id))
            _, control = pipe.execute()
            self.pause_requested = self.pause_requested or control == b"pause"
        except RedisError:
            pass  # the row's heartbeat below still speaks for us
        if time.monotonic() - self._last_db >= self.db_every:
            try:
                with self.engine.begin() as conn:
                    written = conn.execute(
                        this_attempts_row(self.job_id, self.attempt).values(heartbeat_at=utcnow())
                    ).rowcount
                self._last_db = time.monotonic()
                self.refused = self.refused or not written
            except SQLAlchemyError:
                pass  # PostgreSQL down: Redis still carries the heartbeat

    def __enter__(self) -> JobHeartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.stop()
        try:
            self.redis.delete(self.key)
        except RedisError:
            pass


class ProgressWriter:
    """Throttles progress writes to one per ``interval`` (the final numbers come with the completion);
    remembers whether the row refused one. Finished epochs wait for the next write (``history_fields``
    hands the rest to the final one), so curves cost no extra round trips.
    Progress is best effort: while PostgreSQL is down it is skipped, and training goes on."""

    def __init__(self, job_id: str, attempt: int, interval: float, jlog: logging.LoggerAdapter) -> None:
        self.job_id, self.attempt, self.interval, self.jlog = uuid.UUID(job_id), attempt, interval, jlog
        self._last = 0.0
        self._epochs: list[dict[str, Any]] = []  # finished epochs not yet in the row's history
        self.refused = False

    def __call__(self, progress: Any) -> None:
        if progress.epoch_end:
            self._epochs.append({"epoch": progress.epoch, **progress.metrics})
        now = time.monotonic()
        if not progress.checkpoint_path and now - self._last < self.interval:
            return  # at most one write per interval, but never miss a new checkpoint
        self._last = now
        values: dict[str, Any] = {
            "epoch": progress.epoch,
            "step": progress.step,
            "total_steps": progress.total_steps,
            "loss": progress.loss,
            "metrics": progress.metrics or None,
            "heartbeat_at": utcnow(),
            "updated_at": utcnow(),
            **self.history_fields(),
        }
        if progress.checkpoint_path:
            values["checkpoint_path"] = progress.checkpoint_path
        try:
            written = db.session.execute(this_attempts_row(self.job_id, self.attempt).values(**values)).rowcount
            db.session.commit()
        except DBAPIError as exc:
            db.session.rollback()
            self.jlog.warning("progress not saved, database unavailable (%s)", exc.__class__.__name__)
            return
        self._epochs = []
        if not written:
            self.refused = True

    def history_fields(self) -> dict[str, Any]:
        """The ``history`` column's new value with the epochs not written yet (none: no change). Entries from
        the first of them on are replaced: a resumed attempt trains again from its checkpoint's epoch."""
        if not self._epochs:
            return {}
        return {"history": _HISTORY_WITH.bindparams(history_epoch=self._epochs[0]["epoch"],
                                                     history_entries=json.dumps(self._epochs))}


_HISTORY_WITH = text(
    "COALESCE((SELECT jsonb_agg(e ORDER BY (e->>'epoch')::int) FROM jsonb_array_elements(training_jobs.history) e"
    " WHERE (e->>'epoch')::int < :history_epoch), '[]'::jsonb) || CAST(:history_entries AS jsonb)"
)


def run_training_job(job_id: str, attempt: int) -> dict[str, Any]:
    """RQ job function: queued -> running -> completed | failed | paused, every write guarded by ``attempt``."""
    cfg = current_app.config
    tag_log_lines(job_id)
    jlog = JobLogger(log, {"job_id": job_id})
    worker_name = os.environ.get("RQ_WORKER_ID")

    def write(to: JobStatus, reason: str, **fields: Any) -> TransitionResult:
        return retry_db(
            lambda: transition(job_id, to, reason=reason, actor=Actor.WORKER, attempt=attempt, fields=fields),
            f"mark {to}", cfg["DB_RETRY_SECONDS"], jlog,
        )

    started = retry_db(
        lambda: transition(
            job_id, JobStatus.RUNNING, reason=f"started by worker {worker_name} (attempt {attempt})",
            actor=Actor.WORKER, expected_from=[JobStatus.QUEUED], attempt=attempt,
            fields={"worker_name": worker_name, "worker_pid": os.getpid(), "hostname": socket.gethostname(),
                    "heartbeat_at": utcnow()},
        ),
        "mark running", cfg["DB_RETRY_SECONDS"], jlog,
    )
    if not started.changed:
        jlog.warning("not started: row is %s on attempt %s (this is attempt %s)",
                     started.job.status, started.job.attempts, attempt)
        return {"skipped": True, "status": started.job.status}

    job = started.job
    redis = Redis.from_url(cfg["REDIS_URL"], socket_timeout=cfg["REDIS_TIMEOUT"])
    with JobLogCapture(job_id, attempt, redis, db.engine, cfg["LOG_MAX_LINES"], cfg["RESULT_TTL"]):
        return _train_and_record(job, attempt, redis, jlog, write)


def _train_and_record(job: TrainingJob, attempt: int, redis: Redis, jlog: logging.LoggerAdapter,
                      write: Callable[..., TransitionResult]) -> dict[str, Any]:
    """The part of an attempt whose log lines are captured: train, then record how it ended."""
    from training import TrainingConfig, train

    cfg, job_id = current_app.config, str(job.id)
    resume_from = Path(job.resume_from) if job.resume_from and Path(job.resume_from).exists() else None
    jlog.info("running (attempt %s, pid %s%s)", attempt, os.getpid(),
              f", resuming from {resume_from}" if resume_from else "")
    config = TrainingConfig.from_dict(job.config)
    writer = ProgressWriter(job_id, attempt, cfg["PROGRESS_INTERVAL"], jlog)
    heartbeat = JobHeartbeat(job_id, attempt, redis, db.engine, cfg["HEARTBEAT_INTERVAL"], cfg["HEARTBEAT_TIMEOUT"])
    trained_from = time.perf_counter()
    try:
        with heartbeat:
            result = train(
                config, on_progress=writer, should_stop=lambda: writer.refused or heartbeat.refused,
                should_pause=lambda: heartbeat.pause_requested,
                checkpoint_dir=Path(cfg["CHECKPOINT_DIR"]) / job_id, resume_from=resume_from,
            )
    except Exception as exc:
        jlog.exception("training failed")
        write(JobStatus.FAILED, f"training raised {exc.__class__.__name__}: {exc}"[:500],
              error_message=traceback.format_exc()[-4000:])
        raise
    if result.paused:
        write(JobStatus.PAUSED, f"paused at epoch {result.epochs_completed}, step {result.steps}",
              checkpoint_path=result.checkpoint_path, resume_from=result.checkpoint_path, step=result.steps,
              **writer.history_fields())
        jlog.info("paused; checkpoint %s", result.checkpoint_path)
        return {"paused": True, "checkpoint_path": result.checkpoint_path}
    if result.stopped:
        jlog.info("stopped at epoch %s: the row is no longer running on this attempt", result.epochs_completed)
        return {"stopped": True, "epochs_completed": result.epochs_completed}

    summary = {"epochs_completed": result.epochs_completed, "steps": result.steps, "metrics": result.metrics,
               "checkpoint_path": result.checkpoint_path}
    try:
        done = write(
            JobStatus.COMPLETED, "training finished", epoch=result.epochs_completed, step=result.steps,
            metrics=result.metrics, loss=result.metrics.get("train_loss"), heartbeat_at=utcnow(),
            **writer.history_fields(),
            **({"checkpoint_path": result.checkpoint_path} if result.checkpoint_path else {}),
        )
        jlog.info("finished %s epochs in %.2fs: %s (row %s)", result.epochs_completed,
                  time.perf_counter() - trained_from, result.metrics, done.job.status)
    except DBAPIError:
        # RQ keeps this return value; the reconciler records it when PostgreSQL is back.
        jlog.error("finished, but the database stayed unreachable; the reconciler will record the result")
    return summary
