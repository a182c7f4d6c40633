"""Job statuses, their groups, the allowed transitions (as data), and the one function that writes status.

Every status change in the project is ``transition()``: a conditional UPDATE (``WHERE status IN
allowed_from``, plus the attempt number for writes from a worker) and an event row, in one
transaction. A write that loses a race changes nothing and returns the row as it is now.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update

from api.stores import db

if TYPE_CHECKING:
    from api.record.tables import TrainingJob


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"  # stopped cooperatively at a checkpoint; resumes on a new attempt
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Actor(StrEnum):
    API = "api"
    WORKER = "worker"
    RECONCILER = "reconciler"
    CLEANUP_SCRIPT = "cleanup script"
    DASHBOARD_SYNC = "dashboard-sync"  # a stop made in RQ (e.g. rq-dashboard), copied to the row


TERMINAL: frozenset[JobStatus] = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})
ACTIVE: frozenset[JobStatus] = frozenset({JobStatus.QUEUED, JobStatus.RUNNING})
"""Statuses that claim work exists in RQ; the reconciler checks exactly these."""

INITIAL = JobStatus.QUEUED

TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.CANCELLED, JobStatus.FAILED}),
    # running -> queued: a lost attempt re-queued to resume from its checkpoint
    JobStatus.RUNNING: frozenset(
        {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.PAUSED, JobStatus.QUEUED}
    ),
    JobStatus.PAUSED: frozenset({JobStatus.QUEUED, JobStatus.CANCELLED, JobStatus.FAILED}),
    JobStatus.COMPLETED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}

RESTARTS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.FAILED: frozenset({JobStatus.QUEUED}),
    JobStatus.CANCELLED: frozenset({JobStatus.QUEUED}),
}
"""A user's explicit second chance (force-start, resume): the only way out of a terminal status.
Only ``Actor.API`` may use it, always with a new attempt number; workers and reconcilers never do."""

class Action(StrEnum):
    """What a user can ask of a job (``api.jobs`` has one function each)."""

    CANCEL = "cancel"
    PAUSE = "pause"
    RESUME = "resume"  # from the newest checkpoint, on a new attempt
    FORCE_START = "force-start"  # re-enqueue a queued job RQ lost, or start a failed/cancelled one afresh
    MARK_FAILED = "mark-failed"


ACTIONS: dict[Action, frozenset[JobStatus]] = {
    Action.CANCEL: frozenset({JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.PAUSED}),
    Action.PAUSE: frozenset({JobStatus.RUNNING}),
    Action.RESUME: frozenset({JobStatus.PAUSED, JobStatus.FAILED, JobStatus.CANCELLED}),
    Action.FORCE_START: frozenset({JobStatus.QUEUED, JobStatus.FAILED, JobStatus.CANCELLED}),
    Action.MARK_FAILED: frozenset({JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.PAUSED}),
}
"""The statuses each action is offered from: the monitor shows exactly these buttons, the API refuses the rest."""

NEEDS_CHECKPOINT = frozenset({Action.RESUME})


def actions_for(status: JobStatus | str, has_checkpoint: bool) -> list[Action]:
    return [action for action, sources in ACTIONS.items()
            if status in sources and (has_checkpoint or action not in NEEDS_CHECKPOINT)]


# Timestamp column stamped on entering a status.
_STAMPS = {
    JobStatus.QUEUED: "queued_at",
    JobStatus.RUNNING: "started_at",
    JobStatus.COMPLETED: "finished_at",
    JobStatus.FAILED: "finished_at",
    JobStatus.CANCELLED: "finished_at",
}


def allowed_from(to: JobStatus, restart: bool = False) -> frozenset[JobStatus]:
    table = list(TRANSITIONS.items()) + (list(RESTARTS.items()) if restart else [])
    return frozenset(src for src, targets in table if to in targets)


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class TransitionResult:
    job: TrainingJob
    changed: bool
    from_status: JobStatus | None


class JobNotFound(LookupError):
    pass


def create(job: TrainingJob, *, actor: Actor, reason: str, now: datetime | None = None,
           user_id: int | None = None) -> TrainingJob:
    """Insert a new row as ``queued`` with its first event (the ``None -> queued`` transition); ``user_id`` is
    the user who submitted it."""
    from api.record.tables import JobEvent  # models import this module's statuses

    now = now or utcnow()
    job.status = INITIAL
    job.status_reason = reason
    job.created_at = job.updated_at = job.queued_at = now
    db.session.add(job)
    db.session.flush()
    db.session.add(JobEvent(job_id=job.id, from_status=None, to_status=INITIAL, reason=reason, actor=actor,
                            actor_user_id=user_id, at=now))
    db.session.commit()
    return job


def transition(
    job_id: uuid.UUID | str,
    to: JobStatus,
    *,
    reason: str,
    actor: Actor,
    expected_from: Iterable[JobStatus] | None = None,
    attempt: int | None = None,
    fields: Mapping[str, Any] | None = None,
    now: datetime | None = None,
    restart: bool = False,
    user_id: int | None = None,
) -> TransitionResult:
    """Move ``job_id`` to ``to`` if its status allows it (narrowed by ``expected_from``) and, when
    ``attempt`` is given, only if the row is still on that attempt. Other columns in ``fields`` are
    written in the same UPDATE. ``restart`` admits ``RESTARTS`` (the user's way out of a terminal status).
    ``user_id`` is the user who asked for the change (the event records it); workers and reconcilers have none."""
    from api.record.tables import JobEvent, TrainingJob  # models import this module's statuses

    if restart and (actor != Actor.API or not fields or "attempts" not in fields):
        raise ValueError("a restart is the API's, and always starts a new attempt")
    now = now or utcnow()
    sources = allowed_from(to, restart)
    if expected_from is not None:
        sources = sources & frozenset(JobStatus(s) for s in expected_from)
    job_id = uuid.UUID(str(job_id))
    try:
        row = db.session.execute(
            select(TrainingJob).where(TrainingJob.id == job_id).with_for_update()
        ).scalar_one_or_none()
        if row is None:
            raise JobNotFound(str(job_id))
        if row.status not in sources or (attempt is not None and row.attempts != attempt):
            db.session.commit()
            return TransitionResult(row, False, JobStatus(row.status))
        from_status = JobStatus(row.status)
        values: dict[str, Any] = {"status": to, "status_reason": reason, "updated_at": now, **(fields or {})}
        if to in _STAMPS:
            values[_STAMPS[to]] = now
        conditions = [TrainingJob.id == job_id, TrainingJob.status.in_([s.value for s in sources])]
        if attempt is not None:
            conditions.append(TrainingJob.attempts == attempt)
        result = db.session.execute(update(TrainingJob).where(*conditions).values(**values))
        if result.rowcount != 1:  # cannot happen under the row lock; never write an event without the change
            db.session.rollback()
            return TransitionResult(db.session.get(TrainingJob, job_id), False, None)
        event = JobEvent(job_id=job_id, from_status=from_status, to_status=to, reason=reason, actor=actor,
                         actor_user_id=user_id, at=now)
        db.session.add(event)
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise
    db.session.refresh(row)
    return TransitionResult(row, True, from_status)
