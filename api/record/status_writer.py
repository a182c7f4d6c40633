"""The single status writer: every status change in the project is ``transition()`` (and a new row's first
status is ``create()``): a conditional UPDATE (``WHERE status IN allowed_from``, plus the attempt number for
writes from a worker) of the row it locks, and an event row written from that change, in one statement (one round
trip, then the commit). A write that loses a race changes nothing and returns the row as it is now. The rules come
from ``api.record.status``; nothing else writes ``status``. Webhook events come from this commit: a trigger on
``job_events`` adds their outbox row in the same transaction (``api.record.webhook_tables``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, Integer, String, Text, func, insert, literal, select, true, update

from api.record.status import INITIAL, Actor, JobNotFound, JobStatus, allowed_from
from api.record.tables import JobEvent, TrainingJob
from api.stores import db

# Timestamp column stamped on entering a status.
_STAMPS = {
    JobStatus.QUEUED: "queued_at",
    JobStatus.RUNNING: "started_at",
    JobStatus.COMPLETED: "finished_at",
    JobStatus.FAILED: "finished_at",
    JobStatus.CANCELLED: "finished_at",
    JobStatus.PRUNED: "finished_at",
}



@dataclass(frozen=True)
class TransitionResult:
    job: TrainingJob
    changed: bool
    from_status: JobStatus | None


def create(job: TrainingJob, *, actor: Actor, reason: str, now: datetime | None = None,
           user_id: int | None = None) -> TrainingJob:
    """Insert a new row as ``queued`` with its first event (the ``None -> queued`` transition); ``user_id`` is
    the user who submitted it."""
    now = now or db.session.scalar(select(func.now()))  # the database's clock, as every age
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
    if restart and (actor != Actor.API or not fields or "attempts" not in fields):
        raise ValueError("a restart is the API's, and always starts a new attempt")
    sources = allowed_from(to, restart)
    if expected_from is not None:
        sources = sources & frozenset(JobStatus(s) for s in expected_from)
    job_id = uuid.UUID(str(job_id))
    # the database's clock (every age is read on it) unless given
    stamp = literal(now, DateTime(timezone=True)) if now is not None else func.now()
    values: dict[str, Any] = {"status": to.value, "status_reason": reason, "updated_at": stamp, **(fields or {})}
    if to in _STAMPS:
        values[_STAMPS[to]] = stamp
    jobs, events = TrainingJob.__table__, JobEvent.__table__
    # One statement: the row locked, changed only if its status (and attempt) allow, and the event written from
    # the change itself; a row that may not change is left as it is, and says why (its status, read under the lock)
    old = select(jobs.c.id, jobs.c.status).where(jobs.c.id == job_id).with_for_update().cte("old")
    conditions = [jobs.c.id == old.c.id, jobs.c.status.in_([s.value for s in sources])]
    if attempt is not None:
        conditions.append(jobs.c.attempts == attempt)
    changed = (update(jobs).where(*conditions).values(**values)
               .returning(jobs.c.id, old.c.status.label("from_status")).cte("changed"))
    event = insert(events).from_select(
        ["job_id", "from_status", "to_status", "reason", "actor", "actor_user_id", "at"],
        select(changed.c.id, changed.c.from_status, literal(to.value, String), literal(reason, Text),
               literal(actor.value, String), literal(user_id, Integer), stamp)).cte("event")
    statement = (select(old.c.status, changed.c.from_status).select_from(old.outerjoin(changed, true()))
                 .add_cte(event))
    session = db.session
    try:
        found = session.connection().execute(statement).one_or_none()
        if found is None:
            raise JobNotFound(str(job_id))
        if found.from_status is None:  # its status (or attempt) does not allow it: unchanged
            row = session.get(TrainingJob, job_id, populate_existing=True)
            session.commit()
            return TransitionResult(row, False, JobStatus(row.status))
        session.commit()
    except BaseException:
        session.rollback()
        raise
    row = session.get(TrainingJob, job_id, populate_existing=True)
    return TransitionResult(row, True, JobStatus(found.from_status))
