"""The status vocabulary, as pure data: statuses, their groups, actors, the allowed transitions, and the
actions a user may take from each status. No database here: the one function that writes a status is
``api.record.status_writer.transition``, which reads its rules from this table.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"  # stopped cooperatively at a checkpoint; resumes on a new attempt
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    PRUNED = "pruned"  # a sweep's trial its pruner stopped early (api.worker.pruning): neither failed nor cancelled


class Actor(StrEnum):
    API = "api"
    WORKER = "worker"
    RECONCILER = "reconciler"
    CLEANUP_SCRIPT = "cleanup script"
    DASHBOARD_SYNC = "dashboard-sync"  # a stop made in RQ (e.g. rq-dashboard), copied to the row


TERMINAL: frozenset[JobStatus] = frozenset(
    {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.PRUNED})
ACTIVE: frozenset[JobStatus] = frozenset({JobStatus.QUEUED, JobStatus.RUNNING})
"""Statuses that claim work exists in RQ; the reconciler checks exactly these."""

INITIAL = JobStatus.QUEUED

TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.CANCELLED, JobStatus.FAILED}),
    # running -> queued: a lost attempt re-queued to resume from its checkpoint
    # running -> pruned: a sweep's pruner stopped the trial at a report (only the worker running it writes this)
    JobStatus.RUNNING: frozenset(
        {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.PAUSED, JobStatus.QUEUED,
         JobStatus.PRUNED}
    ),
    JobStatus.PAUSED: frozenset({JobStatus.QUEUED, JobStatus.CANCELLED, JobStatus.FAILED}),
    JobStatus.COMPLETED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
    JobStatus.PRUNED: frozenset(),
}

RESTARTS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.FAILED: frozenset({JobStatus.QUEUED}),
    JobStatus.CANCELLED: frozenset({JobStatus.QUEUED}),
}
"""A user's explicit second chance (force-start, resume): the only way out of a terminal status.
Only ``Actor.API`` may use it, always with a new attempt number; workers and reconcilers never do."""

class Action(StrEnum):
    """What a user can ask of a job (``api.service.jobs`` has one function each)."""

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


def allowed_from(to: JobStatus, restart: bool = False) -> frozenset[JobStatus]:
    table = list(TRANSITIONS.items()) + (list(RESTARTS.items()) if restart else [])
    return frozenset(src for src, targets in table if to in targets)


def utcnow() -> datetime:
    return datetime.now(UTC)




class JobNotFound(LookupError):
    pass
