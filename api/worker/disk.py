"""``JOB_DISK_LIMIT_MB``: a job whose checkpoints and artifacts would pass it fails, with a reason that names it
(its owner's own ``job_disk_limit_mb`` overrides the setting). The worker wraps the task's sink in
``DiskLimited``: before each checkpoint and artifact, ``TaskContext`` asks it how many bytes the write may take
(``write_budget``: what it replaces, and the checkpoints ``KEEP_CHECKPOINTS`` prunes after it, count as freed) and
stops the write there, keeping nothing; a check after each write stays."""

from __future__ import annotations

import functools
import os
import uuid
from pathlib import Path
from typing import Any

from flask import current_app
from sqlalchemy import select
from sqlalchemy.engine import Engine

from api.record.tables import TrainingJob, User
from api.stores import db


class JobDiskLimitExceeded(RuntimeError):
    """Raised inside a running task (from its checkpoint or save_artifact call): the job fails with this."""


def job_disk_limit_bytes(job_id: str | uuid.UUID, engine: Engine | None = None,
                         setting_mb: int | None = None) -> int | None:
    """The job's disk limit in bytes (its owner's own, else ``JOB_DISK_LIMIT_MB``, or ``setting_mb``); None: no
    limit. ``engine``: the app's, unless given (outside an app context)."""
    query = (select(User.job_disk_limit_mb).join(TrainingJob, TrainingJob.owner_id == User.id)
             .where(TrainingJob.id == uuid.UUID(str(job_id))))
    with (engine or db.engine).connect() as conn:  # not the session: a running job's loaded row stays as it is
        own = conn.execute(query).scalar()
    mb = own if own is not None else setting_mb if setting_mb is not None else current_app.config["JOB_DISK_LIMIT_MB"]
    return mb * 1024 * 1024 if mb and mb > 0 else None


def folder_bytes(folder: Path) -> int:
    """Bytes of the regular files under ``folder`` (links are not followed)."""
    total = 0
    stack = [folder]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                stack.append(Path(entry.path))
            elif entry.is_file(follow_symlinks=False):
                try:
                    total += entry.stat(follow_symlinks=False).st_size
                except FileNotFoundError:
                    pass
    return total


def job_disk_usage(job_id: str | uuid.UUID) -> int:
    cfg = current_app.config
    return sum(folder_bytes(Path(cfg[setting]) / str(job_id)) for setting in ("CHECKPOINT_DIR", "ARTIFACT_DIR"))


class DiskLimited:
    """A worker sink whose checkpoint and artifact calls fail the task once the job's files pass its disk limit.
    Everything else goes to the wrapped sink."""

    def __init__(self, sink: Any) -> None:
        self._sink = sink
        # read at the first checkpoint or artifact, not on the attempt's way to its task (which may write none)
        self._engine, self._setting_mb = db.engine, current_app.config["JOB_DISK_LIMIT_MB"]
        self.report = sink.report  # called every step: no __getattr__ on the way

    @functools.cached_property
    def _limit(self) -> int | None:
        return job_disk_limit_bytes(self._sink.job_id, self._engine, self._setting_mb)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sink, name)

    def checkpointed(self, path: Path) -> None:
        self._sink.checkpointed(path)
        self.check()

    def artifact_saved(self, artifact: dict[str, Any]) -> None:
        self._sink.artifact_saved(artifact)
        self.check()

    def write_budget(self, freed: int) -> int | None:
        """Bytes the next checkpoint or artifact may take (``freed``: what it replaces or lets be pruned); None: no
        limit. ``TaskContext`` stops a write at this many bytes, before it passes the limit."""
        if self._limit is None:
            return None
        return self._limit - (job_disk_usage(self._sink.job_id) - freed)

    def write_refused(self, what: str, exc: Exception) -> JobDiskLimitExceeded:
        return JobDiskLimitExceeded(
            f"refused to write {what} {getattr(exc, 'path', Path('?')).name}: it would take the job's checkpoints and "
            f"artifacts over its disk limit of {self._limit / 2**20:.0f} MB (JOB_DISK_LIMIT_MB, or the owner's "
            f"job_disk_limit_mb; KEEP_CHECKPOINTS={current_app.config['KEEP_CHECKPOINTS']} keeps only the newest "
            "checkpoints)")

    def check(self) -> None:
        if self._limit is None:
            return
        used = job_disk_usage(self._sink.job_id)
        if used > self._limit:
            raise JobDiskLimitExceeded(
                f"the job's checkpoints and artifacts use {used / 2**20:.1f} MB, over its disk limit of "
                f"{self._limit / 2**20:.0f} MB (JOB_DISK_LIMIT_MB, or the owner's job_disk_limit_mb; "
                f"KEEP_CHECKPOINTS={current_app.config['KEEP_CHECKPOINTS']} keeps only the newest checkpoints)")
