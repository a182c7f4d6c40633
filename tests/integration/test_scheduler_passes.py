"""Which scheduling passes skip (``schedule(busy_ok=True)``: the API's after a submit, an agent's after a job): only
while another pass holds the scheduler's lock and a reconciler is active; otherwise they run, or wait for the lock
as every pass does. And the agent's warm-up before its workers fork writes nothing."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import OperationalError

from api.record import locks
from api.record.tables import JobEvent, TrainingJob
from api.scheduler.schedule import schedule
from api.stores import db, redis_connection
from api.worker.warmup import NO_JOB, compile_attempt_statements
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
