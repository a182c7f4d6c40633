"""One attempt: the RQ job function that trains one row with its task, and records how it ended.

Every write from here carries the attempt number, so a late write from a killed or superseded
attempt is refused. A refused write also tells the trainer to stop: a job cancelled or failed in the
database stops training even if RQ's stop command never arrives.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import socket
import time
import traceback
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from flask import current_app
from pydantic import ValidationError
from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_before_delay, wait_exponential

import trainq
from api import queue
from api.record import outcome
from api.record.joblog import JobLogCapture
from api.record.status import Actor, JobStatus
from api.record.status_writer import TransitionResult, transition
from api.record.tables import TrainingJob
from api.scheduler.schedule import schedule
from api.stores import db, redis_client, redis_connection
from api.worker import devices, provenance, scratch, storage
from api.worker.disk import DiskLimited
from api.worker.liveness import AttemptLease, JobHeartbeat, TakeoverTimeout
from api.worker.progress import ProgressWriter
from api.worker.pruning import Pruning
from api.worker.trackers import Trackers
from trainq.checkpoints import StorageFull, disk_full_error, newest_checkpoint
from trainq.context import NonFiniteMetric, TaskContext, is_objective, non_finite, resolve_entry

log = logging.getLogger(__name__)

T = TypeVar("T")


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
    """Run ``action`` until PostgreSQL answers (a connection error), backing off from 0.2 s to 5 s, while the next
    try would still start within ``seconds``; any other error at once."""

    def once() -> T:
        try:
            return action()
        except DBAPIError:
            db.session.rollback()
            raise

    def say(state: RetryCallState) -> None:
        jlog.warning("%s: database unavailable (%s); retrying in %.1fs", what,
                     state.outcome.exception().__class__.__name__, state.next_action.sleep)

    return Retrying(retry=retry_if_exception_type((OperationalError, InterfaceError)),
                    stop=stop_before_delay(seconds), wait=wait_exponential(multiplier=0.2, max=5.0),
                    before_sleep=say, reraise=True)(once)


class WorkerSink:
    """The worker's side of a ``TaskContext``: reports and checkpoints go to the ``ProgressWriter``, artifacts
    to ``job_artifacts`` (or wait for the attempt's last write while PostgreSQL is down); stop requests come from
    the heartbeat thread and refused writes."""

    coalesce_seconds = 0.05  # the context hands on step-only reports at most this often (the writer samples them)

    def __init__(self, job: TrainingJob, attempt: int, writer: ProgressWriter, heartbeat: JobHeartbeat,
                 track: Callable[[dict[str, Any]], None] | None = None, pruning: Pruning | None = None) -> None:
        self.job_id, self.attempt, self.writer, self.heartbeat = job.id, attempt, writer, heartbeat
        self.pruning = pruning  # a sweep's trial: its reports go to the trial's pruner too
        self.report = writer.report if pruning is None else self._report_and_offer  # else no frame of its own
        self.track = track  # every report, unsampled, to the trackers (api.worker.trackers)
        self.pending_artifacts: list[dict[str, Any]] = []

    def _report_and_offer(self, entry: dict[str, Any]) -> None:
        self.writer.report(entry)
        self.pruning.offer(entry)

    def progress_total(self, steps: int | None, epochs: int | None) -> None:
        self.writer.totals(steps, epochs)

    def checkpointed(self, path: Path) -> None:
        self.writer.checkpointed(str(path))

    def artifact_saved(self, artifact: dict[str, Any]) -> None:
        """Its row now if PostgreSQL answers, else kept for the attempt's last write (``flush_artifacts``): a
        database outage never becomes the task's failure."""
        try:
            outcome.upsert_artifacts([outcome.artifact_row(self.job_id, self.attempt, artifact)])
        except (OperationalError, InterfaceError) as exc:
            db.session.rollback()
            self.pending_artifacts.append(artifact)
            log.warning("job %s: artifact %s saved; its row waits for PostgreSQL (%s)", self.job_id,
                        artifact["name"], exc.__class__.__name__)

    def flush_artifacts(self) -> None:
        """Write the artifact rows PostgreSQL missed (raises while it is still down; they stay pending)."""
        if self.pending_artifacts:
            try:
                outcome.upsert_artifacts([outcome.artifact_row(self.job_id, self.attempt, artifact)
                                          for artifact in self.pending_artifacts])
            except BaseException:
                db.session.rollback()
                raise
            self.pending_artifacts = []

    def stop_reason(self) -> str | None:
        if self.heartbeat.pause_requested:
            return "pause"
        if self.pruning is not None and self.pruning.verdict is not None:
            return "prune"
        if self.writer.refused or self.heartbeat.refused:
            status = db.session.scalar(select(TrainingJob.status).where(TrainingJob.id == self.job_id))
            db.session.rollback()
            return "cancel" if status == JobStatus.CANCELLED else "superseded"
        return None


def run_training_job(job_id: str, attempt: int) -> dict[str, Any]:
    """RQ job function: queued -> running -> completed | failed | paused, every write guarded by ``attempt``."""
    cfg = current_app.config
    tag_log_lines(job_id)
    jlog = JobLogger(log, {"job_id": job_id})
    worker_name = os.environ.get("RQ_WORKER_ID")

    def write(to: JobStatus, reason: str, user_id: int | None = None, **fields: Any) -> TransitionResult:
        return retry_db(
            lambda: transition(job_id, to, reason=reason, actor=Actor.WORKER, attempt=attempt, fields=fields,
                               user_id=user_id),
            f"mark {to}", cfg["DB_RETRY_SECONDS"], jlog,
        )

    lease = AttemptLease(db.engine, job_id, attempt, cfg["LEASE_RENEW_INTERVAL"], cfg["LEASE_FENCE"],
                         cfg["TAKEOVER_WAIT"], jlog)
    try:
        try:
            retry_db(lease.acquire, "take the job's locks", cfg["DB_RETRY_SECONDS"], jlog)
        except TakeoverTimeout as exc:
            why = f"attempt {attempt} did not start: {exc}"
            retry_db(lambda: transition(job_id, JobStatus.FAILED, reason=why,
                                        actor=Actor.WORKER, expected_from=[JobStatus.QUEUED], attempt=attempt),
                     "mark failed", cfg["DB_RETRY_SECONDS"], jlog)
            return {"failed": "takeover timeout"}
        started = retry_db(lambda: mark_running(job_id, attempt, worker_name, lease.acquire()), "mark running",
                           cfg["DB_RETRY_SECONDS"], jlog)
        if not started.changed:
            jlog.warning("not started: row is %s on attempt %s (this is attempt %s)",
                         started.job.status, started.job.attempts, attempt)
            return {"skipped": True, "status": started.job.status}

        lease.start_renewing()
        job = started.job
        db.session.close()  # hand the connection back (refresh() opened a transaction): the log capture reuses it
        redis = redis_client(cfg["REDIS_URL"], cfg["REDIS_TIMEOUT"])
        with JobLogCapture(job_id, attempt, redis, db.engine, cfg["LOG_MAX_LINES"], cfg["RESULT_TTL"]):
            return _train_and_record(job, attempt, redis, jlog, write, lease)
    finally:
        lease.release()


def mark_running(job_id: str, attempt: int, worker_name: str | None, lease: dict[str, Any]) -> TransitionResult:
    """queued -> running for ``attempt``, with where it runs and its lease's fields (``AttemptLease.acquire``)."""
    return transition(job_id, JobStatus.RUNNING, reason=f"started by worker {worker_name} (attempt {attempt})",
                      actor=Actor.WORKER, expected_from=[JobStatus.QUEUED], attempt=attempt,
                      fields={"worker_name": worker_name, "worker_pid": os.getpid(), "hostname": socket.gethostname(),
                              "heartbeat_at": func.now(), **lease})


def completion_fields(writer: ProgressWriter, metrics: dict[str, Any]) -> dict[str, Any]:
    """The row's columns the completion writes: its progress so far and its final metrics."""
    return {"heartbeat_at": func.now(), **writer.progress_fields(metrics)}


def mark_completed(job_id: str, attempt: int, fields: dict[str, Any]) -> TransitionResult:
    """running -> completed for ``attempt``, with ``completion_fields``."""
    return transition(job_id, JobStatus.COMPLETED, reason="training finished", actor=Actor.WORKER, attempt=attempt,
                      fields=fields)


def _train_and_record(job: TrainingJob, attempt: int, redis: Redis, jlog: logging.LoggerAdapter,
                      write: Callable[..., TransitionResult], lease: AttemptLease) -> dict[str, Any]:
    """The part of an attempt whose log lines are captured: run the task, then record how it ended."""
    cfg, job_id = current_app.config, str(job.id)
    task = trainq.registry().get(job.task)
    if task is None:  # its queue routes it only to workers that offer it: a worker started without it
        write(JobStatus.FAILED, f"this worker does not offer task {job.task!r}")
        return {"failed": "unknown task"}
    try:
        params = task.params.model_validate(job.params)
    except ValidationError as exc:  # the task's code changed since the submit
        write(JobStatus.FAILED, f"params no longer valid for task {job.task}: {exc}"[:1000])
        return {"failed": "invalid params"}
    reservation = devices.reserved(job_id, attempt)
    worker = os.environ.get("RQ_WORKER_ID")
    if reservation is None or (worker and not queue.any_worker_of(reservation.host.name, {worker})):
        # every enqueue follows a reservation: this attempt's was released meanwhile, or (this host's agent lost its
        # lease while its worker took the job) moved to another host, whose devices this one must not use
        write(JobStatus.FAILED, f"attempt {attempt} has no reservation on this host (the scheduler did not place it, "
              "or released it)")
        return {"failed": "not placed"}
    placed = devices.apply(reservation)
    provenance.record(job_id, attempt, task, db.engine, jlog)
    checkpoints = Path(cfg["CHECKPOINT_DIR"]) / job_id
    newest = newest_checkpoint(checkpoints)
    jlog.info("running (attempt %s, pid %s, task %s%s) %s", attempt, os.getpid(), job.task,
              f", newest checkpoint {newest.path.name}" if newest else "", placed.describe())
    writer = ProgressWriter(job_id, attempt, cfg["PROGRESS_INTERVAL"], db.engine, jlog)
    heartbeat = JobHeartbeat(job_id, attempt, redis, db.engine, cfg["HEARTBEAT_INTERVAL"], cfg["HEARTBEAT_TIMEOUT"])
    trackers = Trackers(job, attempt, cfg, db.engine, jlog, code_version=task.code_version())
    workdir, workdir_lock = scratch.make_workdir(job_id, attempt)  # locked while this attempt lives
    pruning = Pruning.of(job, db.engine, jlog)
    sink = WorkerSink(job, attempt, writer, heartbeat, trackers.track, pruning)
    ctx = TaskContext(job_id=job_id, attempt=attempt, checkpoint_dir=checkpoints,
                      artifact_dir=Path(cfg["ARTIFACT_DIR"]) / job_id, workdir=workdir, log=jlog,
                      sink=DiskLimited(sink),
                      keep_checkpoints=cfg["KEEP_CHECKPOINTS"],
                      device=getattr(params, "device", None) or cfg["DEVICE"] or None,
                      fail_on_nan=task.fail_on_nan if job.fail_on_nan is None else job.fail_on_nan,
                      primary_metric=job.metric or task.metric)
    started = time.perf_counter()
    watch = None
    if placed.memory_mb:
        app = current_app._get_current_object()  # the watch's thread writes through the app's session

        def out_of_memory(used: float) -> None:
            why = (f"out of memory: used {used / 1024:.2f} GB of the {placed.memory_mb / 1024:g} GB it asked "
                   "(resources.memory_gb)")
            jlog.error("%s; stopping the attempt", why)
            with app.app_context():
                write(JobStatus.FAILED, why, **writer.progress_fields())
            group = os.getpgrp()  # RQ's horse leads a process group of its own (its DataLoader workers in it)
            os.killpg(group, signal.SIGKILL) if group == os.getpid() else os.kill(os.getpid(), signal.SIGKILL)

        watch = devices.MemoryWatch(placed.memory_mb, out_of_memory)
        watch.start()
    # Beating until the attempt's end is recorded: a worker still retrying its final write (PostgreSQL down) is
    # alive, and the reconciler must not take it for lost even if Redis lost its RQ job meanwhile. The trackers'
    # last flush comes after the end is recorded (a tracker's outage never delays it).
    if pruning is not None:
        pruning.start()
    with trackers, heartbeat:
        try:
            with writer:
                try:
                    # the Redis beat must be confirmed more often than the reconciler's freshness rule asks
                    with lease.fencing(lambda: heartbeat.confirmed, 1.5 * cfg["HEARTBEAT_INTERVAL"]):
                        result = task(ctx, params)
                finally:
                    ctx.flush_reports()  # the newest step, for the attempt's last write
        except NonFiniteMetric as exc:  # fail_on_nan: the run diverged, and says where
            jlog.error("%s; failed (fail_on_nan)", exc)
            write(JobStatus.FAILED, str(exc)[:500], **writer.progress_fields())
            return {"failed": str(exc)}
        except Exception as exc:
            jlog.exception("task %s raised", job.task)
            full = disk_full_error(exc)
            if full is not None:  # not the job's fault: this host's storage; another worker may have room
                _disk_full(job, attempt, full, checkpoints, writer, write, jlog)
                raise
            write(JobStatus.FAILED, f"{exc.__class__.__name__}: {exc}"[:500],
                  error_message=traceback.format_exc()[-4000:], **writer.progress_fields())
            raise
        finally:
            if watch is not None:
                watch.stop()
            if pruning is not None:
                pruning.stop()
            scratch.release(workdir, workdir_lock)
        if ctx.stop_reason == "pause":
            return _paused(job_id, checkpoints, writer, jlog, partial(write, user_id=heartbeat.paused_by))
        if ctx.stop_reason == "prune" and pruning is not None and pruning.verdict is not None:
            verdict = pruning.verdict
            write(JobStatus.PRUNED, verdict.reason, pruned_at=verdict.at, **writer.progress_fields())
            return {"pruned": True, verdict.axis: verdict.at}
        if writer.refused or heartbeat.refused or ctx.stop_reason:
            jlog.info("stopped (%s): the row is no longer running on this attempt",
                      ctx.stop_reason or "refused write")
            return {"stopped": True}
        metrics, problem = final_metrics(result)
        if problem:
            write(JobStatus.FAILED, f"task {job.task} returned {problem}; a task returns a dict of numbers",
                  **writer.progress_fields())
            return {"failed": problem}
        if ctx.fail_on_nan:  # what report() could not see: CUDA values, read only when written, and the final ones
            diverged = first_non_finite({**resolve_entry(dict(writer.latest)), **metrics}, ctx.primary_metric)
            if diverged:
                jlog.error("%s; failed (fail_on_nan)", diverged)
                write(JobStatus.FAILED, diverged, **writer.progress_fields(metrics))
                return {"failed": diverged}
        # Durable first (beside the checkpoints): if PostgreSQL stays down past DB_RETRY_SECONDS and Redis loses the
        # RQ job's result too, the reconciler records the completion from this file instead of calling it lost.
        kept = outcome.write_outcome(cfg["CHECKPOINT_DIR"], job_id, attempt, {
            "status": JobStatus.COMPLETED.value, "artifacts": sink.pending_artifacts,
            **writer.outcome_fields(metrics)})
        fields = completion_fields(writer, metrics)

        def complete() -> TransitionResult:
            sink.flush_artifacts()
            return mark_completed(job_id, attempt, fields)

        try:
            done = retry_db(complete, f"mark {JobStatus.COMPLETED}", cfg["DB_RETRY_SECONDS"], jlog)
            jlog.info("finished in %.2fs: %s (row %s)", time.perf_counter() - started, metrics, done.job.status)
            if kept:
                outcome.remove_outcome(cfg["CHECKPOINT_DIR"], job_id, attempt)
            # Its end is recorded and its devices are free: what is left (the log's save, the trackers' last
            # flush, the horse's exit) yields the CPU to the job starting on them (this thread only; nice 10)
            os.nice(10)
        except DBAPIError:
            # RQ keeps this return value, and the outcome file keeps it too: the reconciler records it when
            # PostgreSQL is back, even if Redis lost the RQ job meanwhile.
            jlog.error("finished, but the database stayed unreachable; the reconciler will record the result")
        return {"metrics": metrics, "checkpoint_path": writer.checkpoint_path,
                "epochs_completed": writer.latest.get("epoch"), "steps": writer.latest.get("step")}


def _disk_full(job: TrainingJob, attempt: int, full: OSError, checkpoints: Path, writer: ProgressWriter,
               write: Callable[..., TransitionResult], jlog: logging.LoggerAdapter) -> None:
    """The task met a full (or over-quota) device: this worker takes no job until space returns
    (``api.worker.storage``), and the job keeps its attempts: re-queued to run elsewhere (from its newest
    checkpoint) if it has any left, else failed; either way the reason names the cause."""
    job_id = str(job.id)
    folder = full.folder if isinstance(full, StorageFull) else Path(full.filename or checkpoints).parent
    what = full.strerror if isinstance(full, StorageFull) else f"{full.strerror} ({full.filename or folder})"
    reason = f"disk full: {what}"
    worker = os.environ.get("RQ_WORKER_ID") or ""
    storage.note_full(worker, folder, reason)
    try:  # paused from now on (its worker keeps the key while the disk stays full): no pass places the job back here
        redis_connection.get().set(queue.paused_key(worker), reason, px=10_000)
    except RedisError:
        pass
    fields = {"error_message": traceback.format_exc()[-4000:], **writer.progress_fields()}
    if attempt >= job.max_attempts:
        write(JobStatus.FAILED, reason[:500], **fields)
        return
    newest = newest_checkpoint(checkpoints)
    resume = str(newest.path) if newest else None
    requeued = write(JobStatus.QUEUED, f"{reason}; re-queued to run elsewhere (attempt {attempt + 1} of "
                     f"{job.max_attempts}{', from ' + newest.path.name if newest else ''})"[:500],
                     **fields, attempts=attempt + 1, resume_from=resume, worker_pid=None,
                     rq_job_id=queue.rq_job_id_for(job_id, attempt + 1))
    if requeued.changed:
        try:
            schedule()  # placed again (never on a host whose storage is full: its workers say so), then enqueued
        except (RedisError, SQLAlchemyError) as exc:  # the reconciler enqueues it (a queued row RQ lacks)
            jlog.warning("re-queued, not yet enqueued (%s); the reconciler will", exc.__class__.__name__)


def _paused(job_id: str, checkpoints: Path, writer: ProgressWriter, jlog: logging.LoggerAdapter,
            write: Callable[..., TransitionResult]) -> dict[str, Any]:
    """The task stopped for a pause: paused at its newest checkpoint, or, with none to resume from, ended as
    cancelled, saying so (a job is never shown paused with nothing to resume)."""
    newest = newest_checkpoint(checkpoints)
    if newest is None:
        write(JobStatus.CANCELLED, "paused before the task wrote any checkpoint: nothing to resume from, so it "
              "ended (pause a task after its first checkpoint)", **writer.progress_fields())
        jlog.info("pause asked, but no checkpoint to resume from: ended")
        return {"stopped": True}
    writer.checkpoint_path = str(newest.path)
    write(JobStatus.PAUSED, f"paused at checkpoint {newest.path.name}", resume_from=str(newest.path),
          **writer.progress_fields())
    jlog.info("paused; checkpoint %s", newest.path.name)
    return {"paused": True, "checkpoint_path": str(newest.path)}


def final_metrics(result: Any) -> tuple[dict[str, Any], str | None]:
    """A task's return value as final metrics: a dict of metric names to numbers (None: nothing to record).
    The second item says what is wrong with anything else."""
    if result is None:
        return {}, None
    if not isinstance(result, dict):
        return {}, f"a {type(result).__name__}, not a dict"
    metrics: dict[str, Any] = {}
    for name, value in result.items():
        if not isinstance(name, str):
            return {}, f"a dict with the key {name!r}, not a metric name"
        if isinstance(value, bool) or not isinstance(value, int | float):
            return {}, f"{name!r}: {type(value).__name__} {str(value)[:50]!r}, not a number"
        metrics[name] = value if math.isfinite(value) else non_finite(value)  # kept visible, never null
    return metrics, None


def first_non_finite(values: dict[str, Any], primary: str | None) -> str | None:
    """"loss became NaN at step 812" for the first objective metric of ``values`` (a report's, with its step or
    epoch) that is not finite, or None."""
    for name, value in values.items():
        if name not in ("step", "epoch") and isinstance(value, str) and is_objective(name, primary):
            axis = "step" if "step" in values else "epoch" if "epoch" in values else None
            return f"{name} became {value}" + (f" at {axis} {values[axis]}" if axis else "")
    return None
