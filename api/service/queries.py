"""What a user can read about jobs: one job, the list (filters, keyset pages), its history, events, logs,
checkpoints and artifacts. Reads only: nothing here changes a row."""

from __future__ import annotations

import base64
import binascii
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from flask import current_app
from sqlalchemy import func, select, tuple_
from sqlalchemy.orm import defer, joinedload, selectinload, undefer

from api.record import joblog
from api.record.status import JobNotFound, JobStatus
from api.record.tables import JobArtifact, JobEvent, JobMetricValue, TrainingJob, User
from api.stores import db, redis_connection
from trainq.checkpoints import list_checkpoints, newest_checkpoint
from trainq.context import check_artifact_name

log = logging.getLogger(__name__)

LIST_LEAVES_OUT = frozenset({"history"})  # grows with every epoch of every job; a single-job read has it


class BadCursor(ValueError):
    pass


def parse_id(job_id: str | uuid.UUID) -> uuid.UUID:
    try:
        return uuid.UUID(str(job_id))
    except ValueError:
        raise JobNotFound(str(job_id)) from None


def get_job(job_id: str | uuid.UUID) -> TrainingJob:
    """The job's row (any user reads any job)."""
    job = db.session.get(TrainingJob, parse_id(job_id))
    if job is None:
        raise JobNotFound(str(job_id))
    return job


@dataclass(frozen=True)
class Page:
    jobs: list[TrainingJob]
    next_cursor: str | None


def _encode_cursor(job: TrainingJob, metric: str | None = None) -> str:
    """Where the next page starts: (created_at, id), led by the sort metric's value when sorted by one."""
    parts = [repr(float(job.metrics[metric]))] if metric else []
    parts += [job.created_at.isoformat(), str(job.id)]
    return base64.urlsafe_b64encode("|".join(parts).encode()).decode()


def _decode_cursor(cursor: str, metric: str | None = None) -> tuple[Any, ...]:
    try:
        parts = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        if len(parts) != (3 if metric else 2):
            raise ValueError("not this sort's cursor")
        value = (float(parts.pop(0)),) if metric else ()
        return (*value, datetime.fromisoformat(parts[0]), uuid.UUID(parts[1]))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadCursor("cursor is not one this API returned (for this sort)") from None


def id_range(prefix: str) -> tuple[uuid.UUID, uuid.UUID]:
    """The job ids whose text starts with ``prefix`` (checked by the caller), as a range the primary key's index
    serves: PostgreSQL orders uuids byte by byte, as their hex text reads."""
    digits = prefix.replace("-", "")
    return uuid.UUID(digits.ljust(32, "0")), uuid.UUID(digits.ljust(32, "f"))


@dataclass(frozen=True)
class JobFilter:
    """What ``GET /api/training`` narrows the list to; every field optional, all of them together (AND)."""

    status: JobStatus | None = None
    task: str | None = None
    id_prefix: str | None = None  # checked by the caller: hexadecimal, dashes where an id has them
    owner: str | None = None  # a user's name
    name: str | None = None  # a substring of the job's name, any case
    since: datetime | None = None  # created at or after
    until: datetime | None = None  # created before
    sort: str | None = None  # None: newest first; "metric" lowest first, "-metric" highest first
    sweep: uuid.UUID | None = None  # a sweep's trials only


def _like_pattern(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def list_jobs(where: JobFilter = JobFilter(), limit: int = 50, cursor: str | None = None) -> Page:
    """Newest first, keyset-paginated on (created_at, id) so deep pages cost the same as the first. Sorted by a
    metric, only the jobs that reported it, best first as asked, paged on (value, created_at, id)."""
    query = select(TrainingJob).options(defer(*(getattr(TrainingJob, name) for name in LIST_LEAVES_OUT)),
                                        selectinload(TrainingJob.owner), selectinload(TrainingJob.reservation))
    if where.id_prefix:
        query = query.where(TrainingJob.id.between(*id_range(where.id_prefix)))
    if where.owner is not None:
        query = query.where(TrainingJob.owner_id == select(User.id).where(User.name == where.owner).scalar_subquery())
    if where.status is not None:
        query = query.where(TrainingJob.status == where.status)
    if where.task is not None:
        query = query.where(TrainingJob.task == where.task)
    if where.sweep is not None:
        query = query.where(TrainingJob.sweep_id == where.sweep)
    if where.name:
        query = query.where(TrainingJob.name.ilike(_like_pattern(where.name), escape="\\"))
    if where.since is not None:
        query = query.where(TrainingJob.created_at >= where.since)
    if where.until is not None:
        query = query.where(TrainingJob.created_at < where.until)
    metric = where.sort.lstrip("-") if where.sort else None
    if metric:  # through job_metric_values, whose index is in this order: only jobs with a number for it
        query = query.join(JobMetricValue, (JobMetricValue.job_id == TrainingJob.id) & (JobMetricValue.name == metric))
        keys = (JobMetricValue.value, JobMetricValue.created_at, JobMetricValue.job_id)
        descending = where.sort.startswith("-")
        if cursor:
            after = tuple_(*keys) < _decode_cursor(cursor, metric) if descending else \
                tuple_(*keys) > _decode_cursor(cursor, metric)
            query = query.where(after)
        query = query.order_by(*(k.desc() if descending else k.asc() for k in keys))
    else:
        if cursor:
            query = query.where(tuple_(TrainingJob.created_at, TrainingJob.id) < _decode_cursor(cursor))
        query = query.order_by(TrainingJob.created_at.desc(), TrainingJob.id.desc())
    rows = list(db.session.scalars(query.limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, _encode_cursor(rows[-1], metric) if more else None)


def metric_history(job_id: str | uuid.UUID) -> tuple[TrainingJob, list[str], list[dict[str, Any]]]:
    """The job, the columns of its metric history (``epoch``, ``step``, then every metric by name: JSONB keeps no
    key order) and the history's entries, oldest first, as ``history`` holds them (the CSV and JSON exports)."""
    job = db.session.get(TrainingJob, parse_id(job_id), options=[undefer(TrainingJob.history)])
    if job is None:
        raise JobNotFound(str(job_id))
    entries = list(job.history or [])  # read once: the commit below expires the row
    names = sorted({key for entry in entries for key in entry} - {"epoch", "step"})
    db.session.commit()
    return job, ["epoch", "step", *names], entries


def list_events(job_id: str | uuid.UUID) -> list[JobEvent]:
    job = get_job(job_id)
    return list(db.session.scalars(select(JobEvent).options(joinedload(JobEvent.actor_user))
                                   .where(JobEvent.job_id == job.id).order_by(JobEvent.id)))


def logs(job_id: str | uuid.UUID, after: int, limit: int) -> dict[str, Any]:
    """The job's log lines numbered above ``after`` (PostgreSQL, then the live Redis stream)."""
    job = get_job(job_id)
    lines = joblog.read(job.id, after, limit, redis_connection.get(), db.session)
    db.session.commit()
    return {"lines": lines, "next_cursor": lines[-1]["n"] if lines else after, "truncated": job.log_truncated}


def latest_checkpoint(job: TrainingJob) -> str | None:
    """The newest checkpoint of any attempt."""
    newest = newest_checkpoint(checkpoint_dir(job.id))
    return str(newest.path) if newest else None


def checkpoint_dir(job_id: uuid.UUID) -> Path:
    return Path(current_app.config["CHECKPOINT_DIR"]) / str(job_id)


def checkpoints(job_id: str | uuid.UUID) -> list[dict[str, Any]]:
    job = get_job(job_id)
    return [
        {"seq": c.seq, "epoch": c.epoch, "step": c.step, "path": str(c.path), "size_bytes": c.size_bytes,
         "resume_point": str(c.path) == job.resume_from}
        for c in list_checkpoints(checkpoint_dir(job.id))
    ]


def artifacts(job_id: str | uuid.UUID) -> list[JobArtifact]:
    job = get_job(job_id)
    found = list(db.session.scalars(select(JobArtifact).where(JobArtifact.job_id == job.id).order_by(JobArtifact.name)))
    db.session.commit()
    return found


class ArtifactNotFound(LookupError):
    pass


def artifact_file(job_id: str | uuid.UUID, name: str) -> tuple[JobArtifact, Path]:
    """An artifact's row and its file, which must sit in the job's artifact folder (no traversal, no links)."""
    job = get_job(job_id)
    try:
        check_artifact_name(name)
    except ValueError as exc:
        raise ArtifactNotFound(str(exc)) from None
    artifact = db.session.get(JobArtifact, (job.id, name))
    db.session.commit()
    linked = Path(current_app.config["ARTIFACT_DIR"]) / str(job.id)
    if linked.is_symlink():  # refused before anything resolves it: a link there may point anywhere (/etc)
        log.warning("job %s: its artifact folder %s is a link; refused", job.id, linked)
        raise ArtifactNotFound(f"job {job.id}'s artifact folder is a link: refused")
    folder = linked.resolve()
    path = folder / name
    if artifact is None or not path.is_file() or path.is_symlink() or path.resolve().parent != folder:
        raise ArtifactNotFound(f"job {job.id} has no artifact {name!r}")
    return artifact, path


def database_now() -> datetime:
    """PostgreSQL's clock (this statement's start: after any row this transaction read before), read without ending
    the transaction: the clock a job's heartbeat was written on, so its age is never one host's against another's."""
    return db.session.scalar(select(func.statement_timestamp()))
