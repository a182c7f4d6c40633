"""What a user can do to a job: submit, read, list, cancel. Each is checks + a transition + a queue call.

The row is always written before anything reaches Redis, so whatever Redis loses, the rows re-drive it.
"""

from __future__ import annotations

import base64
import binascii
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy import select, tuple_, update

from api import queue
from api.extensions import db
from api.models import JobEvent, TrainingJob
from api.reconcile import cleanup_orphaned_training_jobs
from api.status import TERMINAL, Actor, JobNotFound, JobStatus, create, transition
from training.config import TrainingConfig

log = logging.getLogger(__name__)

MAX_PAGE = 200


class JobConflict(Exception):
    """The job's status does not allow the action; ``job`` is the row as it is now."""

    def __init__(self, message: str, job: TrainingJob) -> None:
        super().__init__(message)
        self.message = message
        self.job = job


class BadCursor(ValueError):
    pass


def parse_id(job_id: str | uuid.UUID) -> uuid.UUID:
    try:
        return uuid.UUID(str(job_id))
    except ValueError:
        raise JobNotFound(str(job_id)) from None


def get_job(job_id: str | uuid.UUID) -> TrainingJob:
    job = db.session.get(TrainingJob, parse_id(job_id))
    if job is None:
        raise JobNotFound(str(job_id))
    return job


@dataclass(frozen=True)
class SubmitResult:
    job: TrainingJob
    enqueued: bool


def submit(config: dict[str, Any], name: str | None = None) -> SubmitResult:
    """Validate, insert the row as queued, then enqueue. Redis down: the row stays queued, with a reason,
    and the reconciler enqueues it later."""
    cfg = TrainingConfig.from_dict(config)
    job = TrainingJob(
        id=uuid.uuid4(),
        name=name or f"{cfg.dataset}-{cfg.model}",
        config=cfg.to_dict(),
        attempts=1,
    )
    create(job, actor=Actor.API, reason="submitted")
    job_id = str(job.id)
    try:
        queue.enqueue(job_id, job.attempts, description=f"{job.name} ({job_id})")
    except RedisError as exc:
        log.warning("job %s: not enqueued, Redis unreachable (%s); the reconciler will enqueue it", job_id, exc)
        _set_columns(job.id, status_reason=f"waiting for Redis: enqueue failed ({exc.__class__.__name__}); "
                     "the reconciler will enqueue it")
        return SubmitResult(get_job(job.id), enqueued=False)
    _set_columns(job.id, rq_job_id=job_id)
    log.info("job %s: submitted and enqueued", job_id)
    return SubmitResult(get_job(job.id), enqueued=True)


def _set_columns(job_id: uuid.UUID, **values: Any) -> None:
    """Write non-status columns (never ``status``: that is ``status.transition``'s alone)."""
    assert "status" not in values
    db.session.execute(update(TrainingJob).where(TrainingJob.id == job_id).values(**values))
    db.session.commit()
    db.session.expire_all()


@dataclass(frozen=True)
class Page:
    jobs: list[TrainingJob]
    next_cursor: str | None


def _encode_cursor(job: TrainingJob) -> str:
    return base64.urlsafe_b64encode(f"{job.created_at.isoformat()}|{job.id}".encode()).decode()


def _decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        created, job_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        return datetime.fromisoformat(created), uuid.UUID(job_id)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadCursor("cursor is not one this API returned") from None


def list_jobs(status: JobStatus | None = None, limit: int = 50, cursor: str | None = None) -> Page:
    """Newest first, keyset-paginated on (created_at, id) so deep pages cost the same as the first."""
    query = select(TrainingJob)
    if status is not None:
        query = query.where(TrainingJob.status == status)
    if cursor:
        query = query.where(tuple_(TrainingJob.created_at, TrainingJob.id) < _decode_cursor(cursor))
    query = query.order_by(TrainingJob.created_at.desc(), TrainingJob.id.desc()).limit(limit + 1)
    rows = list(db.session.scalars(query))
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, _encode_cursor(rows[-1]) if more else None)


def list_events(job_id: str | uuid.UUID) -> list[JobEvent]:
    job = get_job(job_id)
    return list(db.session.scalars(select(JobEvent).where(JobEvent.job_id == job.id).order_by(JobEvent.id)))


@dataclass(frozen=True)
class CancelResult:
    job: TrainingJob
    rq_cancelled: bool
    already_cancelled: bool
    cleanup: dict[str, Any] | None = None  # the report of the cleanup run that followed


def cancel(job_id: str | uuid.UUID) -> CancelResult:
    """Mark the row cancelled (conditionally), stop the work in RQ, then run the cleanup.

    The row goes first: from then on every write of the running attempt is refused, so the horse stops
    itself at its next progress write even if Redis cannot deliver the stop command.
    """
    job = get_job(job_id)
    result = transition(job.id, JobStatus.CANCELLED, reason="cancelled by user", actor=Actor.API)
    if not result.changed:
        if result.job.status == JobStatus.CANCELLED:
            return CancelResult(result.job, rq_cancelled=False, already_cancelled=True)
        raise JobConflict(_refusal(result.job, "cancelled"), result.job)
    rq_cancelled, cleanup = False, None
    try:
        rq_cancelled = queue.stop(str(job.id), pid=result.job.worker_pid, hostname=result.job.hostname)
        cleanup = cleanup_orphaned_training_jobs(actor=Actor.API).to_dict()
    except RedisError as exc:
        log.warning("job %s: cancelled in the database; RQ unreachable (%s)", job.id, exc)
    log.info("job %s: cancelled (rq_cancelled=%s)", job.id, rq_cancelled)
    db.session.expire_all()
    return CancelResult(get_job(job.id), rq_cancelled=rq_cancelled, already_cancelled=False, cleanup=cleanup)


def _refusal(job: TrainingJob, action: str) -> str:
    if job.status in TERMINAL:
        return f"job {job.id} is already {job.status} and cannot be {action}"
    return f"job {job.id} is {job.status} and cannot be {action}"
