"""What an admin does in rq-dashboard, carried to the rows: RQ jobs deleted there end their rows cancelled
(never brought back as if Redis had lost them), and failed RQ jobs requeued there restart their rows on a new
attempt (RQ would rerun the old one, which the row refuses)."""

from __future__ import annotations

import logging
from pathlib import Path

from redis.exceptions import RedisError
from sqlalchemy import select

from api.record.status import ACTIVE, Actor, JobStatus
from api.record.status_writer import transition
from api.record.tables import TrainingJob, User
from api.service import limits
from api.service.jobs import JobConflict, enqueue_current, job_lock, note_in_log, restart, stop_work
from api.service.queries import get_job, latest_checkpoint
from api.stores import db

log = logging.getLogger(__name__)


def removed_in_dashboard(rq_job_ids: list[str], what: str, user: User | None) -> list[str]:
    """RQ jobs an admin deleted in rq-dashboard (one, or a queue emptied): the rows they are the current attempt
    of end cancelled, saying so, so that the reconciler never brings them back as if Redis had lost them; a
    running one's training is stopped (its row refuses its writes from now on, and RQ is told to stop it)."""
    if not rq_job_ids:
        return []
    rows = db.session.scalars(select(TrainingJob).where(
        TrainingJob.rq_job_id.in_(rq_job_ids), TrainingJob.status.in_([s.value for s in ACTIVE]))).all()
    reason = f"{what} in rq-dashboard by {user.name if user else '?'}"
    cancelled = []
    for job in rows:
        result = transition(job.id, JobStatus.CANCELLED, reason=reason, actor=Actor.DASHBOARD_SYNC,
                            expected_from=[job.status], attempt=job.attempts, user_id=user.id if user else None)
        if result.changed:
            cancelled.append(str(job.id))
            try:
                stop_work(result.job)
            except RedisError as exc:
                log.warning("job %s: cancelled (deleted in rq-dashboard); RQ unreachable (%s)", job.id, exc)
            note_in_log(result.job, reason, user, result.from_status, Actor.DASHBOARD_SYNC)
    return cancelled


def requeued_in_dashboard(rq_job_ids: list[str], user: User | None) -> tuple[list[str], dict[str, str]]:
    """Failed RQ jobs an admin requeued in rq-dashboard (one, or all of a queue's). RQ would run the old attempt
    again, which the row would refuse; what the admin meant is a new attempt: each row they are the current
    attempt of, if it is failed or cancelled, restarts (from its newest checkpoint when it has one) on a new
    attempt that is enqueued, saying so. Returns the jobs restarted, and why each other RQ job was not (the row
    is not failed or cancelled, the owner is over a limit): nothing changes for those."""
    rows = {row.rq_job_id: row.id for row in db.session.scalars(
        select(TrainingJob).where(TrainingJob.rq_job_id.in_(rq_job_ids)))} if rq_job_ids else {}
    restarted, refused = [], {}
    for rq_job_id in rq_job_ids:
        if rq_job_id not in rows:
            refused[rq_job_id] = "no training job has it as its current attempt"
            continue
        with job_lock(rows[rq_job_id]):
            job = get_job(rows[rq_job_id])
            if job.rq_job_id != rq_job_id:
                refused[rq_job_id] = f"job {job.id} has moved on to another attempt"
                continue
            if job.status not in (JobStatus.FAILED, JobStatus.CANCELLED):
                refused[rq_job_id] = f"job {job.id} is {job.status}, not failed or cancelled"
                continue
            checkpoint = latest_checkpoint(job)
            how = f"from {Path(checkpoint).name}" if checkpoint else "afresh"
            try:
                job = restart(job, f"requeued in rq-dashboard by {user.name if user else '?'} ({how})",
                               resume_from=checkpoint, user=user).job
            except (JobConflict, limits.LimitExceeded) as exc:
                log.warning("job %s: requeued in rq-dashboard, not restarted: %s", job.id, exc)
                refused[rq_job_id] = str(getattr(exc, "message", exc))
                continue
            enqueue_current(job)
            restarted.append(str(job.id))
    return restarted, refused
