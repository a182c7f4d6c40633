"""Reconciliation: make every non-terminal row agree with what RQ and the heartbeats say, in one batched pass.

``decide`` is the whole mapping as a pure function of a row and RQ's view of it; ``run_pass`` reads the
rows (one query) and RQ (pipelined), then applies each decision as a conditional, attempt-guarded write.
"""

from __future__ import annotations

import functools
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from flask import current_app
from redis.exceptions import RedisError
from sqlalchemy import DateTime, Float, String, bindparam, cast, extract, func, literal_column, select

from api import queue
from api.queue import RQState
from api.record import locks, outcome
from api.record.status import ACTIVE, Actor, JobStatus
from api.record.status_writer import transition
from api.record.tables import TrainingJob
from api.scheduler.schedule import schedule
from api.service import timings
from api.stores import db

log = logging.getLogger(__name__)

CANCELLED_IN_RQ = "cancelled in RQ (e.g. from rq-dashboard)"
DELETED_IN_RQ = ("RQ job deleted from Redis by hand (rq-dashboard, the rq command or a Redis client), not lost by "
                 "Redis; not re-enqueued")
ENDED_SESSION = "worker lost (the attempt's database session ended: its process died)"
_ENDED_IN_RQ = ("finished", "failed", "stopped", "canceled")  # RQ's own word on how it ended comes first
_LOST = ("worker_lost", "retried")


class RowView(NamedTuple):
    """The columns of a row that reconciliation reads, with its ages at the pass's ``now`` (a NamedTuple:
    a pass builds one per active row)."""

    id: str
    status: JobStatus
    attempts: int
    max_attempts: int
    rq_job_id: str | None
    waited_s: float  # since queued_at (or created_at)
    heartbeat_age_s: float | None
    checkpoint_path: str | None
    name: str = ""
    # a running attempt's own database session (api.record.locks): True while it holds its liveness lock, False once
    # PostgreSQL freed it (the process died), None when unknown (no lock recorded, or the server restarted)
    session: bool | None = None
    # a queued row: whether the scheduler placed its current attempt (a reservation); an unplaced one waits for
    # devices, which is the scheduler's to mend, never a loss
    placed: bool | None = None


@dataclass(frozen=True)
class Policy:
    enqueue_grace_s: float
    heartbeat_timeout_s: float
    max_queue_age_s: float

    @classmethod
    def from_config(cls, config: dict[str, Any], max_queue_age: timedelta | None = None) -> Policy:
        return cls(
            enqueue_grace_s=config["ENQUEUE_GRACE"],
            heartbeat_timeout_s=config["HEARTBEAT_TIMEOUT"],
            max_queue_age_s=max_queue_age.total_seconds() if max_queue_age else config["MAX_QUEUE_AGE"],
        )


@dataclass(frozen=True)
class Decision:
    action: str  # report key
    to: JobStatus | None  # None: enqueue again, no status change
    reason: str
    retry: bool = False  # running -> queued with a new attempt, resuming from the checkpoint


def _lost(row: RowView, why: str) -> Decision:
    """A running attempt whose process is gone: retried from its checkpoint if it may, else failed."""
    if row.checkpoint_path and row.attempts < row.max_attempts:
        return Decision(
            "retried", JobStatus.QUEUED,
            f"{why}; re-queued to resume from {row.checkpoint_path} (attempt {row.attempts + 1} of "
            f"{row.max_attempts})", retry=True,
        )
    return Decision("worker_lost", JobStatus.FAILED, why)


def decide(row: RowView, state: RQState | None, policy: Policy) -> Decision | None:
    """What to do with one non-terminal row given RQ's view of it; None when they agree.

    A running attempt's own database session, when known, settles whether its process lives: held, it is not
    lost whatever RQ and the heartbeats say (a worker that looks dead, a Redis that lost the job); ended, it
    is lost at once, unless its heartbeat key in Redis is fresh (a process cut off from PostgreSQL only). RQ's own
    word on how the job ended still comes first."""
    if row.status == JobStatus.QUEUED and row.placed is False and not (state and state.status):
        return None  # waits for devices: the scheduler's (nothing of it is in RQ to mend)
    decision = _by_rq_and_heartbeats(row, state, policy)
    if row.status == JobStatus.RUNNING and row.session and state and state.status == "failed":
        # RQ's "failed" for a started job whose attempt still holds its lock is RQ's abandoned-job clean-up (any
        # worker's, by its own wall clock: a skewed one expires healthy jobs), not the job's end: the attempt
        # lives, and writes its own end. A task that raised writes failed itself first; a killed horse lets go.
        return None
    if row.status != JobStatus.RUNNING or row.session is None or (state and state.status in _ENDED_IN_RQ):
        return decision
    if row.session or (state and state.job_beat_fresh):  # held, or cut off from PostgreSQL but beating
        return None if decision and decision.action in _LOST else decision
    return decision or _lost(row, ENDED_SESSION)


def _by_rq_and_heartbeats(row: RowView, state: RQState | None, policy: Policy) -> Decision | None:
    waited = row.waited_s
    if row.rq_job_id is None:
        if row.status == JobStatus.QUEUED:
            return Decision("enqueued", None, "never reached RQ; enqueued by the reconciler") \
                if waited >= policy.enqueue_grace_s else None
        return Decision("no_rq_id", JobStatus.FAILED, "no RQ job id recorded")
    if state is not None and state.status is None and state.removed:
        # gone while its enqueue marker stays: deleted on purpose, which means stop it (a running attempt stops
        # itself at its next write, which the cancelled row refuses)
        return Decision("deleted", JobStatus.CANCELLED, DELETED_IN_RQ)
    if state is None or state.status is None:  # never arrived, or Redis lost it (restart, flush)
        if row.status == JobStatus.QUEUED:
            if waited < policy.enqueue_grace_s:
                return None  # its submitter may still be enqueueing it
            if waited < policy.max_queue_age_s:
                return Decision("requeued", None, "RQ job not found (Redis lost it, or it never arrived); "
                                                  "re-enqueued under the same id")
            return Decision("orphaned", JobStatus.FAILED, "orphaned: RQ job not found")
        if (state and state.job_beating) or _beating(row, policy):
            return None  # the attempt still runs; it will write its own end
        return _lost(row, "worker lost (RQ job not found, no heartbeat)")
    rq_status = state.status
    if rq_status == "finished":
        if row.status == JobStatus.RUNNING:
            return Decision("completed", JobStatus.COMPLETED, "RQ job finished")
        return Decision("failed", JobStatus.FAILED, "RQ job finished without the job being started")
    if rq_status == "failed":
        reason = f"RQ job failed: {state.error or 'no error text in RQ'}"
        return _lost(row, reason) if row.status == JobStatus.RUNNING else Decision("failed", JobStatus.FAILED, reason)
    if rq_status in ("stopped", "canceled"):
        return Decision("cancelled", JobStatus.CANCELLED, CANCELLED_IN_RQ)
    if rq_status == "started" and state.worker_alive is False:
        if row.status == JobStatus.QUEUED:  # the worker died between taking the job and starting it
            return Decision("requeued", None, "worker lost before the job started; re-enqueued")
        return _lost(row, "worker lost")
    if row.status == JobStatus.RUNNING and rq_status != "started" and not _beating(row, policy):
        return _lost(row, f"worker lost (RQ job is {rq_status}, no heartbeat)")
    return None


def _beating(row: RowView, policy: Policy) -> bool:
    return row.heartbeat_age_s is not None and row.heartbeat_age_s <= policy.heartbeat_timeout_s


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


def _age_s(column: Any) -> Any:
    """Seconds from ``column`` to the pass's ``now``, computed by PostgreSQL (parsing 10k timestamps in
    Python is slow)."""
    return cast(extract("epoch", bindparam("now", type_=DateTime(timezone=True)) - column), Float)


# Whether a running attempt's session still holds its liveness lock: one scan of pg_locks for the pass (an
# uncorrelated IN), unknown for a lock taken before the server last started (a restart frees every lock).
_PLACED = literal_column(
    "EXISTS (SELECT 1 FROM reservations r WHERE r.job_id = training_jobs.id AND r.attempt = training_jobs.attempts)")
_SESSION = literal_column(
    "CASE WHEN training_jobs.status <> 'running' OR training_jobs.liveness_key IS NULL"
    " OR training_jobs.liveness_since IS NULL OR training_jobs.liveness_since <= pg_postmaster_start_time()"
    f" THEN NULL ELSE training_jobs.liveness_key IN ({locks.held_keys_sql(locks.Namespace.ATTEMPT)}) END"
)


@functools.cache
def _active_rows_query(ended_sessions_only: bool = False) -> Any:
    query = select(
        cast(TrainingJob.id, String), TrainingJob.status, TrainingJob.attempts, TrainingJob.max_attempts,
        TrainingJob.rq_job_id, _age_s(func.coalesce(TrainingJob.queued_at, TrainingJob.created_at)),
        _age_s(TrainingJob.heartbeat_at), TrainingJob.checkpoint_path, TrainingJob.name, _SESSION, _PLACED,
    )
    if ended_sessions_only:  # the cheap check between passes: running rows whose session is gone
        return query.where(TrainingJob.status == JobStatus.RUNNING.value, _SESSION.is_(False))
    return query.where(TrainingJob.status.in_([s.value for s in ACTIVE]))


def active_rows(now: datetime, ended_sessions_only: bool = False) -> list[RowView]:
    # Core, not the ORM session's execute: plain columns need none of the ORM's row loading.
    rows = db.session.connection().execute(_active_rows_query(ended_sessions_only), {"now": now}).all()
    db.session.commit()
    return [RowView._make(r) for r in rows]


def run_pass(
    now: datetime | None = None,
    dry_run: bool = False,
    actor: Actor = Actor.RECONCILER,
    max_queue_age: timedelta | None = None,
    ended_sessions_only: bool = False,
) -> Report:
    """Check every non-terminal row against RQ in batch and fix each mismatch with a conditional write.
    ``ended_sessions_only``: only the running rows whose attempt's database session has ended (the check the
    reconciler makes every ``LIVENESS_INTERVAL`` between passes; usually it reads no row).

    Safe beside itself and live jobs: a row that changed since it was read is left alone (``raced``).
    """
    started = time.monotonic()
    now = now or db_now()  # ages on the clock that wrote them (heartbeat_at, queued_at), never a host's
    policy = Policy.from_config(current_app.config, max_queue_age)
    rows = active_rows(now, ended_sessions_only)
    if ended_sessions_only and not rows:
        return Report()
    states = queue.fetch_states(r.rq_job_id for r in rows if r.rq_job_id)
    ended = [r.rq_job_id for r in rows if r.session is False and r.rq_job_id]
    for rq_job_id, fresh in queue.fresh_beats(ended).items():
        states[rq_job_id] = states.get(rq_job_id, RQState(None))._replace(job_beat_fresh=fresh)
    report = Report(checked=len(rows), dry_run=dry_run)

    for row in rows:
        decision = decide(row, states.get(row.rq_job_id) if row.rq_job_id else None, policy)
        if decision is None:
            continue
        if row.status == JobStatus.RUNNING and decision.to in (JobStatus.FAILED, JobStatus.QUEUED) \
                and _finished_outcome(row):  # it finished; only the record of it was missed
            decision = Decision("completed", JobStatus.COMPLETED, outcome.RECORDED_FROM_FILE)
        job_id = row.id
        if dry_run:
            report.actions[decision.action].append(job_id)
            continue
        changed = _apply(row, decision, actor, now)
        report.actions[decision.action if changed else "raced"].append(job_id)
        log.info("job %s: %s (%s)%s", job_id, decision.action, decision.reason, "" if changed else ", raced")

    if report.actions.get("retried"):  # their new attempts wait to be placed: the scheduler's, now
        try:
            schedule()
        except RedisError as exc:
            log.warning("reconcile: scheduling the retried jobs failed (%s); the next pass does", exc)
    report.duration_s = time.monotonic() - started
    if not dry_run:
        timings.observe("trainq_reconcile_pass_seconds", report.duration_s)
    log.log(logging.INFO if report.actions else logging.DEBUG, "reconcile: %s", report.summary())
    return report


def db_now() -> datetime:
    """PostgreSQL's ``now()``: the one clock ages are written and compared on."""
    now = db.session.scalar(select(func.now()))
    db.session.commit()
    return now


def _apply(row: RowView, decision: Decision, actor: Actor, now: datetime) -> bool:
    if decision.to is None:
        return queue.ensure_enqueued(row.id, row.attempts, decision.reason)
    fields: dict[str, Any] = {}
    if decision.to == JobStatus.FAILED:
        fields["error_message"] = decision.reason
    if decision.retry:
        fields.update(attempts=row.attempts + 1, resume_from=row.checkpoint_path, worker_pid=None,
                      rq_job_id=queue.rq_job_id_for(row.id, row.attempts + 1))
    kept = _finished_outcome(row) if decision.to == JobStatus.COMPLETED else None
    if decision.to == JobStatus.COMPLETED:
        fields.update(_final_result(row.rq_job_id) or (outcome.completion_fields(kept) if kept else {}))
        if kept and kept.get("artifacts"):  # rows the attempt could not write while PostgreSQL was down
            outcome.upsert_artifacts([outcome.artifact_row(row.id, row.attempts, a) for a in kept["artifacts"]])
    if decision.action in ("cancelled", "deleted"):
        actor = Actor.DASHBOARD_SYNC  # the stop was made in RQ; this pass only copies it to the row
    result = transition(
        row.id, decision.to, reason=decision.reason, actor=actor,
        expected_from=[row.status], attempt=row.attempts, fields=fields, now=now,
    )
    if result.changed and kept:
        outcome.remove_outcome(current_app.config["CHECKPOINT_DIR"], row.id, row.attempts)
    return result.changed


def _finished_outcome(row: RowView) -> dict[str, Any] | None:
    """The attempt's outcome file (``api.record.outcome``), when it says the attempt completed."""
    kept = outcome.read_outcome(current_app.config["CHECKPOINT_DIR"], row.id, row.attempts)
    return kept if kept and kept.get("status") == JobStatus.COMPLETED.value else None


def _final_result(job_id: str) -> dict[str, Any]:
    """The job function's return value, kept by RQ, for a completion PostgreSQL missed."""
    value = queue.return_value(job_id)
    if not isinstance(value, dict) or "metrics" not in value:
        return {}
    metrics = value["metrics"]
    return {"metrics": metrics, "epoch": value.get("epochs_completed"), "step": value.get("steps"),
            "checkpoint_path": value.get("checkpoint_path")}


def run_pass_now(max_age_minutes: int | None = None) -> dict[str, Any]:
    """The admin endpoint's pass (``POST /api/training/cleanup``): the reconciler's, with an optional max queue age
    for this pass."""
    age = timedelta(minutes=max_age_minutes) if max_age_minutes else None
    return run_pass(actor=Actor.API, max_queue_age=age).to_dict()


def health() -> dict[str, Any]:
    """What the reconciler would fix right now (dry run), which running rows are stale, and counts."""
    report = run_pass(dry_run=True)
    # the database's clock, on which heartbeat_at is written
    stale_before = func.now() - timedelta(seconds=current_app.config["HEARTBEAT_TIMEOUT"])
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
