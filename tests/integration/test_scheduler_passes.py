"""Which scheduling passes skip (``schedule(busy_ok=True)``: the API's after a submit, an agent's after a job): only
while another pass holds the scheduler's lock and a reconciler is active; otherwise they run, or wait for the lock
as every pass does. And the agent's warm-up before its workers fork writes nothing, and leaves an attempt's running and
completed writes compiled."""

from __future__ import annotations

import logging
import uuid

import pytest
from sqlalchemy import event, func, select, text
from sqlalchemy.engine.interfaces import CacheStats
from sqlalchemy.exc import OperationalError

from api.record import locks
from api.record.status import Actor
from api.record.status_writer import create
from api.record.tables import JobEvent, TrainingJob
from api.scheduler.schedule import schedule
from api.stores import db, redis_connection
from api.worker.attempt import completion_fields, mark_completed, mark_running
from api.worker.progress import ProgressWriter
from api.worker.warmup import _COMPLETIONS, NO_JOB, compile_attempt_statements
from trainq.registry import registry


def _holding(namespace: locks.Namespace, key: int):
    """A session of its own holding ``(namespace, key)`` in an open transaction (released at its close)."""
    conn = db.engine.connect()
    conn.execute(text("SELECT pg_advisory_xact_lock(:ns, :key)"), {"ns": int(namespace), "key": key})
    return conn


def test_a_busy_ok_pass_skips_while_another_runs_and_a_reconciler_is_active(ctx):
    assert schedule(busy_ok=True).skipped is False  # the lock is free: it runs
    other_pass = _holding(locks.Namespace.SCHEDULER, locks.SCHEDULER_KEY)
    reconciler = db.engine.connect()
    try:
        assert locks.try_lock(reconciler, locks.Namespace.RECONCILER, locks.RECONCILER_KEY)
        reconciler.commit()
        assert schedule(busy_ok=True).skipped is True
    finally:
        reconciler.invalidate()  # the session ends, its lock with it (never back to the pool holding it)
        reconciler.close()
        other_pass.close()


def test_with_no_reconciler_a_busy_ok_pass_waits_for_the_lock(ctx):
    other_pass = _holding(locks.Namespace.SCHEDULER, locks.SCHEDULER_KEY)
    try:
        db.session.execute(text("SET lock_timeout = 300"))  # waiting, not skipping: it meets the timeout
        with pytest.raises(OperationalError):
            schedule(busy_ok=True)
    finally:
        db.session.rollback()
        db.session.execute(text("SET lock_timeout = 0"))
        db.session.commit()
        other_pass.close()
    assert schedule(busy_ok=True).skipped is False


def test_the_agents_warm_up_finds_and_writes_nothing(ctx):
    before = (db.session.scalar(select(func.count()).select_from(TrainingJob)),
              db.session.scalar(select(func.count()).select_from(JobEvent)))
    db.session.commit()
    task = next(iter(registry().values()), None)
    compile_attempt_statements(task, redis_connection.get())
    after = (db.session.scalar(select(func.count()).select_from(TrainingJob)),
             db.session.scalar(select(func.count()).select_from(JobEvent)))
    assert after == before
    assert db.session.get(TrainingJob, NO_JOB) is None


def test_after_the_warm_up_an_attempts_running_and_completed_writes_compile_nothing(ctx, make_user):
    """What the warm-up is for: a horse (a fork of the agent) finds every statement of its running write and of a
    completion of each shape already compiled. Without the rehearsal on a throwaway row (rolled back), a job id
    that names no row compiled only the row's read."""
    db.engine._compiled_cache.clear()  # noqa: SLF001 - as a new agent starts: nothing compiled yet
    compile_attempt_statements(next(iter(registry().values()), None), redis_connection.get())
    owner, _, _ = make_user("warm-check")
    misses: list[str] = []

    def seen(_conn, _cursor, statement, _params, context, _many) -> None:
        if context is not None and context.cache_hit == CacheStats.CACHE_MISS:
            misses.append(" ".join(statement.split())[:80])

    jobs = []
    for reports, checkpoint, written in _COMPLETIONS:
        job_id = uuid.uuid4()
        create(TrainingJob(id=job_id, name="warm-check", owner_id=owner.id, task="t", params={}, attempts=1,
                           max_attempts=1), actor=Actor.API, reason="submitted")
        jobs.append((str(job_id), reports, checkpoint, written))
    now = db.session.scalar(select(func.now()))
    db.session.commit()
    event.listen(db.engine, "after_cursor_execute", seen)
    try:
        for job_id, reports, checkpoint, written in jobs:
            assert mark_running(job_id, 1, "w", {"liveness_key": 0, "liveness_since": now}).changed
            writer = ProgressWriter(job_id, 1, 1.0, db.engine, logging.getLogger(__name__))
            for entry in reports:
                writer.report(entry)
            writer.checkpoint_path = "ckpt-1" if checkpoint else None
            writer._first_write = not written  # noqa: SLF001
            assert mark_completed(job_id, 1, completion_fields(writer, {"loss": 1.0})).changed
    finally:
        event.remove(db.engine, "after_cursor_execute", seen)
    assert misses == []
