"""The scheduling pass: read the live hosts, what their reservations hold and which queued jobs wait unplaced;
``placement.plan`` decides; its reservations (and GPU holds) are written in one transaction, under the scheduler's
lock, before anything is enqueued; then each placed job is enqueued on its host's queue.

One pass runs at a time (``locks.Namespace.SCHEDULER``, transaction-scoped), wherever it is called from: the API
right after a submit, an agent right after a job of its own ends, the reconciler at every wake-up (a NOTIFY on
``trainq_scheduler`` from the reservations' trigger, or its period). A pass that waits for the lock sees what the
one before it wrote. Whatever a pass misses (Redis down at the enqueue, a host gone), the next one, or the
reconciler, mends: the reservation is the record.

A submit and a job's end have already woken the reconciler (their commit sent the NOTIFY), whose pass begins after
that commit and so sees what they changed: their own pass (``busy_ok``) is then only the quicker of two, and is
skipped when another pass holds the lock and a reconciler is active, instead of queueing behind it to find nothing
left to place. With no active reconciler it waits for the lock as every other pass does.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from flask import current_app
from redis.exceptions import RedisError
from sqlalchemy import and_, case, extract, func, insert, or_, select, text, update

from api import queue
from api.record import locks
from api.record.status import JobStatus
from api.record.tables import GpuHold, Host, Reservation, TrainingJob
from api.scheduler import hosts as host_registry
from api.scheduler.placement import HostState, Placement, Waiting, plan
from api.stores import db
from trainq.resources import resolve

log = logging.getLogger(__name__)


@dataclass
class Report:
    placed: list[str] = field(default_factory=list)
    waiting: int = 0
    enqueue_failed: list[str] = field(default_factory=list)
    duration_s: float = 0.0
    skipped: bool = False  # another pass held the lock, and the active reconciler's next pass places what waits

    def to_dict(self) -> dict[str, Any]:
        return {"placed": self.placed, "waiting": self.waiting, "enqueue_failed": self.enqueue_failed,
                "duration_s": round(self.duration_s, 4)}


def _hosts() -> list[HostState]:
    """The live hosts, less what their reservations hold. A host offers nothing for now when its workers take no
    jobs (its storage is full or unwritable: ``queue.paused_workers``), or when its agent has not renewed its
    lease (``seen_at``, every second) for ``LEASE_FENCE``: cut off from PostgreSQL, its session not dropped yet
    (that takes about 11 s), it would only be given jobs it cannot take, as the jobs it was running move away."""
    offered = host_registry.offered_tasks()
    unheard_after = timedelta(seconds=current_app.config["LEASE_FENCE"])
    live = db.session.execute(select(Host, (func.now() - Host.seen_at > unheard_after).label("unheard"))
                              .where(Host.id.in_(text(host_registry.live_host_ids_sql())))).all()
    try:
        paused = set(queue.paused_workers(name for h, _ in live
                                          for name in queue.possible_worker_names(h.name, h.slots)))
    except RedisError:
        paused = set()

    def offers(host: Any, unheard: bool) -> Any:
        if queue.any_worker_of(host.name, paused) or unheard:
            return ()
        return offered.get(host.name, ())

    states = {h.id: HostState.empty(h.id, h.name, h.cpus, h.memory_mb, h.slots, [g.idx for g in h.gpus],
                                    offers(h, unheard))
              for h, unheard in live}
    for r in db.session.scalars(select(Reservation).where(Reservation.host_id.in_(list(states)))):
        states[r.host_id].take(r.gpus, r.cpu_ids, r.memory_mb)
    return list(states.values())


def _release_on_lost_hosts() -> None:
    """A job placed on a host whose agent is gone before its worker took it waits again, to be placed anew (its RQ
    job, left on the dead host's queue, moves with it: ``queue.ensure_enqueued``). A running job's reservation is
    the attempt's: it ends when the reconciler finds the attempt lost."""
    session = db.session
    live = host_registry.live_host_ids_sql()
    # the rows locked (FOR SHARE) and still queued: a worker of that host that takes the job at this moment (its
    # agent's session lost, its workers alive) either moved it to running first, and its reservation stays, or
    # waits for this pass, and finds it gone. Without the lock a job went running and lost its reservation after
    # (found by the soak test), and its devices could be given again.
    session.execute(text(
        "WITH lost AS (SELECT j.id FROM training_jobs j JOIN reservations r ON r.job_id = j.id"
        f" WHERE j.status = 'queued' AND r.host_id NOT IN ({live}) ORDER BY j.id FOR SHARE OF j)"
        f" DELETE FROM reservations r USING lost WHERE r.job_id = lost.id AND r.host_id NOT IN ({live})"))


def _waiting() -> list[Waiting]:
    placed = select(Reservation.job_id).where(and_(Reservation.job_id == TrainingJob.id,
                                                   Reservation.attempt == TrainingJob.attempts))
    waited = extract("epoch", func.now() - func.coalesce(TrainingJob.queued_at, TrainingJob.created_at))
    rows = db.session.execute(
        select(TrainingJob.id, TrainingJob.attempts, TrainingJob.task, TrainingJob.resources, TrainingJob.hold_host_id,
               waited.label("waited"))
        .where(TrainingJob.status == JobStatus.QUEUED, ~placed.exists())
        .order_by(func.coalesce(TrainingJob.queued_at, TrainingJob.created_at), TrainingJob.id)).all()
    waiting = []
    for row in rows:
        need = resolve(row.resources)
        memory = int(need["memory_gb"] * 1024) if need.get("memory_gb") else None
        waiting.append(Waiting(str(row.id), row.attempts, row.task, need["gpus"], need["cpus"], memory,
                               float(row.waited), row.hold_host_id))
    return waiting


def _still_queued(placements: list[Placement]) -> set[str]:
    """Lock the rows of the jobs a plan placed (``FOR SHARE``, in id order) and return those still queued on the
    attempt it placed. A status change (a cancel) that raced the plan is either seen here, and its job left out, or
    waits for this pass's commit, and its trigger then releases the reservation the pass wrote: without the lock, a
    cancel committed between the plan's read and the reservation's insert left a reservation to a cancelled row,
    found by the soak test (tests/e2e/test_gpu_soak.py)."""
    if not placements:
        return set()
    rows = db.session.execute(
        select(TrainingJob.id, TrainingJob.attempts)
        .where(TrainingJob.id.in_([uuid.UUID(p.job_id) for p in placements]), TrainingJob.status == JobStatus.QUEUED)
        .order_by(TrainingJob.id).with_for_update(read=True)).all()
    live = {(str(r.id), r.attempts) for r in rows}
    return {p.job_id for p in placements if (p.job_id, p.attempt) in live}


def _write(placement: Placement) -> None:
    job_id = uuid.UUID(placement.job_id)
    db.session.execute(insert(Reservation).values(
        job_id=job_id, host_id=placement.host_id, attempt=placement.attempt, gpus=list(placement.gpus),
        cpus=placement.cpus, cpu_ids=list(placement.cpu_ids), memory_mb=placement.memory_mb))
    if placement.gpus:
        db.session.execute(insert(GpuHold), [{"host_id": placement.host_id, "gpu": gpu, "job_id": job_id}
                                             for gpu in placement.gpus])


def _lock(session: Any, busy_ok: bool) -> bool:
    """Take the scheduler's lock for this transaction; with ``busy_ok``, False instead of waiting when another
    pass holds it and a reconciler is active (its LISTEN has, or its first pass will, see the caller's change)."""
    if busy_ok:
        if locks.try_lock_for_transaction(session, locks.Namespace.SCHEDULER, locks.SCHEDULER_KEY):
            return True
        if session.scalar(text(locks.held_sql(locks.Namespace.RECONCILER, locks.RECONCILER_KEY))):
            return False
    locks.lock_for_transaction(session, locks.Namespace.SCHEDULER, locks.SCHEDULER_KEY)
    return True


def schedule(busy_ok: bool = False) -> Report:
    """One pass. Raises what PostgreSQL raises (nothing is written then); Redis being down only delays the
    enqueue of what it placed (the reconciler enqueues reserved jobs RQ does not have). ``busy_ok``: for a caller
    whose change, already committed, sent the scheduler's NOTIFY (a submit, a job's end): skipped (``skipped``)
    when another pass is running and a reconciler is active (see the module's doc)."""
    started = time.monotonic()
    report = Report()
    session = db.session
    try:
        if not _lock(session, busy_ok):
            session.rollback()
            report.skipped = True
            report.duration_s = time.monotonic() - started
            return report
        _release_on_lost_hosts()
        waiting = _waiting()
        if not waiting:  # nothing to place (the pass before this one placed it): no host, Redis or plan to read
            session.commit()
            report.duration_s = time.monotonic() - started
            return report
        hosts = _hosts()
        names = {h.id: h.name for h in hosts}
        settings = (current_app.config["MAX_BACKFILL_WAIT"], current_app.config["SCHEDULING"] == "fifo")
        result = plan(waiting, hosts, settings[0], fifo=settings[1])
        placeable = _still_queued(result.placements)
        while len(placeable) < len(result.placements):  # some ended or moved meanwhile: plan again without them
            gone = {p.job_id for p in result.placements} - placeable
            waiting = [w for w in waiting if w.id not in gone]
            hosts = _hosts()
            result = plan(waiting, hosts, settings[0], fifo=settings[1])
            placeable = _still_queued(result.placements)
        for placement in result.placements:
            _write(placement)
            gpus = f", GPUs {','.join(map(str, placement.gpus))}" if placement.gpus else ""
            placed = f"placed on {names[placement.host_id]}{gpus}; waiting for its worker"
            # what it waited for is over; why it was re-queued (a lost worker, a full disk) stays, placement after
            session.execute(update(TrainingJob).where(TrainingJob.id == uuid.UUID(placement.job_id)).values(
                status_reason=case((or_(TrainingJob.status_reason.is_(None), TrainingJob.status_reason == "submitted",
                                        TrainingJob.status_reason.like("waiting for %")), placed),
                                   else_=func.concat(TrainingJob.status_reason, "; ", placed))))
        for job_id, host_id in result.holds.items():
            session.execute(update(TrainingJob).where(TrainingJob.id == uuid.UUID(job_id))
                            .values(hold_host_id=host_id))
        for job_id, reason in result.reasons.items():  # why a re-queued job was re-queued stays until it is placed
            session.execute(update(TrainingJob).where(
                TrainingJob.id == uuid.UUID(job_id), TrainingJob.status == JobStatus.QUEUED,
                TrainingJob.status_reason.is_distinct_from(reason),
                or_(TrainingJob.status_reason.is_(None), TrainingJob.status_reason == "submitted",
                    TrainingJob.status_reason.like("waiting for %"), TrainingJob.status_reason.like("placed on %")),
            ).values(status_reason=reason))
        session.commit()
    except BaseException:
        session.rollback()
        raise
    report.waiting = len(result.reasons)
    for placement in result.placements:
        report.placed.append(placement.job_id)
        try:
            queue.ensure_enqueued(placement.job_id, placement.attempt)
        except RedisError as exc:
            session.rollback()
            report.enqueue_failed.append(placement.job_id)
            log.warning("job %s: placed on %s, not enqueued (Redis: %s); the reconciler will enqueue it",
                        placement.job_id, names[placement.host_id], exc.__class__.__name__)
    report.duration_s = time.monotonic() - started
    if report.placed:
        log.info("schedule: placed %s; %d waiting (%.1f ms)", ", ".join(p[:8] for p in report.placed),
                 report.waiting, report.duration_s * 1000)
    return report


def wake(conn: Any) -> None:
    """Ask the active scheduler for a pass (what the reservations' trigger does on every release)."""
    conn.execute(text("SELECT pg_notify('trainq_scheduler', 'wake')"))
