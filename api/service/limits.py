"""Limits, so that one caller cannot exhaust the machine, and a foreign name cannot reach the API.

- ``Host``: a request whose Host header names none of ``ALLOWED_HOSTS`` (any port) is a 400, on loopback
  too: DNS rebinding points a foreign name at 127.0.0.1, and this is where it is stopped.
- ``MAX_CONTENT_LENGTH``: a bigger request body is a 413 that names the limit (Flask enforces it).
- ``MAX_QUEUED_JOBS``: a user with that many queued jobs gets a 429 naming the limit on the next submit.
- ``JOB_DISK_LIMIT_MB``: a job whose checkpoints and artifacts pass it fails, with a reason that names it.
  The worker wraps the task's sink in ``DiskLimited``, so the check runs right after each checkpoint
  (``KEEP_CHECKPOINTS`` has pruned older ones by then) and each artifact.
A user's own ``max_queued_jobs`` / ``job_disk_limit_mb`` (``flask --app api users create``) overrides the setting.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

from flask import Flask, current_app, request
from sqlalchemy import func, select

from api.record import locks
from api.record.status import JobStatus
from api.record.tables import TrainingJob, User
from api.stores import db


class LimitExceeded(Exception):
    """A request refused by a limit: ``status`` (4xx), ``code`` and a message that names the limit."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field


class JobDiskLimitExceeded(RuntimeError):
    """Raised inside a running task (from its checkpoint or save_artifact call): the job fails with this."""


# ---------------------------------------------------------------- Host


def allowed_hosts() -> frozenset[str]:
    return frozenset(_host_name(name) for name in current_app.config["ALLOWED_HOSTS"].split(",") if name.strip())


def _host_name(host: str) -> str:
    """``host`` without its port and IPv6 brackets, lower case: ``[::1]:5000`` -> ``::1``."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.partition(":")[0] if host.count(":") <= 1 else host


def check_host() -> None:
    allowed = allowed_hosts()
    sent = request.headers.get("Host", "")
    if "*" in allowed or (sent and _host_name(sent) in allowed):
        return
    raise LimitExceeded(400, "bad_host", f"Host {sent[:100]!r} is not a name this service answers to; add it to "
                        "ALLOWED_HOSTS if it should be", "Host")


# ---------------------------------------------------------------- queued jobs


def check_queued_jobs(user: User) -> None:
    """Refuse a submit when ``user`` already has their limit of queued jobs. Holds a per-user lock until the
    caller's transaction ends (the submit's insert commits it), so concurrent submits cannot both pass."""
    limit = user.max_queued_jobs if user.max_queued_jobs is not None else current_app.config["MAX_QUEUED_JOBS"]
    locks.lock_for_transaction(db.session, locks.Namespace.USER_SUBMIT, user.id)
    queued = db.session.scalar(select(func.count()).select_from(TrainingJob).where(
        TrainingJob.owner_id == user.id, TrainingJob.status == JobStatus.QUEUED))
    if queued >= limit:
        db.session.rollback()
        setting = "the user's own max_queued_jobs" if user.max_queued_jobs is not None else "MAX_QUEUED_JOBS"
        raise LimitExceeded(429, "queued_jobs_limit",
                            f"{user.name} already has {queued} queued jobs, the limit ({setting}={limit}): wait "
                            "until some start, or cancel some")


# ---------------------------------------------------------------- disk per job


def job_disk_limit_bytes(job_id: str | uuid.UUID) -> int | None:
    """The job's disk limit in bytes (its owner's own, else ``JOB_DISK_LIMIT_MB``); None: no limit."""
    query = (select(User.job_disk_limit_mb).join(TrainingJob, TrainingJob.owner_id == User.id)
             .where(TrainingJob.id == uuid.UUID(str(job_id))))
    with db.engine.connect() as conn:  # not the session: a running job's loaded row stays as it is
        own = conn.execute(query).scalar()
    mb = own if own is not None else current_app.config["JOB_DISK_LIMIT_MB"]
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
        self._limit = job_disk_limit_bytes(sink.job_id)
        self.report = sink.report  # called every step: no __getattr__ on the way

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sink, name)

    def checkpointed(self, path: Path) -> None:
        self._sink.checkpointed(path)
        self.check()

    def artifact_saved(self, artifact: dict[str, Any]) -> None:
        self._sink.artifact_saved(artifact)
        self.check()

    def check(self) -> None:
        if self._limit is None:
            return
        used = job_disk_usage(self._sink.job_id)
        if used > self._limit:
            raise JobDiskLimitExceeded(
                f"the job's checkpoints and artifacts use {used / 2**20:.1f} MB, over its disk limit of "
                f"{self._limit / 2**20:.0f} MB (JOB_DISK_LIMIT_MB, or the owner's job_disk_limit_mb; "
                f"KEEP_CHECKPOINTS={current_app.config['KEEP_CHECKPOINTS']} keeps only the newest checkpoints)")


def init_app(app: Flask) -> None:
    app.before_request(check_host)
