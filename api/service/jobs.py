"""What a user can do to a job: submit, read, list, cancel. Each is checks + a transition + a queue call.

The row is always written before anything reaches Redis, so whatever Redis loses, the rows re-drive it.
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from flask import current_app
from redis.exceptions import RedisError
from sqlalchemy import func, select, tuple_, update
from sqlalchemy.orm import defer, joinedload, selectinload

from api import queue
from api.record import joblog, locks
from api.record.status import (
    ACTIONS,
    ACTIVE,
    TERMINAL,
    Action,
    Actor,
    JobNotFound,
    JobStatus,
    TransitionResult,
    actions_for,
    create,
    transition,
    utcnow,
)
from api.record.tables import JobArtifact, JobEvent, JobMetricValue, TrainingJob, User
from api.service import catalogue, limits
from api.service.reconcile import cleanup_orphaned_training_jobs, ensure_enqueued
from api.stores import db, redis_connection
from api.web import auth, metrics
from trainq.checkpoints import list_checkpoints, newest_checkpoint
from trainq.context import check_artifact_name

log = logging.getLogger(__name__)

LIST_LEAVES_OUT = frozenset({"history"})  # grows with every epoch of every job; a single-job read has it


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


def get_job(job_id: str | uuid.UUID, check_owner: bool = False) -> TrainingJob:
    """The job's row; with ``check_owner``, only for its owner or an admin (``auth.Forbidden`` otherwise)."""
    job = db.session.get(TrainingJob, parse_id(job_id))
    if job is None:
        raise JobNotFound(str(job_id))
    if check_owner:
        auth.check_owner(job)
    return job


@dataclass(frozen=True)
class SubmitResult:
    job: TrainingJob
    enqueued: bool
    warning: str | None = None  # e.g. no live worker offers the task right now: it waits queued


class CloneSourceNotFound(LookupError):
    """``cloned_from`` names no job this user can read: a 404 naming the field."""


def submit(task: str, params: dict[str, Any] | None, name: str | None = None,
           max_attempts: int | None = None, owner: User | None = None, cloned_from: str | None = None) -> SubmitResult:
    """Check ``params`` against the task's published schema and ``owner``'s queued-jobs limit, insert the row as
    queued, then enqueue. Redis down: the row stays queued, with a reason, and the reconciler enqueues it later.
    ``owner`` defaults to the request's user, or, for an in-process caller, the first admin. ``cloned_from``: the
    job this one is a copy of ("Run again"), recorded on the row."""
    owner = owner or auth.current_user() or auth.first_admin()
    if owner is None:
        raise ValueError("a job needs an owner: create an admin first (flask --app api users create NAME --admin)")
    source = None
    if cloned_from is not None:
        try:
            source = get_job(cloned_from).id
        except JobNotFound:
            raise CloneSourceNotFound(f"cloned_from: no job {cloned_from}") from None
    spec, checked = catalogue.validate(task, params)
    limits.check_queued_jobs(owner)
    warning = None if spec.workers != 0 else (
        f"no live worker offers task {spec.name} right now; the job waits queued until one does")
    job_id = uuid.uuid4()
    job = TrainingJob(
        id=job_id,
        name=name or spec.name,
        owner_id=owner.id,
        task=spec.name,
        params=checked,
        attempts=1,
        max_attempts=max_attempts or current_app.config["MAX_ATTEMPTS"],
        rq_job_id=queue.rq_job_id_for(str(job_id), 1),
        cloned_from=source,
    )
    create(job, actor=Actor.API, reason="submitted", user_id=owner.id)
    try:
        ensure_enqueued(str(job_id), 1)
    except RedisError as exc:
        log.warning("job %s: not enqueued, Redis unreachable (%s); the reconciler will enqueue it", job_id, exc)
        _set_columns(job_id, status_reason=f"waiting for Redis: enqueue failed ({exc.__class__.__name__}); "
                     "the reconciler will enqueue it")
        return SubmitResult(get_job(job_id), enqueued=False, warning=warning)
    log.info("job %s: task %s submitted and enqueued", job_id, spec.name)
    return SubmitResult(get_job(job_id), enqueued=True, warning=warning)


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


def _like_pattern(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def list_jobs(where: JobFilter = JobFilter(), limit: int = 50, cursor: str | None = None) -> Page:
    """Newest first, keyset-paginated on (created_at, id) so deep pages cost the same as the first. Sorted by a
    metric, only the jobs that reported it, best first as asked, paged on (value, created_at, id)."""
    query = select(TrainingJob).options(defer(*(getattr(TrainingJob, name) for name in LIST_LEAVES_OUT)),
                                        selectinload(TrainingJob.owner))
    if where.id_prefix:
        query = query.where(TrainingJob.id.between(*id_range(where.id_prefix)))
    if where.owner is not None:
        query = query.where(TrainingJob.owner_id == select(User.id).where(User.name == where.owner).scalar_subquery())
    if where.status is not None:
        query = query.where(TrainingJob.status == where.status)
    if where.task is not None:
        query = query.where(TrainingJob.task == where.task)
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
    job = get_job(job_id)
    names = sorted({key for entry in job.history or [] for key in entry} - {"epoch", "step"})
    db.session.commit()
    return job, ["epoch", "step", *names], list(job.history or [])


def list_events(job_id: str | uuid.UUID) -> list[JobEvent]:
    job = get_job(job_id)
    return list(db.session.scalars(select(JobEvent).options(joinedload(JobEvent.actor_user))
                                   .where(JobEvent.job_id == job.id).order_by(JobEvent.id)))


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
    started = time.monotonic()
    job = get_job(job_id, check_owner=True)
    result = transition(job.id, JobStatus.CANCELLED, reason="cancelled by user", actor=Actor.API,
                        user_id=auth.current_user_id())
    if not result.changed:
        if result.job.status == JobStatus.CANCELLED:
            return CancelResult(result.job, rq_cancelled=False, already_cancelled=True)
        raise JobConflict(_refusal(result.job, "cancelled"), result.job)
    rq_cancelled, cleanup = False, None
    try:
        rq_cancelled = _stop_work(result.job)
        cleanup = cleanup_orphaned_training_jobs(actor=Actor.API).to_dict()
    except RedisError as exc:
        log.warning("job %s: cancelled in the database; RQ unreachable (%s)", job.id, exc)
    log.info("job %s: cancelled (rq_cancelled=%s)", job.id, rq_cancelled)
    metrics.observe("trainq_cancel_seconds", time.monotonic() - started)
    db.session.expire_all()
    return CancelResult(get_job(job.id), rq_cancelled=rq_cancelled, already_cancelled=False, cleanup=cleanup)


def removed_in_dashboard(rq_job_ids: list[str], what: str) -> list[str]:
    """RQ jobs an admin deleted in rq-dashboard (one, or a queue emptied): the rows they are the current attempt
    of end cancelled, saying so, so that the reconciler never brings them back as if Redis had lost them; a
    running one's training is stopped (its row refuses its writes from now on, and RQ is told to stop it)."""
    if not rq_job_ids:
        return []
    rows = db.session.scalars(select(TrainingJob).where(
        TrainingJob.rq_job_id.in_(rq_job_ids), TrainingJob.status.in_([s.value for s in ACTIVE]))).all()
    user = auth.current_user()
    reason = f"{what} in rq-dashboard by {user.name if user else '?'}"
    cancelled = []
    for job in rows:
        result = transition(job.id, JobStatus.CANCELLED, reason=reason, actor=Actor.DASHBOARD_SYNC,
                            expected_from=[job.status], attempt=job.attempts, user_id=user.id if user else None)
        if result.changed:
            cancelled.append(str(job.id))
            try:
                _stop_work(result.job)
            except RedisError as exc:
                log.warning("job %s: cancelled (deleted in rq-dashboard); RQ unreachable (%s)", job.id, exc)
    return cancelled


def requeued_in_dashboard(rq_job_ids: list[str]) -> tuple[list[str], dict[str, str]]:
    """Failed RQ jobs an admin requeued in rq-dashboard (one, or all of a queue's). RQ would run the old attempt
    again, which the row would refuse; what the admin meant is a new attempt: each row they are the current
    attempt of, if it is failed or cancelled, restarts (from its newest checkpoint when it has one) on a new
    attempt that is enqueued, saying so. Returns the jobs restarted, and why each other RQ job was not (the row
    is not failed or cancelled, the owner is over a limit): nothing changes for those."""
    user = auth.current_user()
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
                job = _restart(job, f"requeued in rq-dashboard by {user.name if user else '?'} ({how})",
                               resume_from=checkpoint).job
            except (JobConflict, limits.LimitExceeded) as exc:
                log.warning("job %s: requeued in rq-dashboard, not restarted: %s", job.id, exc)
                refused[rq_job_id] = str(getattr(exc, "message", exc))
                continue
            _enqueue_current(job)
            restarted.append(str(job.id))
    return restarted, refused


def _stop_work(job: TrainingJob) -> bool:
    """Stop whatever RQ runs or holds for the row's current attempt; True when RQ acted."""
    return queue.stop(job.rq_job_id or str(job.id), pid=job.worker_pid, hostname=job.hostname)


def _refusal(job: TrainingJob, action: str) -> str:
    if job.status in TERMINAL:
        return f"job {job.id} is already {job.status} and cannot be {action}"
    return f"job {job.id} is {job.status} and cannot be {action}"


# ---------------------------------------------------------------- recovery: force-start, resume, pause, mark-failed


@contextmanager
def job_lock(job_id: uuid.UUID) -> Iterator[None]:
    """One recovery action per job at a time, across API processes (a PostgreSQL advisory lock)."""
    key = locks.job_key(job_id)
    with db.engine.connect() as conn:
        locks.lock(conn, locks.Namespace.JOB_ACTION, key)
        try:
            yield
        finally:
            locks.unlock(conn, locks.Namespace.JOB_ACTION, key)


@dataclass(frozen=True)
class RestartResult:
    job: TrainingJob
    previous_status: str
    queue_position: int | None
    message: str


_FORCE_START_REFUSALS = {
    JobStatus.RUNNING: "it is running: cancel it first, or mark it failed if it is stuck",
    JobStatus.COMPLETED: "it completed: submit a new job to train again",
    JobStatus.PAUSED: "it is paused: resume it to continue from its checkpoint",
}


def _restart(job: TrainingJob, reason: str, resume_from: str | None) -> TransitionResult:
    """failed | cancelled | paused -> queued on a new attempt (the user's budget, not the retries'). It counts
    against the owner's queued jobs, as a submit does."""
    limits.check_queued_jobs(job.owner)
    result = transition(
        job.id, JobStatus.QUEUED, reason=reason, actor=Actor.API, expected_from=[job.status],
        attempt=job.attempts, restart=True, user_id=auth.current_user_id(),
        fields={"attempts": job.attempts + 1, "max_attempts": job.max_attempts + 1, "resume_from": resume_from,
                "error_message": None, "worker_pid": None,
                "rq_job_id": queue.rq_job_id_for(str(job.id), job.attempts + 1)},
    )
    if not result.changed:
        raise JobConflict(f"job {job.id} changed meanwhile; it is now {result.job.status}", result.job)
    return result


def _enqueue_current(job: TrainingJob) -> tuple[bool, int | None]:
    """Make sure the row's current attempt is in RQ; (whether this call enqueued it, its queue position)."""
    enqueued = ensure_enqueued(str(job.id), job.attempts)
    return enqueued, queue.get_queue(job.task).get_job_position(queue.rq_job_id_for(str(job.id), job.attempts))


def force_start(job_id: str | uuid.UUID) -> RestartResult:
    """Start a queued job whose RQ job is lost, or a failed/cancelled one afresh. Twice is still one run."""
    get_job(job_id, check_owner=True)
    with job_lock(parse_id(job_id)):
        job = get_job(job_id)
        previous = job.status
        if previous not in ACTIONS[Action.FORCE_START]:
            raise JobConflict(f"job {job.id} cannot be force-started: {_FORCE_START_REFUSALS[previous]}", job)
        catalogue.validate(job.task, job.params)  # still a task someone offers, with params its schema takes?
        if previous == JobStatus.QUEUED:
            enqueued, position = _enqueue_current(job)
            message = (f"Job {job.id} re-enqueued (its RQ job was lost)" if enqueued
                       else f"Job {job.id} is already queued in RQ")
        else:
            job = _restart(job, "force-started by user (fresh start)", resume_from=None).job
            _, position = _enqueue_current(job)
            message = f"Job {job.id} force-started from scratch (attempt {job.attempts})"
        log.info("job %s: %s", job.id, message)
        return RestartResult(get_job(job.id), previous, position, message)


def latest_checkpoint(job: TrainingJob) -> str | None:
    """The newest checkpoint of any attempt."""
    newest = newest_checkpoint(checkpoint_dir(job.id))
    return str(newest.path) if newest else None


def allowed_actions(job: TrainingJob) -> list[Action]:
    """The actions the status module allows now, to this request's user (none on another user's job, unless an
    admin); resume only with a checkpoint to resume from."""
    if not auth.can_act_on(job):
        return []
    needs_look = job.status in ACTIONS[Action.RESUME]
    return actions_for(job.status, has_checkpoint=needs_look and latest_checkpoint(job) is not None)


def resume(job_id: str | uuid.UUID) -> RestartResult:
    """Continue a paused (or failed/cancelled) job from its last checkpoint on a new attempt."""
    get_job(job_id, check_owner=True)
    with job_lock(parse_id(job_id)):
        job = get_job(job_id)
        previous = job.status
        if previous not in ACTIONS[Action.RESUME]:
            raise JobConflict(f"job {job.id} is {previous}; only a paused, failed or cancelled job can be resumed",
                              job)
        checkpoint = latest_checkpoint(job)
        if checkpoint is None:
            raise JobConflict(f"job {job.id} has no checkpoint to resume from; force-start it to train afresh", job)
        job = _restart(job, f"resumed by user from {Path(checkpoint).name}", resume_from=checkpoint).job
        _, position = _enqueue_current(job)
        message = f"Job {job.id} resumes from {Path(checkpoint).name} (attempt {job.attempts})"
        log.info("job %s: %s", job.id, message)
        return RestartResult(get_job(job.id), previous, position, message)


def pause(job_id: str | uuid.UUID) -> TrainingJob:
    """Ask a running job's task to stop (``ctx.should_stop()`` turns true with ``stop_reason`` "pause"); the row
    turns ``paused`` at its newest checkpoint when it has, or, with no checkpoint to resume from, ends
    cancelled with a reason that says so."""
    job = get_job(job_id, check_owner=True)
    if job.status not in ACTIONS[Action.PAUSE]:
        raise JobConflict(f"job {job.id} is {job.status}; only a running job can be paused", job)
    queue.request_pause(str(job.id), auth.current_user_id())
    log.info("job %s: pause requested", job.id)
    return job


def mark_failed(job_id: str | uuid.UUID, reason: str) -> TrainingJob:
    """For a stuck row: mark it failed with the user's reason, and stop whatever RQ still runs for it."""
    job = get_job(job_id, check_owner=True)
    message = f"marked failed by user: {reason}"
    result = transition(job.id, JobStatus.FAILED, reason=message, actor=Actor.API,
                        fields={"error_message": message}, user_id=auth.current_user_id())
    if not result.changed:
        raise JobConflict(_refusal(result.job, "marked failed"), result.job)
    try:
        _stop_work(result.job)
    except RedisError as exc:
        log.warning("job %s: marked failed; RQ unreachable (%s)", job.id, exc)
    log.info("job %s: %s", job.id, message)
    return get_job(job.id)


def logs(job_id: str | uuid.UUID, after: int, limit: int) -> dict[str, Any]:
    """The job's log lines numbered above ``after`` (PostgreSQL, then the live Redis stream)."""
    job = get_job(job_id)
    lines = joblog.read(job.id, after, limit, redis_connection.get(), db.session)
    db.session.commit()
    return {"lines": lines, "next_cursor": lines[-1]["n"] if lines else after, "truncated": job.log_truncated}


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
    folder = (Path(current_app.config["ARTIFACT_DIR"]) / str(job.id)).resolve()
    path = folder / name
    if artifact is None or not path.is_file() or path.is_symlink() or path.resolve().parent != folder:
        raise ArtifactNotFound(f"job {job.id} has no artifact {name!r}")
    return artifact, path


def run_cleanup(max_age_minutes: int | None = None) -> dict[str, Any]:
    """The admin endpoint's cleanup: like the reconciler's, with an optional max queue age for this pass."""
    age = timedelta(minutes=max_age_minutes) if max_age_minutes else None
    return cleanup_orphaned_training_jobs(actor=Actor.API, max_queue_age=age).to_dict()


def training_health() -> dict[str, Any]:
    """What the reconciler would fix right now (dry run), which running rows are stale, and counts."""
    report = cleanup_orphaned_training_jobs(dry_run=True)
    stale_before = utcnow() - timedelta(seconds=current_app.config["HEARTBEAT_TIMEOUT"])
    stale = db.session.scalars(
        select(TrainingJob.id).where(TrainingJob.status == JobStatus.RUNNING, TrainingJob.heartbeat_at < stale_before)
    ).all()
    running_db = db.session.scalar(select(func.count()).where(TrainingJob.status == JobStatus.RUNNING))
    db.session.commit()
    orphaned = sorted({job_id for ids in report.actions.values() for job_id in ids})
    return {
        "healthy": not orphaned and not stale,
        "orphaned_jobs": orphaned,
        "stale_jobs": sorted(str(i) for i in stale),
        "total_running_db": running_db,
        "total_running_rq": queue.running_count(),
        "workers": queue.live_workers(),
        "actions_pending": report.counts(),
    }
