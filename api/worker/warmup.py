"""What a horse would otherwise do afresh for every job, done once in the agent before its workers fork: compile the
SQL an attempt runs before its task is entered. SQLAlchemy compiles a statement at its first execution in a
process and caches it on the engine; a horse is a fork of its worker, which never runs them, so every horse
compiled them all again (about 15 ms of each job's start on an idle machine, more on a loaded one). Run here once,
for a job id that names no row, they are compiled in the agent and every worker and horse inherits them: each is a
read, or an UPDATE whose WHERE matches no row, so nothing is found and nothing is written."""

from __future__ import annotations

import logging
import uuid

from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from api.record import joblog
from api.record.status import Actor, JobNotFound, JobStatus
from api.record.status_writer import transition
from api.stores import db
from api.worker import devices, provenance
from trainq.registry import Task

log = logging.getLogger(__name__)

NO_JOB = str(uuid.UUID(int=0))  # no row has it: training_jobs' ids are uuid4s


def compile_attempt_statements(task: Task | None, redis: Redis) -> None:
    """Run, for ``NO_JOB``, the statements ``api.worker.attempt`` runs before the task is entered: the running
    transition's read of the row, the reservation's read, the log's last line number, the provenance write. A
    failure (PostgreSQL down at the agent's start) only means the horses compile them themselves, as before."""
    try:
        try:
            transition(NO_JOB, JobStatus.RUNNING, reason="warm-up", actor=Actor.WORKER,
                       expected_from=[JobStatus.QUEUED], attempt=1)
        except JobNotFound:
            pass
        devices.reserved(NO_JOB, 1)
        joblog.last_line_number(NO_JOB, redis, db.engine)
        if task is not None:
            provenance.record(NO_JOB, 1, task, db.engine, log)  # type: ignore[arg-type]
    except (SQLAlchemyError, RedisError) as exc:
        log.warning("could not compile the attempts' statements ahead (%s); each job compiles them",
                    exc.__class__.__name__)
    finally:
        db.session.remove()
