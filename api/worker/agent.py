"""The host's agent: it registers what the host has (``inventory``) and holds the host's lease while it lives
(``HostLease``), and runs the host's RQ workers on its queue: one, or a pool of ``slots`` forked from it
(``run_workers``), so a host runs several jobs at once, each on the devices the scheduler reserved for it. Each
worker is RQ's forking worker, plus a heartbeat key and what a horse needs before it touches anything shared; it
runs only the service's own job function (``api.queue.refusal``), and after each job it runs a scheduling pass
(what it freed is placed again at once)."""

from __future__ import annotations

import gc
import importlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any, NoReturn

from redis import Redis
from redis.exceptions import RedisError
from rq.executions import Execution
from rq.worker import BaseWorker, Worker
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from api import queue
from api.scheduler import hosts as host_registry
from api.scheduler.hosts import HostRefused, Inventory
from api.scheduler.schedule import schedule, wake
from api.stores import SERVER_KEEPALIVES, db
from api.worker import storage
from api.worker.liveness import Beat
from api.worker.scratch import remove_workdirs
from api.worker.standby import Standby
from api.worker.warmup import rehearse_in_standby
from trainq.process import die_with_parent

log = logging.getLogger(__name__)


class TrainingWorker(Worker):
    """RQ's forking worker, plus a heartbeat key, a storage check before each job, and what a horse needs before it
    touches anything shared."""

    def __init__(self, *args: Any, heartbeat_redis: Redis, heartbeat_interval: float = 1.0,
                 heartbeat_ttl: float = 4.0, storage_folders: tuple[str, ...] = (), storage_min_free: int = 0,
                 storage_check_interval: float = 2.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Its own client: a lock held by the heartbeat thread at fork time must not be one the horse needs.
        self.heartbeat_redis = heartbeat_redis
        self.heartbeat_interval, self.heartbeat_ttl = heartbeat_interval, heartbeat_ttl
        self.storage_folders, self.storage_min_free = storage_folders, storage_min_free
        self.storage_check_interval = storage_check_interval
        self.standby = Standby(self._standby_prepare, self._standby_run)  # the next horse, forked while idle

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None) -> Any:
        """RQ's dequeue, but only while this host can write checkpoints and artifacts (``api.worker.storage``): a
        worker whose storage is full or unwritable takes no job (it would fail it), says why, and resumes by
        itself."""
        said = None
        while self.storage_folders:
            why = storage.blocked(self.name, self.storage_folders, self.storage_min_free)
            key = queue.paused_key(self.name)
            if why is None:
                if said is not None:
                    self.log.warning("Worker %s: storage writable again; taking jobs", self.name)
                    self.heartbeat_redis.delete(key)
                break
            if why != said:
                self.log.error("Worker %s: takes no jobs: %s", self.name, why)
                said = why
            try:
                self.heartbeat_redis.set(key, why, px=int(max(4 * self.storage_check_interval, 10) * 1000))
                self.heartbeat()  # RQ's registration stays alive while it waits
            except RedisError:
                pass
            if self._stop_requested:
                return None
            time.sleep(self.storage_check_interval)
            if self._stop_requested:
                return None
        self.standby.ensure()
        return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)

    def work(self, *args: Any, **kwargs: Any) -> bool:
        beat_redis = self.heartbeat_redis
        key, ttl_ms = queue.worker_heartbeat_key(self.name), int(self.heartbeat_ttl * 1000)
        beat = Beat("worker-heartbeat", self.heartbeat_interval, lambda: beat_redis.set(key, os.getpid(), px=ttl_ms))
        beat.start()
        try:
            return super().work(*args, **kwargs)
        finally:
            self.standby.close()
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
        finally:
            if not self._stop_requested:  # the next horse gets ready while this worker tidies up and runs its pass
                self.standby.ensure()
            remove_workdirs(*job.args)  # a horse that was killed could not remove its scratch folder
            schedule_now(self.name, busy_ok=True)  # its end, committed by the horse, woke the reconciler

    def fork_work_horse(self, job: Any, queue_: Any) -> None:
        """The stand-by takes the job (``api.worker.standby``); without one (it died), a horse is forked for it."""
        pid = self.standby.hand({"job": job.id, "queue": queue_.name, "execution": self.execution.id})
        if pid is None:
            gc.freeze()  # as the stand-by's fork does
            super().fork_work_horse(job, queue_)
            return
        os.environ["RQ_WORKER_ID"], os.environ["RQ_JOB_ID"] = self.name, job.id  # as RQ's fork_work_horse
        self._horse_pid = pid
        self.procline(f"Handed to {pid} at {time.time()}")

    def main_work_horse(self, job: Any, queue_: Any) -> None:
        """A horse forked for its job (no stand-by was alive)."""
        die_with_parent()
        if os.getppid() == 1:  # the worker died between fork and prctl
            os._exit(1)
        db.engine.dispose(close=False)  # pooled connections must not cross a fork: forget the parent's pool
        super().main_work_horse(job, queue_)

    def _standby_prepare(self, order_waiting: Callable[[], bool]) -> None:
        """In the stand-by, before its job: its own connections, so the horse's first ones are open already, and
        (unless its job has come meanwhile) the start's writes rehearsed (``warmup.rehearse_in_standby``)."""
        db.engine.dispose(close=False)
        try:  # the attempt's lease session and db.session's: back to the (new) pool, open
            opened = [db.engine.connect() for _ in range(2)]
            for conn in opened:
                conn.close()
        except SQLAlchemyError as exc:  # PostgreSQL down: the horse connects by itself, as before
            log.debug("stand-by: no database connection (%s)", exc.__class__.__name__)
        try:
            self.connection.ping()
        except RedisError:
            pass
        if not order_waiting():
            rehearse_in_standby(self.connection)

    def _standby_run(self, order: dict[str, Any]) -> NoReturn:
        """In the stand-by: its job. The payload is read from Redis and checked again, as the worker checked it."""
        os.environ["RQ_WORKER_ID"], os.environ["RQ_JOB_ID"] = self.name, order["job"]
        job = self.job_class.fetch(order["job"], connection=self.connection, serializer=self.serializer)
        refused = queue.refusal(job)
        if refused:
            self.log.error("Worker %s: refused RQ job %s, not run: %s", self.name, job.id, refused)
            os._exit(1)
        queue_ = next((q for q in self.queues if q.name == order["queue"]), None) or self.queue_class(
            order["queue"], connection=self.connection, job_class=self.job_class, serializer=self.serializer)
        self.execution = Execution.fetch(order["execution"], job.id, connection=self.connection)
        BaseWorker.main_work_horse(self, job, queue_)  # RQ's: perform the job, then os._exit
        os._exit(0)


# What torch imports lazily in every job's process: its optimizers import torch._dynamo at their first step (1.6 s)
LAZY_IMPORTS = ("torch._dynamo",)


def import_lazy_modules() -> list[str]:
    """In the worker, at start: import what torch would otherwise import in every job's process (never CUDA), and
    Optuna where it is installed (a sweep trial's pruner opens its study before the task starts: not in every
    trial's process again)."""
    done = []
    try:
        importlib.import_module("api.record.sweep_study")  # optuna, and numpy under it
        done.append("optuna")
    except ImportError:  # a worker host without them runs no pruned trial
        pass
    if "torch" not in sys.modules:
        return done
    for name in LAZY_IMPORTS:
        importlib.import_module(name)
    return [*done, *LAZY_IMPORTS]


def schedule_now(who: str, busy_ok: bool = False) -> None:
    """A scheduling pass (a job of this worker just ended: its devices are free); a failure is only logged."""
    try:
        schedule(busy_ok=busy_ok)
    except (SQLAlchemyError, RedisError) as exc:
        log.warning("worker %s: scheduling pass failed (%s); the reconciler's next one places what waits", who,
                    exc.__class__.__name__)
    finally:
        db.session.remove()


class HostLease:
    """The agent's own database session: it registered the host and holds the host's lock and its GPUs' locks
    (``api.scheduler.hosts``) for as long as the agent lives, and renews ``seen_at`` from a thread. A broken
    session is replaced by a new one that registers again (the locks are free once the old one is gone)."""

    def __init__(self, engine: Engine, inventory: Inventory, every: float = 1.0) -> None:
        self.engine, self.inventory, self.every = engine, inventory, every
        self.conn: Any = None
        self.host_id: int | None = None
        self._unconfirmed = False  # the last renewal failed
        self._beat = Beat(f"host-lease-{inventory.name}", every, self._renew)

    def acquire(self) -> int:
        conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            for setting, value in SERVER_KEEPALIVES.items():  # a cut-off host's session (and locks) go in ~11 s
                conn.execute(text(f"SET {setting} = {int(value)}"))
            self.host_id = host_registry.register(conn, self.inventory)
        except BaseException:
            conn.invalidate()
            conn.close()
            raise
        self.conn = conn
        return self.host_id

    def start(self) -> None:
        self._beat.start()

    def _renew(self) -> None:
        try:
            if self.conn is None:
                self.acquire()
                log.info("host %s: lease taken back with a new database session", self.inventory.name)
            host_registry.seen(self.conn, self.host_id)
            if self._unconfirmed:  # heard from again: what waits may be placed here now, not at the next tick
                self._unconfirmed = False
                wake(self.conn)
        except (SQLAlchemyError, HostRefused) as exc:
            self._unconfirmed = True
            log.warning("host %s: lease unconfirmed (%s)", self.inventory.name, exc.__class__.__name__)
            if self.conn is not None:
                try:
                    self.conn.invalidate()
                    self.conn.close()
                except Exception:  # noqa: BLE001 - a broken connection may fail to close too
                    pass
                self.conn = None

    def release(self) -> None:
        self._beat.stop()
        if self.conn is not None:
            try:
                self.conn.execute(text("SELECT pg_advisory_unlock_all()"))  # free at once for the next agent
            except SQLAlchemyError:
                pass
            self.conn.invalidate()  # the session ends, its locks with it (never back to the pool holding them)
            self.conn.close()


def run_workers(make: Callable[[str], TrainingWorker], name: str, slots: int, burst: bool, level: str) -> None:
    """The host's RQ workers: with one slot, one worker named ``name`` in this process (as before the scheduler);
    with more, that many forked from this process (``<name>-<n>``, sharing its imported modules page for page),
    each restarted if it dies, all stopped with it (a SIGTERM is passed on: RQ's warm shutdown)."""
    names = queue.worker_names(name, slots)
    if slots == 1:
        make(names[0]).work(burst=burst, logging_level=level, with_scheduler=False)
        return
    children: dict[int, int] = {}
    stopping = False

    def spawn(index: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker: it dies with the agent, and opens its own database connections
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            die_with_parent()
            db.engine.dispose(close=False)
            code = 0
            try:
                make(names[index]).work(burst=burst, logging_level=level, with_scheduler=False)
            except SystemExit as exc:  # RQ's cold shutdown (a second SIGTERM): a stop, not a failure
                code = exc.code if isinstance(exc.code, int) else 0
            except BaseException:  # noqa: BLE001 - reported, and the agent starts another
                log.exception("worker %s failed", names[index])
                code = 1
            finally:
                os._exit(code)
        children[pid] = index

    def stop(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for index in range(slots):
        spawn(index)
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        index = children.pop(pid, None)
        if index is None:
            continue
        if not stopping and not burst:
            log.warning("worker %s-%s exited (%s); starting another", name, index, status)
            time.sleep(1.0)
            spawn(index)
