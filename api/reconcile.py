"""Reconciliation: make every non-terminal row agree with what RQ knows, in one batched pass.

``decide`` is the whole mapping as a pure function; ``cleanup_orphaned_training_jobs`` reads the rows
(one query) and RQ (pipelined), then applies each decision as a conditional transition.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import select, update

from api import queue
from api.extensions import db
from api.queue import RQState
from api.status import ACTIVE, Actor, JobStatus, transition, utcnow

log = logging.getLogger(__name__)

CANCELLED_IN_RQ = "cancelled in RQ (e.g. from rq-dashboard)"


@dataclass(frozen=True)
class Decision:
    action: str  # report key
    to: JobStatus | None  # None: enqueue, no status change
    reason: str


def decide(
    status: JobStatus,
    rq_job_id: str | None,
    waiting_since: datetime,
    state: RQState | None,
    *,
    now: datetime,
    enqueue_grace: timedelta,
) -> Decision | None:
    """What to do with one non-terminal row given RQ's view of it; None when they agree."""
    if rq_job_id is None:
        if status == JobStatus.QUEUED:
            if now - waiting_since >= enqueue_grace:
                return Decision("enqueued", None, "never reached RQ; enqueued by the reconciler")
            return None
        return Decision("no_rq_id", JobStatus.FAILED, "no RQ job id recorded")
    if state is None or state.status is None:
        return Decision("orphaned", JobStatus.FAILED, "orphaned: RQ job not found")
    rq_status = state.status
    if rq_status == "finished":
        if status == JobStatus.RUNNING:
            return Decision("completed", JobStatus.COMPLETED, "RQ job finished")
        return Decision("failed", JobStatus.FAILED, "RQ job finished without the job being started")
    if rq_status == "failed":
        return Decision("failed", JobStatus.FAILED, f"RQ job failed: {state.error or 'no error text in RQ'}")
    if rq_status in ("stopped", "canceled"):
        return Decision("cancelled", JobStatus.CANCELLED, CANCELLED_IN_RQ)
    if rq_status == "started" and state.worker_alive is False:
        return Decision("worker_lost", JobStatus.FAILED, "worker lost")
    return None


@dataclass
class Report:
    checked: int = 0
    dry_run: bool = False
    actions: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    duration_s: float = 0.0

    def counts(self) -> dict[str, int]:
        return {action: len(ids) for action, ids in sorted(self.actions.items())}

    def to_dict(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "dry_run": self.dry_run,
            "counts": self.counts(),
            "actions": {k: list(v) for k, v in sorted(self.actions.items())},
            "duration_s": round(self.duration_s, 4),
        }

    def summary(self) -> str:
        counts = ", ".join(f"{k}={v}" for k, v in self.counts().items()) or "nothing to do"
        mode = " (dry run)" if self.dry_run else ""
        return f"checked {self.checked} active jobs in {self.duration_s:.3f}s{mode}: {counts}"


def cleanup_orphaned_training_jobs(
    now: datetime | None = None, dry_run: bool = False, actor: Actor = Actor.RECONCILER
) -> Report:
    """Check every non-terminal row against RQ in batch and fix each mismatch with a conditional write.

    Safe beside itself and live jobs: a row that changed since it was read is left alone (``raced``).
    """
    from api.models import TrainingJob

    started = time.monotonic()
    now = now or utcnow()
    grace = timedelta(seconds=current_app.config["ENQUEUE_GRACE"])
    rows = db.session.execute(
        select(
            TrainingJob.id, TrainingJob.status, TrainingJob.rq_job_id, TrainingJob.attempts,
            TrainingJob.created_at, TrainingJob.queued_at, TrainingJob.name,
        ).where(TrainingJob.status.in_([s.value for s in ACTIVE]))
    ).all()
    db.session.commit()
    states = queue.fetch_states(r.rq_job_id for r in rows if r.rq_job_id)
    report = Report(checked=len(rows), dry_run=dry_run)

    for row in rows:
        decision = decide(
            JobStatus(row.status), row.rq_job_id, row.queued_at or row.created_at,
            states.get(row.rq_job_id) if row.rq_job_id else None, now=now, enqueue_grace=grace,
        )
        if decision is None:
            continue
        job_id = str(row.id)
        if dry_run:
            report.actions[decision.action].append(job_id)
            continue
        if decision.to is None:
            changed = _enqueue(row.id, row.attempts, row.name)
        else:
            fields = {"error_message": decision.reason} if decision.to == JobStatus.FAILED else None
            changed = transition(
                row.id, decision.to, reason=decision.reason, actor=actor,
                expected_from=[JobStatus(row.status)], attempt=row.attempts, fields=fields, now=now,
            ).changed
        report.actions[decision.action if changed else "raced"].append(job_id)
        log.info("job %s: %s (%s)%s", job_id, decision.action, decision.reason, "" if changed else ", raced")

    report.duration_s = time.monotonic() - started
    log.log(logging.INFO if report.actions else logging.DEBUG, "reconcile: %s", report.summary())
    return report


def _enqueue(job_id: uuid.UUID, attempt: int, name: str) -> bool:
    """Enqueue a row that never reached RQ; claim it first so two reconcilers enqueue it once."""
    from api.models import TrainingJob

    claimed = db.session.execute(
        update(TrainingJob)
        .where(
            TrainingJob.id == job_id, TrainingJob.rq_job_id.is_(None),
            TrainingJob.status == JobStatus.QUEUED, TrainingJob.attempts == attempt,
        )
        .values(rq_job_id=str(job_id), status_reason="enqueued by the reconciler after Redis was unreachable")
    ).rowcount
    if not claimed:
        db.session.rollback()
        return False
    try:
        queue.enqueue(str(job_id), attempt, description=f"{name} ({job_id})")
    except Exception:
        db.session.rollback()
        raise
    db.session.commit()
    return True
