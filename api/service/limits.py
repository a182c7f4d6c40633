"""Limits, so that one caller cannot exhaust the machine: ``LimitExceeded`` (a 4xx naming the limit), and
``MAX_QUEUED_JOBS``: a user with that many queued jobs gets a 429 naming the limit on the next submit (their own
``max_queued_jobs`` overrides the setting). The others live where they are enforced: the Host check and
``MAX_CONTENT_LENGTH`` in ``api.web.host_header`` and Flask, the disk per job in ``api.worker.disk``.
"""

from __future__ import annotations

from flask import current_app
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
