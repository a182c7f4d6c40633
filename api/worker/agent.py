"""The host's agent: RQ's forking worker, plus a heartbeat key and what a horse needs before it touches
anything shared; it runs only the service's own job function (``api.queue.refusal``)."""

from __future__ import annotations

import gc
import importlib
import logging
import os
import sys
import time
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from rq.worker import Worker

from api import queue
from api.stores import db
from api.worker import storage
from api.worker.liveness import Beat
from api.worker.scratch import remove_workdirs
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
        return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)

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
