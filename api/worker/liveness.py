"""An attempt's liveness: background beats (Redis key and the row's ``heartbeat_at``), and its lease: the
attempt's own database session holding its liveness and training locks, with the fence that stops training
on a host that can no longer prove it holds them.

Liveness: the worker and each running horse beat from background threads (never from the training
loop, so a slow step never looks dead): a key in Redis whose TTL is the timeout, and, more slowly, the
row's ``heartbeat_at``.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import func, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from api import queue
from api.record import locks
from api.record.status import JobStatus
from api.record.tables import TrainingJob
from api.stores import SERVER_KEEPALIVES

log = logging.getLogger(__name__)


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
        # the running write has just stamped heartbeat_at: the first beat is Redis's alone (a write to the row then
        # would only compete with the attempt's way to its task for the horse's connections)
        self._last_db = time.monotonic()
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
                        this_attempts_row(self.job_id, self.attempt).values(heartbeat_at=func.now())
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


# the server's side of the keepalives, as a select list (``SET`` takes one round trip each)
_KEEPALIVES = ", ".join(f"set_config('{name}', '{int(value)}', false)" for name, value in SERVER_KEEPALIVES.items())


def _discard(conn: Any) -> None:
    """Close a lease session itself, never back to the pool with its locks held; a broken one may fail to."""
    try:
        conn.invalidate()
        conn.close()
    except Exception:  # noqa: BLE001 - a broken connection may fail to close too
        pass


class AttemptLease:
    """The attempt's own database session, holding its liveness lock and its job's training lock (``api.record.locks``)
    from before its row says running until its end is recorded. PostgreSQL frees both the moment the session
    ends, whatever ended the process (its worker's death, a SIGKILL of the horse or of its group), on this host
    or another; the reconciler reads that within ``LIVENESS_INTERVAL`` instead of waiting out a heartbeat's TTL.

    A host cut off from the network ends nothing by itself: the server drops its session once TCP keepalives
    and ``tcp_user_timeout`` give up on it (``api.stores``: no sooner than 10 s after the last packet it got
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

    def _session(self) -> tuple[Any, bool]:
        """A session of its own, and whether it took the job's training lock: one round trip for that and the
        keepalives (set also when the URL's own ``options`` override ours)."""
        conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            took = conn.execute(text(f"SELECT {_KEEPALIVES}, pg_try_advisory_lock(:ns, :key)"),
                                {"ns": int(locks.Namespace.TRAINING), "key": self.training_key}).one()[-1]
        except BaseException:
            _discard(conn)
            raise
        return conn, bool(took)

    def acquire(self) -> dict[str, Any]:
        """The row's liveness columns: the key (a fresh number from a sequence: unique among running attempts),
        locked by this attempt's own session, and when, by the server's clock (a lock taken before the server
        last started is gone without its holder having died). First the job's training lock, waiting up to
        ``takeover_wait`` while an older attempt's session still holds it."""
        if self.conn is None:
            conn, took = self._session()
            try:
                if not took:
                    self._wait_for_training_lock(conn)
                # the key, the time and its lock in one round trip (OFFSET 0: the key is drawn once)
                key, since, _ = conn.execute(text(
                    "SELECT key, clock_timestamp(), pg_advisory_lock(:ns, key) FROM"
                    " (SELECT nextval('trainq_liveness_keys')::int AS key OFFSET 0) drawn"),
                    {"ns": int(locks.Namespace.ATTEMPT)}).one()
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
        conn, took = self._session()
        try:
            key = self.fields["liveness_key"]
            if not took:
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
