"""The worker's ProgressWriter: reports cost the training thread no database work; its own thread writes them
(batched, at most once per interval); a checkpoint is written at once; a resumed attempt's first write drops
the history it trains again; a refused write is remembered."""

from __future__ import annotations

import logging
import threading
import time
import uuid

import pytest
from sqlalchemy import event, text

from api.dev.servers import wait_for
from api.record.status import Actor, JobStatus
from api.record.status_writer import create, transition
from api.record.tables import TrainingJob
from api.service import users
from api.stores import db
from api.worker.progress import ProgressWriter

jlog = logging.LoggerAdapter(logging.getLogger("test"), {"job_id": "test"})


def running_job(history: list | None = None) -> str:
    job = create(TrainingJob(id=uuid.uuid4(), name="t", task="mlp", params={}, attempts=1, history=history or [],
                             owner_id=users.first_admin().id), actor=Actor.API, reason="test")
    assert transition(job.id, JobStatus.RUNNING, reason="go", actor=Actor.WORKER, attempt=1).changed
    db.session.remove()
    return str(job.id)


def stored(job_id: str) -> TrainingJob:
    db.session.remove()
    return db.session.get(TrainingJob, uuid.UUID(job_id))


def updates_by_thread(engine) -> tuple[dict[int, int], object]:
    seen: dict[int, int] = {}

    def count(conn, cursor, statement: str, *args: object) -> None:
        if statement.lstrip().upper().startswith("UPDATE"):
            ident = threading.get_ident()
            seen[ident] = seen.get(ident, 0) + 1

    event.listen(engine, "before_cursor_execute", count)
    return seen, count


def test_reports_are_written_by_the_writers_thread_never_the_training_thread(ctx):
    job_id = running_job()
    seen, listener = updates_by_thread(db.engine)
    try:
        writer = ProgressWriter(job_id, 1, 0.05, db.engine, jlog)
        with writer:
            for step in range(1, 2001):
                writer.report({"step": step, "loss": 1 / step})
                if step % 500 == 0:
                    writer.report({"epoch": step // 500, "step": step, "val_loss": 2 / step})
            wait_for(lambda: (stored(job_id).step or 0) == 2000, 10, "the last report written")
    finally:
        event.remove(db.engine, "before_cursor_execute", listener)
    assert threading.get_ident() not in seen  # the training thread wrote nothing
    assert len(seen) == 1 and 1 <= next(iter(seen.values())) < 2000  # one thread, batched
    row = stored(job_id)
    assert row.metrics["loss"] == 1 / 2000 and row.metrics["val_loss"] == 2 / 2000
    epochs = [entry["epoch"] for entry in row.history if "epoch" in entry]
    assert epochs == [1, 2, 3, 4]  # every epoch report kept; step-only reports sampled
    assert len(row.history) < 2000
    steps = [entry["step"] for entry in row.history]
    assert steps == sorted(steps)


def test_checkpoint_is_written_at_once_and_refusal_is_remembered(ctx):
    job_id = running_job()
    writer = ProgressWriter(job_id, 1, 3600, db.engine, jlog)  # its thread would not write for an hour
    with writer:
        writer.report({"epoch": 1, "loss": 0.5})
        writer.checkpointed("/ckpt/ckpt-1-e1.pt")
        row = stored(job_id)
        assert row.checkpoint_path == "/ckpt/ckpt-1-e1.pt" and row.history == [{"epoch": 1, "loss": 0.5}]
        assert not writer.refused
        assert transition(job_id, JobStatus.CANCELLED, reason="user", actor=Actor.API).changed
        writer.report({"epoch": 2, "loss": 0.4})
        writer.checkpointed("/ckpt/ckpt-2-e2.pt")
        assert writer.refused  # the row moved on: the task is told to stop
    row = stored(job_id)
    assert row.status == "cancelled" and row.checkpoint_path == "/ckpt/ckpt-1-e1.pt" and row.epoch == 1


def test_a_resumed_attempts_first_write_drops_the_history_it_trains_again(ctx):
    job_id = running_job(history=[{"epoch": 1, "loss": 0.9}, {"epoch": 2, "loss": 0.8}, {"epoch": 3, "loss": 0.7}])
    writer = ProgressWriter(job_id, 1, 0.05, db.engine, jlog)
    with writer:  # resumed from epoch 2's checkpoint: epoch 3 comes again
        writer.report({"epoch": 3, "loss": 0.65})
        writer.report({"epoch": 4, "loss": 0.6})
        wait_for(lambda: (stored(job_id).epoch or 0) == 4, 10, "the resumed attempt's reports")
        writer.report({"epoch": 5, "loss": 0.5})
        wait_for(lambda: (stored(job_id).epoch or 0) == 5, 10, "a later write")
    assert [(e["epoch"], e["loss"]) for e in stored(job_id).history] == [(1, 0.9), (2, 0.8), (3, 0.65), (4, 0.6),
                                                                      (5, 0.5)]


def waiting_on_a_lock() -> int:
    db.session.remove()  # pg_stat_activity is read once per transaction
    return db.session.execute(text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")).scalar()


def test_report_returns_at_once_while_a_write_is_in_progress(ctx):
    """A slow row write (here: the row locked by another transaction) never holds up report()."""
    job_id = running_job()
    writer = ProgressWriter(job_id, 1, 0.01, db.engine, jlog)
    with db.engine.connect() as locker:
        tx = locker.begin()
        locker.execute(TrainingJob.__table__.select().where(TrainingJob.id == uuid.UUID(job_id)).with_for_update())
        with writer:
            writer.report({"step": 1, "loss": 1.0})
            wait_for(waiting_on_a_lock, 10, "the writer's thread blocked on the row lock")
            slowest = 0.0
            for step in range(2, 2002):
                called = time.perf_counter()
                writer.report({"step": step, "loss": 1.0 / step})
                slowest = max(slowest, time.perf_counter() - called)
            tx.rollback()
            wait_for(lambda: (stored(job_id).step or 0) == 2001, 10, "the writes after the lock")
    assert slowest < 0.05, f"report() waited {slowest:.3f} s for a row write"


def test_an_attempts_lease_holds_its_locks_with_keepalives_on_its_own_session(ctx):
    from sqlalchemy import text as sql

    from api.record import locks
    from api.stores import SERVER_KEEPALIVES
    from api.worker.liveness import AttemptLease

    job_id = str(uuid.uuid4())
    lease = AttemptLease(db.engine, job_id, 1)
    fields = lease.acquire()
    try:
        for setting, value in SERVER_KEEPALIVES.items():
            shown = lease.conn.execute(sql(f"SHOW {setting}")).scalar()
            assert shown.rstrip("ms") == str(value), (setting, shown)
        held = db.session.execute(sql(locks.held_keys_sql(locks.Namespace.ATTEMPT))).scalars().all()
        assert fields["liveness_key"] in held
        training = db.session.execute(sql(locks.held_keys_sql(locks.Namespace.TRAINING))).scalars().all()
        assert locks.job_key(job_id) in training
    finally:
        lease.release()
    db.session.remove()
    held = db.session.execute(sql(locks.held_keys_sql(locks.Namespace.ATTEMPT))).scalars().all()
    assert fields["liveness_key"] not in held  # its session ended: PostgreSQL freed the lock


def test_a_new_attempt_waits_while_an_older_attempts_session_holds_the_job(ctx):
    """The job's training lock: attempt 2 cannot take the job while attempt 1's session lives, and takes it at
    once when that session ends."""
    from api.worker.liveness import AttemptLease, TakeoverTimeout

    job_id = str(uuid.uuid4())
    first = AttemptLease(db.engine, job_id, 1)
    first.acquire()
    try:
        waited = time.monotonic()
        with pytest.raises(TakeoverTimeout):
            AttemptLease(db.engine, job_id, 2, takeover_wait=0.5).acquire()
        assert time.monotonic() - waited >= 0.5
        second = AttemptLease(db.engine, job_id, 2, takeover_wait=30)
        threading.Timer(0.5, first.release).start()
        took = time.monotonic()
        second.acquire()  # blocks until the first session ends
        assert 0.4 <= time.monotonic() - took < 5
        second.release()
        other = AttemptLease(db.engine, str(uuid.uuid4()), 1, takeover_wait=0.5)
        other.acquire()  # another job's attempt never waits for this one
        other.release()
    finally:
        first.release()


def test_a_broken_lease_session_is_taken_back_only_while_the_row_is_its_own(ctx):
    """The renewer after its session ended under it (here: terminated, as a server restart would): a new session
    takes both locks again while the row still runs on the attempt with its key; once the row moved on, it says
    the attempt is superseded (the watchdog then stops the training) instead of taking anything back."""
    from sqlalchemy import text as sql

    from api.record import locks
    from api.worker.liveness import AttemptLease

    def holder(namespace: locks.Namespace, key: int) -> int | None:
        pid = db.session.execute(sql("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 AND granted"
                                     " AND classid = :ns AND objid = :key"),
                                 {"ns": int(namespace), "key": key}).scalar()
        db.session.commit()
        return pid

    def terminate(pid: int) -> None:
        db.session.execute(sql("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        db.session.commit()

    def held_by_someone(namespace: locks.Namespace, key: int) -> bool:
        held = key in db.session.execute(sql(locks.held_keys_sql(namespace))).scalars().all()
        db.session.commit()
        return held

    job_id = running_job()
    lease = AttemptLease(db.engine, job_id, 1, renew_every=0.1)
    fields = lease.acquire()
    db.session.execute(sql("UPDATE training_jobs SET liveness_key = :key WHERE id = :id"),
                       {"key": fields["liveness_key"], "id": job_id})
    db.session.commit()
    lease.start_renewing()
    try:
        first = holder(locks.Namespace.ATTEMPT, fields["liveness_key"])
        terminate(first)
        wait_for(lambda: holder(locks.Namespace.ATTEMPT, fields["liveness_key"]) not in (None, first), 10,
                 "the session to be taken back")
        assert held_by_someone(locks.Namespace.ATTEMPT, fields["liveness_key"])
        assert held_by_someone(locks.Namespace.TRAINING, locks.job_key(job_id))
        assert lease.superseded is None

        assert transition(job_id, JobStatus.FAILED, reason="moved on", actor=Actor.API).changed
        terminate(holder(locks.Namespace.ATTEMPT, fields["liveness_key"]))
        wait_for(lambda: lease.superseded, 10, "the renewer to give up")
        assert "no longer runs on this attempt" in lease.superseded
        assert not held_by_someone(locks.Namespace.TRAINING, locks.job_key(job_id))
    finally:
        lease.release()


def recent_and_length(job_id: str) -> tuple[list, list, int]:
    db.session.remove()
    row = db.session.execute(text("SELECT history, history_recent, history_length FROM training_jobs WHERE id = :id"),
                             {"id": job_id}).one()
    db.session.commit()
    return row.history, row.history_recent, row.history_length


def test_the_recent_history_follows_every_write_of_the_history(ctx):
    """``history_recent`` (what the job's read shows) is the last 1,000 entries of ``history`` after every kind
    of write of it: a new row, a resumed attempt's first write that drops what it trains again, appends, and a
    completion recorded from an outcome file."""
    from api.record.outcome import completion_fields

    job_id = running_job(history=[{"epoch": i, "loss": 1 / i} for i in range(1, 1501)])
    history, recent, length = recent_and_length(job_id)
    assert length == 1500 and recent == history[-1000:] and recent[0]["epoch"] == 501
    writer = ProgressWriter(job_id, 1, 0.05, db.engine, jlog)
    with writer:  # resumed from epoch 1,199: 1,200 on come again
        writer.report({"epoch": 1200, "loss": 0.5})
        wait_for(lambda: (stored(job_id).epoch or 0) == 1200, 10, "the resumed attempt's first write")
        history, recent, length = recent_and_length(job_id)
        assert length == 1200 and recent == history[-1000:] and recent[-1] == {"epoch": 1200, "loss": 0.5}
        for epoch in range(1201, 1251):
            writer.report({"epoch": epoch, "loss": 0.4})
        wait_for(lambda: (stored(job_id).epoch or 0) == 1250, 10, "the appends")
    history, recent, length = recent_and_length(job_id)
    assert length == 1250 and recent == history[-1000:] and recent[0]["epoch"] == 251
    fields = completion_fields({"history": [{"epoch": 1251, "loss": 0.3}], "epoch": 1251})
    assert transition(job_id, JobStatus.COMPLETED, reason="from the outcome file", actor=Actor.RECONCILER,
                      attempt=1, fields=fields).changed
    history, recent, length = recent_and_length(job_id)
    assert length == 1251 and recent == history[-1000:] and recent[-1] == {"epoch": 1251, "loss": 0.3}
    db.session.execute(text("UPDATE training_jobs SET history = '[]' WHERE id = :id"), {"id": job_id})
    db.session.commit()
    assert recent_and_length(job_id) == ([], [], 0)
