"""What a user can do to a job: submit, cancel, pause, resume, force-start, mark failed. Each is checks + a
transition + a queue call. ``user`` is who asks (owners act on their own jobs, admins on any: checked here);
None is an in-process caller (the CLI, a benchmark), for which nothing is checked.

The row is always written before anything reaches Redis, so whatever Redis loses, the rows re-drive it.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import current_app
from redis.exceptions import RedisError
from sqlalchemy import update
from sqlalchemy.exc import SQLAlchemyError

from api import queue
from api.record import joblog, locks
from api.record.status import ACTIONS, TERMINAL, Action, Actor, JobNotFound, JobStatus, actions_for
from api.record.status_writer import TransitionResult, create, transition
from api.record.tables import TrainingJob, User
from api.scheduler import schedule
from api.service import capacity, catalogue, limits, reconcile, timings, users
from api.service.queries import get_job, latest_checkpoint, parse_id
from api.stores import db, redis_connection
from trainq.resources import resolve

log = logging.getLogger(__name__)

LIST_LEAVES_OUT = frozenset({"history"})  # grows with every epoch of every job; a single-job read has it


class JobConflict(Exception):
    """The job's status does not allow the action; ``job`` is the row as it is now."""

    def __init__(self, message: str, job: TrainingJob) -> None:
        super().__init__(message)
        self.message = message
        self.job = job


def _own(job_id: str | uuid.UUID, user: User | None) -> TrainingJob:
    """The job's row, if ``user`` may act on it (its owner or an admin): ``Forbidden`` otherwise."""
    job = get_job(job_id)
    users.check_owner(user, job)
    return job


def _id(user: User | None) -> int | None:
    return user.id if user is not None else None


@dataclass(frozen=True)
class SubmitResult:
    job: TrainingJob
    enqueued: bool
    warning: str | None = None  # e.g. no live worker offers the task right now: it waits queued


class CloneSourceNotFound(LookupError):
    """``cloned_from`` names no job this user can read: a 404 naming the field."""


def submit(task: str, params: dict[str, Any] | None, name: str | None = None,
           max_attempts: int | None = None, owner: User | None = None, cloned_from: str | None = None,
           resources: dict[str, Any] | None = None, fail_on_nan: bool | None = None,
           trial: tuple[uuid.UUID, int] | None = None) -> SubmitResult:
    """Check ``params`` against the task's published schema, ``resources`` against the hosts offering it, and
    ``owner``'s queued-jobs limit; insert the row as queued; then a scheduling pass places it (and enqueues it on
    its host's queue) if it fits somewhere now. Redis down: the row stays queued, with a reason, and the
    reconciler enqueues it later. ``owner`` defaults to the first admin (for in-process callers). ``cloned_from``:
    the job this one is a copy of ("Run again"), recorded on the row. ``resources``: what the submit asks
    ({gpus, cpus, memory_gb}, any of them), before the task's declared defaults and ``trainq.resources.DEFAULTS``.
    ``fail_on_nan``: end failed when an objective metric is not finite (None: as the task says).
    ``trial``: (sweep id, trial number) of a sweep's trial (``api.service.sweep_driver``), written in the same INSERT
    (a unique pair: a trial is never submitted twice)."""
    owner = owner or users.first_admin()
    if owner is None:
        raise ValueError("a job needs an owner: create an admin first (flask --app api users create NAME --admin)")
    source = None
    if cloned_from is not None:
        try:
            source = get_job(cloned_from).id
        except JobNotFound:
            raise CloneSourceNotFound(f"cloned_from: no job {cloned_from}") from None
    spec, checked = catalogue.validate(task, params)
    needs = resolve(resources, spec.resources)
    capacity.refuse_impossible(spec.name, needs)
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
        metric=spec.metric,
        metric_mode=spec.metric_mode,
        resources=needs,
        fail_on_nan=fail_on_nan,
        sweep_id=trial[0] if trial else None,
        trial_number=trial[1] if trial else None,
    )
    create(job, actor=Actor.API, reason="submitted", user_id=owner.id)
    report = _schedule(busy_ok=True)  # the row's insert woke the reconciler
    if report is not None and str(job_id) in report.enqueue_failed:
        _set_columns(job_id, status_reason="waiting for Redis: placed, but the enqueue failed; the reconciler "
                     "will enqueue it")
        return SubmitResult(get_job(job_id), enqueued=False, warning=warning)
    log.info("job %s: task %s submitted (%s)", job_id, spec.name,
             "placed" if report and str(job_id) in report.placed else "waiting")
    db.session.expire_all()
    return SubmitResult(get_job(job_id), enqueued=True, warning=warning)


def _schedule(busy_ok: bool = False) -> schedule.Report | None:
    """A scheduling pass now (the job just written, a job just restarted). Its failure is only logged: the row is
    written, and the reconciler's passes place it later."""
    try:
        return schedule.schedule(busy_ok=busy_ok)
    except (SQLAlchemyError, RedisError) as exc:
        log.warning("scheduling pass failed (%s); the reconciler's next pass places the job", exc.__class__.__name__)
        return None


def _set_columns(job_id: uuid.UUID, **values: Any) -> None:
    """Write non-status columns (never ``status``: that is ``status.transition``'s alone)."""
    assert "status" not in values
    db.session.execute(update(TrainingJob).where(TrainingJob.id == job_id).values(**values))
    db.session.commit()
    db.session.expire_all()


@dataclass(frozen=True)
class CancelResult:
    job: TrainingJob
    rq_cancelled: bool
    already_cancelled: bool
    cleanup: dict[str, Any] | None = None  # the report of the cleanup run that followed


def cancel(job_id: str | uuid.UUID, user: User | None = None) -> CancelResult:
    """Mark the row cancelled (conditionally), stop the work in RQ, then run the cleanup.

    The row goes first: from then on every write of the running attempt is refused, so the horse stops
    itself at its next progress write even if Redis cannot deliver the stop command.
    """
    started = time.monotonic()
    job = _own(job_id, user)
    result = transition(job.id, JobStatus.CANCELLED, reason="cancelled by user", actor=Actor.API,
                        user_id=_id(user))
    if not result.changed:
        if result.job.status == JobStatus.CANCELLED:
            return CancelResult(result.job, rq_cancelled=False, already_cancelled=True)
        raise JobConflict(_refusal(result.job, "cancelled"), result.job)
    rq_cancelled, cleanup, reached = False, None, True
    try:
        rq_cancelled = stop_work(result.job)
    except RedisError as exc:
        reached = False
        log.warning("job %s: cancelled in the database; RQ unreachable (%s)", job.id, exc)
    note_in_log(result.job, "cancelled by user", user, result.from_status)  # once its horse has stopped
    if reached:
        try:
            cleanup = reconcile.run_pass(actor=Actor.API).to_dict()
        except RedisError as exc:
            log.warning("job %s: cancelled in the database; RQ unreachable (%s)", job.id, exc)
    log.info("job %s: cancelled (rq_cancelled=%s)", job.id, rq_cancelled)
    timings.observe("trainq_cancel_seconds", time.monotonic() - started)
    db.session.expire_all()
    return CancelResult(get_job(job.id), rq_cancelled=rq_cancelled, already_cancelled=False, cleanup=cleanup)


_LOG_FORMAT = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")  # as the horse's lines


def note_in_log(job: TrainingJob, reason: str, user: User | None, was: JobStatus | str | None,
                actor: Actor = Actor.API) -> None:
    """Write a stop into the job's own log, with who did it (the user, and through what) and why: its log never
    just ends. Call it once the training has stopped (``stop_work``): the horse numbers its own lines."""
    who = f"{user.name} ({actor.value})" if user is not None else actor.value
    stopped = "; its training was stopped" if was == JobStatus.RUNNING else ""
    text = f"job {job.id}: {job.status} by {who}: {reason}{stopped}"
    line = _LOG_FORMAT.format(log.makeRecord(log.name, logging.INFO, __file__, 0, text, (), None))
    try:
        redis = redis_connection.get()
    except RedisError:
        redis = None
    joblog.append(str(job.id), line, redis, db.engine, job.attempts)


def stop_work(job: TrainingJob) -> bool:
    """Stop whatever RQ runs or holds for the row's current attempt; True when RQ acted."""
    return queue.stop(job.rq_job_id or str(job.id), pid=job.worker_pid, hostname=job.hostname)


def _refusal(job: TrainingJob, action: str) -> str:
    if job.status in TERMINAL:
        return f"job {job.id} is already {job.status} and cannot be {action}"
    return f"job {job.id} is {job.status} and cannot be {action}"


# ---------------------------------------------------------------- recovery: force-start, resume, pause, mark-failed


@contextmanager
def job_lock(job_id: uuid.UUID) -> Iterator[None]:
    """One restart of a job at a time (force-start, resume, an rq-dashboard requeue), across API processes (a
    PostgreSQL advisory lock, ``JOB_ACTION``). Pause (a request the running task reads) and mark-failed (one
    conditional write) take none."""
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


def restart(job: TrainingJob, reason: str, resume_from: str | None, user: User | None) -> TransitionResult:
    """failed | cancelled | paused -> queued on a new attempt (the user's budget, not the retries'). It counts
    against the owner's queued jobs, as a submit does."""
    limits.check_queued_jobs(job.owner)
    result = transition(
        job.id, JobStatus.QUEUED, reason=reason, actor=Actor.API, expected_from=[job.status],
        attempt=job.attempts, restart=True, user_id=_id(user),
        fields={"attempts": job.attempts + 1, "max_attempts": job.max_attempts + 1, "resume_from": resume_from,
                "error_message": None, "worker_pid": None,
                "rq_job_id": queue.rq_job_id_for(str(job.id), job.attempts + 1)},
    )
    if not result.changed:
        raise JobConflict(f"job {job.id} changed meanwhile; it is now {result.job.status}", result.job)
    return result


def enqueue_current(job: TrainingJob) -> tuple[bool, int | None]:
    """Make sure the row's current attempt is placed and in RQ; (whether it is enqueued now, its position in its
    host's queue: None while it waits to be placed)."""
    report = _schedule()
    enqueued = bool(report and str(job.id) in report.placed) or queue.ensure_enqueued(str(job.id), job.attempts)
    target = queue.placed_queue(str(job.id), job.attempts)
    db.session.commit()
    if target is None:
        return enqueued, None
    return enqueued, queue.get_queue(target).get_job_position(queue.rq_job_id_for(str(job.id), job.attempts))


def force_start(job_id: str | uuid.UUID, user: User | None = None) -> RestartResult:
    """Start a queued job whose RQ job is lost, or a failed/cancelled one afresh. Twice is still one run."""
    _own(job_id, user)
    with job_lock(parse_id(job_id)):
        job = get_job(job_id)
        previous = job.status
        if previous not in ACTIONS[Action.FORCE_START]:
            raise JobConflict(f"job {job.id} cannot be force-started: {_FORCE_START_REFUSALS[previous]}", job)
        catalogue.validate(job.task, job.params)  # still a task someone offers, with params its schema takes?
        if previous == JobStatus.QUEUED:
            enqueued, position = enqueue_current(job)
            message = (f"Job {job.id} re-enqueued (its RQ job was lost)" if enqueued
                       else f"Job {job.id} is already queued in RQ")
        else:
            job = restart(job, "force-started by user (fresh start)", resume_from=None, user=user).job
            _, position = enqueue_current(job)
            message = f"Job {job.id} force-started from scratch (attempt {job.attempts})"
        log.info("job %s: %s", job.id, message)
        return RestartResult(get_job(job.id), previous, position, message)


def allowed_actions(job: TrainingJob, user: User | None) -> list[Action]:
    """The actions the status module allows now, to ``user`` (none on another user's job, unless an admin); resume
    only with a checkpoint to resume from."""
    if not users.can_act_on(user, job):
        return []
    needs_look = job.status in ACTIONS[Action.RESUME]
    return actions_for(job.status, has_checkpoint=needs_look and latest_checkpoint(job) is not None)


def resume(job_id: str | uuid.UUID, user: User | None = None) -> RestartResult:
    """Continue a paused (or failed/cancelled) job from its last checkpoint on a new attempt."""
    _own(job_id, user)
    with job_lock(parse_id(job_id)):
        job = get_job(job_id)
        previous = job.status
        if previous not in ACTIONS[Action.RESUME]:
            raise JobConflict(f"job {job.id} is {previous}; only a paused, failed or cancelled job can be resumed",
                              job)
        checkpoint = latest_checkpoint(job)
        if checkpoint is None:
            raise JobConflict(f"job {job.id} has no checkpoint to resume from; force-start it to train afresh", job)
        job = restart(job, f"resumed by user from {Path(checkpoint).name}", resume_from=checkpoint, user=user).job
        _, position = enqueue_current(job)
        message = f"Job {job.id} resumes from {Path(checkpoint).name} (attempt {job.attempts})"
        log.info("job %s: %s", job.id, message)
        return RestartResult(get_job(job.id), previous, position, message)


def pause(job_id: str | uuid.UUID, user: User | None = None) -> TrainingJob:
    """Ask a running job's task to stop (``ctx.should_stop()`` turns true with ``stop_reason`` "pause"); the row
    turns ``paused`` at its newest checkpoint when it has, or, with no checkpoint to resume from, ends
    cancelled with a reason that says so."""
    job = _own(job_id, user)
    if job.status not in ACTIONS[Action.PAUSE]:
        raise JobConflict(f"job {job.id} is {job.status}; only a running job can be paused", job)
    queue.request_pause(str(job.id), _id(user))
    log.info("job %s: pause requested", job.id)
    return job


def mark_failed(job_id: str | uuid.UUID, reason: str, user: User | None = None) -> TrainingJob:
    """For a stuck row: mark it failed with the user's reason, and stop whatever RQ still runs for it."""
    job = _own(job_id, user)
    message = f"marked failed by user: {reason}"
    result = transition(job.id, JobStatus.FAILED, reason=message, actor=Actor.API,
                        fields={"error_message": message}, user_id=_id(user))
    if not result.changed:
        raise JobConflict(_refusal(result.job, "marked failed"), result.job)
    try:
        stop_work(result.job)
    except RedisError as exc:
        log.warning("job %s: marked failed; RQ unreachable (%s)", job.id, exc)
    note_in_log(result.job, message, user, result.from_status)
    log.info("job %s: %s", job.id, message)
    return get_job(job.id)
