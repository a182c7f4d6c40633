"""What a horse would otherwise do afresh for every job, done once in the agent before its workers fork: compile the
SQL an attempt runs on its way to its task and at its completion. SQLAlchemy compiles a statement at its first
execution in a process and caches it on the engine; a horse is a fork of its worker, which never runs them, so every
horse compiled them all again (about 15 ms of each job's start on an idle machine, more on a loaded one). Run here
once, they are compiled in the agent and every worker and horse inherits them. Nothing is written: the status writes
are rehearsed on a throwaway owner and job inside a transaction that is rolled back, and the rest run for a job id
that names no row (a read, or an UPDATE whose WHERE matches no row)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import func, insert, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from api.record import joblog
from api.record.status import Actor
from api.record.status_writer import create
from api.record.tables import TrainingJob, User
from api.stores import db
from api.worker import devices, disk, provenance
from api.worker.attempt import completion_fields, mark_completed, mark_running
from api.worker.progress import ProgressWriter
from trainq.registry import Task

log = logging.getLogger(__name__)

NO_JOB = str(uuid.UUID(int=0))  # no row has it: training_jobs' ids are uuid4s


def compile_attempt_statements(task: Task | None, redis: Redis) -> None:
    """Run the statements ``api.worker.attempt`` runs before the task is entered, and its completion: the running
    and completed writes (rehearsed: ``_rehearse_start``), and for ``NO_JOB`` the reservation's read, the disk
    limit's, the log's last line number, the provenance write. A failure (PostgreSQL down at the agent's start) only
    means the horses compile them themselves, as before."""
    try:
        _rehearse_start(task)
        devices.reserved(NO_JOB, 1)
        disk.job_disk_limit_bytes(NO_JOB)
        joblog.last_line_number(NO_JOB, redis, db.engine)
        if task is not None:
            provenance.record(NO_JOB, 1, task, db.engine, log)  # type: ignore[arg-type]
    except (SQLAlchemyError, RedisError) as exc:
        log.warning("could not compile the attempts' statements ahead (%s); each job compiles them",
                    exc.__class__.__name__)
    finally:
        db.session.remove()


@contextmanager
def _rolled_back() -> Iterator[None]:
    """``db.session`` inside one transaction that is rolled back at the end, whatever its code commits (each commit
    only releases a savepoint): nothing it writes is ever seen by anyone else, its triggers' NOTIFYs included."""
    with db.engine.connect() as conn:
        outer = conn.begin()
        # bounded: a stand-by's job waits for its rehearsal, which must never wait on a lock for long
        conn.exec_driver_sql("SET LOCAL lock_timeout = '2s'")
        # a plain session bound to this connection: Flask-SQLAlchemy's would choose the engine itself, outside it
        session = Session(bind=conn, join_transaction_mode="create_savepoint")
        db.session.registry.set(session)
        try:
            yield
        finally:
            session.close()
            db.session.registry.clear()
            outer.rollback()


def open_sweep_storage() -> None:
    """Optuna's storage, opened once in the agent (its tables checked): a sweep trial's pruner takes it over in its
    horse (``sweep_study.storage``) instead of opening one of its own while the trial waits to start. Optuna not
    installed, or PostgreSQL down: each trial's horse opens it, as before."""
    try:
        from api.record import sweep_study
    except ImportError:
        return
    try:
        sweep_study.storage(db.engine).engine.dispose()  # kept, with no connection: each horse opens its own
    except Exception as exc:  # noqa: BLE001 - Optuna's own errors too: the horse opens it itself then
        log.warning("could not open the sweeps' Optuna storage ahead (%s); each trial opens it",
                    exc.__class__.__name__)


def rehearse_in_standby(redis: Redis) -> None:
    """In a stand-by horse (``api.worker.standby``), before its job: the start's statements once more, the running
    write and the simplest completion rehearsed as above. Compiled already, they cost the stand-by only its first
    touch of the pages they use (a fork's copy-on-write), which the job's start then does not pay. A failure only
    leaves that to the job."""
    try:
        _rehearse_start(None, _COMPLETIONS[:1])
        devices.reserved(NO_JOB, 1)
        joblog.last_line_number(NO_JOB, redis, db.engine)
    except (SQLAlchemyError, RedisError) as exc:
        log.debug("stand-by: no rehearsal (%s)", exc.__class__.__name__)
    finally:
        db.session.remove()


def _rehearse_start(task: Task | None, completions: list[tuple[list[dict[str, float]], bool, bool]] | None = None,
                    ) -> None:
    """The running write as a horse makes it (``mark_running``: the row's read, its UPDATE, the event's INSERT, the
    row read back) and a completion of each shape (``_COMPLETIONS``), each on a throwaway job of a throwaway owner,
    in a transaction that is rolled back: a job id that names no row would compile only the first of them."""
    with _rolled_back():
        owner = db.session.execute(insert(User).values(name=f"warm-up-{uuid.uuid4().hex[:16]}",
                                                       created_at=func.now()).returning(User.id)).scalar_one()
        now = db.session.scalar(select(func.now()))
        for reports, checkpoint, written in completions or _COMPLETIONS:  # each on a row of its own
            job_id = str(uuid.uuid4())
            create(TrainingJob(id=uuid.UUID(job_id), name="warm-up", owner_id=owner,
                               task=task.name if task else "warm-up", params={}, attempts=1, max_attempts=1),
                   actor=Actor.WORKER, reason="warm-up")
            mark_running(job_id, 1, "warm-up", {"liveness_key": 0, "liveness_since": now})
            writer = ProgressWriter(job_id, 1, 1.0, db.engine, log)  # never entered: no thread, no write
            for entry in reports:
                writer.report(entry)
            writer.checkpoint_path = "warm-up" if checkpoint else None
            writer._first_write = not written  # noqa: SLF001 - the shape of a completion after a progress write
            mark_completed(job_id, 1, completion_fields(writer, {"loss": 0.0}))


# The shapes a completion's UPDATE takes (its columns, and how it extends the history), each compiled apart: no
# report; epochs, steps, or both reported, with or without a checkpoint, before or after a progress write.
_COMPLETIONS = [([], False, False)] + [
    (reports, checkpoint, written)
    for reports in ([{"epoch": 1, "loss": 0.5}], [{"step": 10, "loss": 0.5}], [{"epoch": 1, "step": 10, "loss": 0.5}])
    for checkpoint in (False, True) for written in (False, True)]
