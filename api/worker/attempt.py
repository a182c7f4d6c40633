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
import importlib
import json
import logging
import math
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from flask import current_app
from pydantic import ValidationError
from redis import Redis
from redis.exceptions import RedisError
from rq.worker import Worker
from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError

import trainq
from api import queue
from api.record import locks
from api.record.joblog import JobLogCapture
from api.record.status import Actor, JobStatus, TransitionResult, transition, utcnow
from api.record.tables import JobArtifact, TrainingJob
from api.service import limits
from api.stores import SERVER_KEEPALIVES, db, redis_client
from trainq.checkpoints import newest_checkpoint
from trainq.context import TaskContext, resolve_entry
from trainq.process import die_with_parent

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
        try:
            super().execute_job(job, queue_)
        finally:  # a horse that was killed could not remove its scratch folder
            remove_workdirs(*job.args)

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


# What torch imports lazily in every job's process: its optimizers import torch._dynamo at their first step (1.6 s)
LAZY_IMPORTS = ("torch._dynamo",)


def import_lazy_modules() -> list[str]:
    """In the worker, at start: import what torch would otherwise import in every job's process (never CUDA)."""
    if "torch" not in sys.modules:
        return []
    for name in LAZY_IMPORTS:
        importlib.import_module(name)
    return list(LAZY_IMPORTS)


def workdir_prefix(job_id: str, attempt: int) -> str:
    """``ctx.workdir`` of a job's attempt is a fresh folder in the temp folder named with this prefix."""
    return f"trainq-{job_id}-a{attempt}-"


def remove_workdirs(job_id: str, attempt: int) -> None:
    for path in Path(tempfile.gettempdir()).glob(workdir_prefix(job_id, attempt) + "*"):
        shutil.rmtree(path, ignore_errors=True)


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
        # the key's value says how often it is renewed, so a reader can tell its age from its TTL (Redis's clock)
        self.value = queue.beat_value(interval, self.ttl_ms)
        self.pause_requested = self.refused = False
        self.paused_by: int | None = None  # the user who asked for the pause
        self.confirmed = time.monotonic()  # when the newest beat Redis took was sent
        self._last_db = 0.0
        self._thread = Beat(f"job-heartbeat-{job_id}", interval, self.beat)

    def beat(self) -> None:
        try:
            sent = time.monotonic()
            pipe = self.redis.pipeline(transaction=False)
            pipe.set(self.key, self.value, px=self.ttl_ms)
            pipe.get(queue.control_key(self.job_id))
            _, control = pipe.execute()
            self.confirmed = sent
            if not self.pause_requested:
                self.pause_requested, self.paused_by = queue.pause_request(control)
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


class Superseded(Exception):
    """The attempt's session could not be confirmed or taken back: another session holds its locks, or its row
    no longer runs on it."""


class TakeoverTimeout(Exception):
    """An older attempt of the job still held the job's training lock after ``TAKEOVER_WAIT``."""


def _discard(conn: Any) -> None:
    """Close a lease session itself, never back to the pool with its locks held; a broken one may fail to."""
    try:
        conn.invalidate()
        conn.close()
    except Exception:  # noqa: BLE001 - a broken connection may fail to close too
        pass


class AttemptLease:
    """The attempt's own database session, holding its liveness lock and its job's training lock (``api.locks``)
    from before its row says running until its end is recorded. PostgreSQL frees both the moment the session
    ends, whatever ended the process (its worker's death, a SIGKILL of the horse or of its group), on this host
    or another; the reconciler reads that within ``LIVENESS_INTERVAL`` instead of waiting out a heartbeat's TTL.

    A host cut off from the network ends nothing by itself: the server drops its session once TCP keepalives
    and ``tcp_user_timeout`` give up on it (``api.extensions``: no sooner than 10 s after the last packet it got
    from the session, about 11 s at most). So the attempt also fences itself: a thread confirms the session every
    ``renew_every`` seconds (a session that answers still holds its locks: they are session-level), and while
    the task trains, a watchdog kills the horse's process group (DataLoader workers too) once neither the
    session nor the Redis heartbeat (``JobHeartbeat``, which keeps the reconciler's hands off while fresh)
    was confirmed for ``fence_after`` seconds: before the server can free the locks and the reconciler give
    the job to another worker. A session that broke (PostgreSQL restarted, a reset connection) is taken back
    with a new one: both locks again, and the row still running on this attempt with this key; otherwise the
    attempt fences at once."""

    def __init__(self, engine: Engine, job_id: str, attempt: int, renew_every: float = 1.0,
                 fence_after: float = 7.0, takeover_wait: float = 120.0,
                 jlog: logging.Logger | logging.LoggerAdapter = log) -> None:
        self.engine, self.job_id, self.attempt, self.jlog = engine, job_id, attempt, jlog
        self.renew_every, self.fence_after, self.takeover_wait = renew_every, fence_after, takeover_wait
        self.training_key = locks.job_key(job_id)
        self.conn: Any = None
        self.fields: dict[str, Any] = {}
        self.confirmed = time.monotonic()  # when the newest confirmation that succeeded was sent
        self.superseded: str | None = None
        self._stopped = threading.Event()
        self._renewer: threading.Thread | None = None

    def _session(self) -> Any:
        conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            for setting, value in SERVER_KEEPALIVES.items():  # also when the URL's own options override ours
                conn.execute(text(f"SET {setting} = {int(value)}"))
        except BaseException:
            _discard(conn)
            raise
        return conn

    def acquire(self) -> dict[str, Any]:
        """The row's liveness columns: the key (a fresh number from a sequence: unique among running attempts),
        locked by this attempt's own session, and when, by the server's clock (a lock taken before the server
        last started is gone without its holder having died). First the job's training lock, waiting up to
        ``takeover_wait`` while an older attempt's session still holds it."""
        if self.conn is None:
            conn = self._session()
            try:
                if not locks.try_lock(conn, locks.Namespace.TRAINING, self.training_key):
                    self._wait_for_training_lock(conn)
                key, since = conn.execute(text("SELECT nextval('trainq_liveness_keys'), clock_timestamp()")).one()
                locks.lock(conn, locks.Namespace.ATTEMPT, key)
            except BaseException:
                _discard(conn)
                raise
            self.conn, self.fields = conn, {"liveness_key": key, "liveness_since": since}
            self.confirmed = time.monotonic()
        return self.fields

    def _wait_for_training_lock(self, conn: Any) -> None:
        self.jlog.warning("attempt %s waits: an earlier attempt's session still holds this job's training lock",
                          self.attempt)
        deadline = time.monotonic() + self.takeover_wait
        while True:
            wait_ms = int(min(5.0, deadline - time.monotonic()) * 1000)
            if wait_ms < 1:  # (0 would mean no timeout at all)
                raise TakeoverTimeout(f"an earlier attempt of this job still held it after {self.takeover_wait:g} s")
            conn.execute(text(f"SET lock_timeout = {wait_ms}"))
            try:
                locks.lock(conn, locks.Namespace.TRAINING, self.training_key)
                break
            except OperationalError as exc:
                if getattr(exc.orig, "pgcode", None) != "55P03":  # lock_not_available: waited out this round
                    raise
        conn.execute(text("SET lock_timeout = 0"))
        self.jlog.info("attempt %s: the earlier attempt let go of the job", self.attempt)

    def start_renewing(self) -> None:
        self._renewer = threading.Thread(target=self._renew_loop, name=f"lease-{self.job_id}", daemon=True)
        self._renewer.start()

    def _renew_loop(self) -> None:
        while not self._stopped.is_set():
            sent = time.monotonic()
            try:
                if self.conn is None:
                    self._take_back()
                else:
                    self.conn.execute(text("SELECT 1"))
                self.confirmed = sent
            except Superseded as exc:
                self.superseded = str(exc)
                return
            except SQLAlchemyError as exc:
                if self._stopped.is_set():
                    return
                self.jlog.warning("liveness session unconfirmed (%s)", exc.__class__.__name__)
                self._drop_conn()
            self._stopped.wait(self.renew_every)

    def _take_back(self) -> None:
        """A new session for a broken one: both locks again (free only if the old session is gone), and the row
        still running on this attempt with this key (its ``liveness_since`` renewed: the reconciler reads the
        new session's lock, also after a server restart)."""
        conn = self._session()
        try:
            key = self.fields["liveness_key"]
            if not locks.try_lock(conn, locks.Namespace.TRAINING, self.training_key):
                raise Superseded("another session holds the job's training lock")
            if not locks.try_lock(conn, locks.Namespace.ATTEMPT, key):
                raise Superseded("another session holds the attempt's liveness lock")
            renewed = conn.execute(
                this_attempts_row(self.job_id, self.attempt).where(TrainingJob.liveness_key == key)
                .values(liveness_since=func.clock_timestamp())).rowcount
            if not renewed:
                raise Superseded("the row no longer runs on this attempt")
        except BaseException:
            _discard(conn)
            raise
        self.conn = conn
        self.jlog.info("liveness session taken back with a new connection")

    def _drop_conn(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            _discard(conn)

    @contextmanager
    def fencing(self, redis_confirmed: Callable[[], float], redis_grace: float) -> Iterator[None]:
        """While the body (the task) runs, a watchdog stops this process group once the attempt can be given away:
        its session unconfirmed for ``fence_after`` s and its Redis heartbeat for ``redis_grace`` s."""
        done = threading.Event()

        def watch() -> None:
            last_tick, grace_until = time.monotonic(), 0.0
            while not done.wait(0.1):
                now = time.monotonic()
                if now - last_tick > 1.0:  # this process was stopped (SIGSTOP) or starved: let the renewer speak
                    grace_until = now + 1.0
                last_tick = now
                if self.superseded:
                    fence(f"its liveness session could not be taken back: {self.superseded}")
                elif now >= grace_until and now - self.confirmed >= self.fence_after \
                        and now - redis_confirmed() >= redis_grace:
                    fence(f"neither its database session nor its Redis heartbeat confirmed for "
                          f"{now - self.confirmed:.1f} s (host cut off?)")

        def fence(why: str) -> None:
            os.write(2, f"job {self.job_id}: attempt {self.attempt} stops its own training: {why}\n".encode())
            group = os.getpgrp()  # RQ's horse leads a process group of its own (its DataLoader workers in it)
            os.killpg(group, signal.SIGKILL) if group == os.getpid() else os.kill(os.getpid(), signal.SIGKILL)

        watcher = threading.Thread(target=watch, name=f"fence-{self.job_id}", daemon=True)
        watcher.start()
        try:
            yield
        finally:
            done.set()
            watcher.join(1)

    def release(self) -> None:
        self._stopped.set()
        if self._renewer is not None:
            self._renewer.join(2)
        self._drop_conn()  # closes the session itself (never back to the pool with the locks held)


class ProgressWriter:
    """A task's reports, written to the job's row by a thread of its own, at most once per ``interval``: the
    training thread only adds each report to a list under a lock (microseconds), and a new checkpoint is
    written at once. Reports with an ``epoch`` all go into the row's history; step-only reports are sampled,
    the newest per write, so a loop that reports every step still draws a curve without growing the row by a
    point per step. The final numbers come with the completion. Remembers whether the row refused a write.
    Progress is best effort: while PostgreSQL is down it is kept for the next write, and training goes on."""

    def __init__(self, job_id: str, attempt: int, interval: float, engine: Engine,
                 jlog: logging.LoggerAdapter) -> None:
        self.job_id, self.attempt, self.engine, self.jlog = uuid.UUID(job_id), attempt, engine, jlog
        self._lock = threading.Lock()  # the reports below; held for microseconds, never during a write
        self._write_lock = threading.Lock()  # one write at a time, in order
        # reports not yet in the row's history, in order; of consecutive step-only reports, only the newest
        self._pending: list[dict[str, Any]] = []
        self._changed = False  # anything to write since the last write
        self._first_write = True
        self.latest: dict[str, Any] = {}  # every metric's newest value, with the newest step and epoch
        self._total_steps: int | None = None
        self.checkpoint_path: str | None = None
        self.refused = False
        self._thread = Beat(f"job-progress-{job_id}", interval, self.write_if_changed)

    def report(self, entry: dict[str, Any]) -> None:
        with self._lock:
            if "epoch" not in entry and self._pending and "epoch" not in self._pending[-1]:
                self._pending[-1] = entry
            else:
                self._pending.append(entry)
            self.latest.update(entry)
            self._changed = True

    @property
    def total_steps(self) -> int | None:
        return self._total_steps

    @total_steps.setter
    def total_steps(self, steps: int | None) -> None:
        with self._lock:
            self._total_steps, self._changed = steps, True

    def checkpointed(self, path: str) -> None:
        with self._lock:
            self.checkpoint_path, self._changed = path, True
        self.write()  # never miss a new checkpoint: a lost attempt resumes from the row's

    def write_if_changed(self) -> None:
        if self._changed:
            self.write()

    def write(self) -> None:
        with self._write_lock:
            with self._lock:  # take what is there; reading CUDA values (waits for the GPU) happens outside
                sent, latest, self._pending, self._changed = self._pending, dict(self.latest), [], False
            values = {**self._fields(sent, latest), "heartbeat_at": utcnow(), "updated_at": utcnow()}
            try:
                with self.engine.begin() as conn:
                    written = conn.execute(this_attempts_row(self.job_id, self.attempt).values(**values)).rowcount
            except SQLAlchemyError as exc:
                with self._lock:  # kept for the next write
                    self._pending, self._changed = sent + self._pending, True
                self.jlog.warning("progress not saved, database unavailable (%s)", exc.__class__.__name__)
                return
            if sent:
                self._first_write = False
            if not written:
                self.refused = True

    def __enter__(self) -> ProgressWriter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.stop()  # what it has not written comes with the attempt's last transition

    def progress_fields(self, final: dict[str, Any] | None = None) -> dict[str, Any]:
        """The row's progress columns from the reports so far (``final``: the task's final metrics)."""
        with self._lock:
            pending, latest = list(self._pending), dict(self.latest)
        return self._fields(pending, latest, final)

    def _fields(self, pending: list[dict[str, Any]], latest: dict[str, Any],
                final: dict[str, Any] | None = None) -> dict[str, Any]:
        latest = resolve_entry(latest)
        metrics = {k: v for k, v in latest.items() if k not in ("step", "epoch")}
        metrics.update(final or {})
        values: dict[str, Any] = {"metrics": metrics or None, "total_steps": self._total_steps,
                                  "loss": metrics.get("train_loss", metrics.get("loss"))}
        for axis in ("epoch", "step"):
            if axis in latest:
                values[axis] = latest[axis]
        if self.checkpoint_path:
            values["checkpoint_path"] = self.checkpoint_path
        if pending:
            values["history"] = self._history_with([resolve_entry(entry) for entry in pending])
        return values

    def _history_with(self, entries: list[dict[str, Any]]) -> Any:
        """The ``history`` column with ``entries`` appended. An attempt's first write first drops what it
        reports again: a resumed attempt trains again from its checkpoint's epoch (or step)."""
        axis = next((axis for axis in ("epoch", "step") if axis in entries[0]), None)
        if not self._first_write or axis is None:
            return text("training_jobs.history || CAST(:history_entries AS jsonb)").bindparams(
                history_entries=json.dumps(entries))
        return _HISTORY_FROM.bindparams(history_axis=axis, history_from=entries[0][axis],
                                        history_entries=json.dumps(entries))


_HISTORY_FROM = text(
    "COALESCE((SELECT jsonb_agg(e ORDER BY n) FROM jsonb_array_elements(training_jobs.history) WITH ORDINALITY"
    " AS h(e, n) WHERE NOT (e ? CAST(:history_axis AS text) AND (e->>CAST(:history_axis AS text))::numeric"
    " >= :history_from)), '[]'::jsonb) || CAST(:history_entries AS jsonb)"
)


class WorkerSink:
    """The worker's side of a ``TaskContext``: reports and checkpoints go to the ``ProgressWriter``, artifacts
    to ``job_artifacts``; stop requests come from the heartbeat thread and refused writes."""

    coalesce_seconds = 0.05  # the context hands on step-only reports at most this often (the writer samples them)

    def __init__(self, job: TrainingJob, attempt: int, writer: ProgressWriter, heartbeat: JobHeartbeat) -> None:
        self.job_id, self.attempt, self.writer, self.heartbeat = job.id, attempt, writer, heartbeat
        self.report = writer.report  # no frame of its own on the way

    def progress_total(self, steps: int | None) -> None:
        self.writer.total_steps = steps

    def checkpointed(self, path: Path) -> None:
        self.writer.checkpointed(str(path))

    def artifact_saved(self, artifact: dict[str, Any]) -> None:
        row = {"job_id": self.job_id, "name": artifact["name"], "size": artifact["size"],
               "sha256": artifact["sha256"], "attempt": self.attempt, "path": artifact["path"],
               "created_at": utcnow()}
        statement = pg_insert(JobArtifact).values(**row)
        db.session.execute(statement.on_conflict_do_update(
            index_elements=[JobArtifact.job_id, JobArtifact.name],
            set_={k: statement.excluded[k] for k in ("size", "sha256", "attempt", "path", "created_at")}))
        db.session.commit()

    def stop_reason(self) -> str | None:
        if self.heartbeat.pause_requested:
            return "pause"
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
        started = retry_db(
            lambda: transition(
                job_id, JobStatus.RUNNING, reason=f"started by worker {worker_name} (attempt {attempt})",
                actor=Actor.WORKER, expected_from=[JobStatus.QUEUED], attempt=attempt,
                fields={"worker_name": worker_name, "worker_pid": os.getpid(), "hostname": socket.gethostname(),
                        "heartbeat_at": utcnow(), **lease.acquire()},
            ),
            "mark running", cfg["DB_RETRY_SECONDS"], jlog,
        )
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
    checkpoints = Path(cfg["CHECKPOINT_DIR"]) / job_id
    newest = newest_checkpoint(checkpoints)
    jlog.info("running (attempt %s, pid %s, task %s%s)", attempt, os.getpid(), job.task,
              f", newest checkpoint {newest.path.name}" if newest else "")
    writer = ProgressWriter(job_id, attempt, cfg["PROGRESS_INTERVAL"], db.engine, jlog)
    heartbeat = JobHeartbeat(job_id, attempt, redis, db.engine, cfg["HEARTBEAT_INTERVAL"], cfg["HEARTBEAT_TIMEOUT"])
    workdir = Path(tempfile.mkdtemp(prefix=workdir_prefix(job_id, attempt)))
    ctx = TaskContext(job_id=job_id, attempt=attempt, checkpoint_dir=checkpoints,
                      artifact_dir=Path(cfg["ARTIFACT_DIR"]) / job_id, workdir=workdir, log=jlog,
                      sink=limits.DiskLimited(WorkerSink(job, attempt, writer, heartbeat)),
                      keep_checkpoints=cfg["KEEP_CHECKPOINTS"],
                      device=getattr(params, "device", None) or cfg["DEVICE"] or None)
    started = time.perf_counter()
    # Beating until the attempt's end is recorded: a worker still retrying its final write (PostgreSQL down) is
    # alive, and the reconciler must not take it for lost even if Redis lost its RQ job meanwhile.
    with heartbeat:
        try:
            with writer:
                try:
                    # the Redis beat must be confirmed more often than the reconciler's freshness rule asks
                    with lease.fencing(lambda: heartbeat.confirmed, 1.5 * cfg["HEARTBEAT_INTERVAL"]):
                        result = task(ctx, params)
                finally:
                    ctx.flush_reports()  # the newest step, for the attempt's last write
        except Exception as exc:
            jlog.exception("task %s raised", job.task)
            write(JobStatus.FAILED, f"{exc.__class__.__name__}: {exc}"[:500],
                  error_message=traceback.format_exc()[-4000:], **writer.progress_fields())
            raise
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        if ctx.stop_reason == "pause":
            return _paused(job_id, checkpoints, writer, jlog, partial(write, user_id=heartbeat.paused_by))
        if writer.refused or heartbeat.refused or ctx.stop_reason:
            jlog.info("stopped (%s): the row is no longer running on this attempt",
                      ctx.stop_reason or "refused write")
            return {"stopped": True}
        metrics, problem = final_metrics(result)
        if problem:
            write(JobStatus.FAILED, f"task {job.task} returned {problem}; a task returns a dict of numbers",
                  **writer.progress_fields())
            return {"failed": problem}
        try:
            done = write(JobStatus.COMPLETED, "training finished", heartbeat_at=utcnow(),
                         **writer.progress_fields(metrics))
            jlog.info("finished in %.2fs: %s (row %s)", time.perf_counter() - started, metrics, done.job.status)
        except DBAPIError:
            # RQ keeps this return value; the reconciler records it when PostgreSQL is back.
            jlog.error("finished, but the database stayed unreachable; the reconciler will record the result")
        return {"metrics": metrics, "checkpoint_path": writer.checkpoint_path,
                "epochs_completed": writer.latest.get("epoch"), "steps": writer.latest.get("step")}


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
        metrics[name] = value if math.isfinite(value) else None
    return metrics, None
