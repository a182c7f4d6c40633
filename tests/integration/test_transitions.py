"""The one write path under concurrency: conditional, attempt-guarded, one event per change."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime

import pytest

from api.record.status import Actor, JobNotFound, JobStatus
from api.record.status_writer import create, transition
from api.record.tables import JobEvent, TrainingJob
from api.service import users
from api.stores import db


def new_job() -> uuid.UUID:
    owner = users.first_admin()
    job = create(TrainingJob(id=uuid.uuid4(), name="t", task="mlp", params={}, attempts=1, owner_id=owner.id),
                 actor=Actor.API, reason="test")
    return job.id


def event_count(job_id) -> int:
    return db.session.query(JobEvent).filter_by(job_id=job_id).count()


def test_refused_transition_returns_current_row_and_writes_nothing(ctx):
    job_id = new_job()
    assert transition(job_id, JobStatus.CANCELLED, reason="user", actor=Actor.API).changed
    result = transition(job_id, JobStatus.RUNNING, reason="late", actor=Actor.WORKER)
    assert not result.changed and result.job.status == "cancelled" and result.from_status == "cancelled"
    assert event_count(job_id) == 2


def test_attempt_guard_refuses_a_superseded_attempt(ctx):
    job_id = new_job()
    assert not transition(job_id, JobStatus.RUNNING, reason="old", actor=Actor.WORKER, attempt=0).changed
    assert transition(job_id, JobStatus.RUNNING, reason="new", actor=Actor.WORKER, attempt=1).changed


def test_unknown_job(ctx):
    with pytest.raises(JobNotFound):
        transition(uuid.uuid4(), JobStatus.CANCELLED, reason="x", actor=Actor.API)


def test_concurrent_completion_and_cancel_have_one_winner(app, ctx):
    for _ in range(20):
        job_id = new_job()
        transition(job_id, JobStatus.RUNNING, reason="go", actor=Actor.WORKER)
        barrier, results = threading.Barrier(3), {}

        def write(to: JobStatus, actor: Actor, job_id=job_id, barrier=barrier, results=results) -> None:
            with app.app_context():
                barrier.wait()
                results[to] = transition(job_id, to, reason="race", actor=actor).changed
                db.session.remove()

        threads = [threading.Thread(target=write, args=args) for args in
                   [(JobStatus.COMPLETED, Actor.WORKER), (JobStatus.CANCELLED, Actor.API),
                    (JobStatus.FAILED, Actor.RECONCILER)]]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        winners = [to for to, changed in results.items() if changed]
        assert len(winners) == 1, results
        db.session.expire_all()
        assert db.session.get(TrainingJob, job_id).status == winners[0]
        assert event_count(job_id) == 3


def test_a_transition_at_a_given_time_stamps_the_row_and_its_event_with_it(ctx):
    """The reconciler writes at the time its pass read (``now``): the row's stamps and the event's time are that
    time, not the statement's."""
    job_id = new_job()
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    result = transition(job_id, JobStatus.FAILED, reason="lost", actor=Actor.RECONCILER, now=at,
                        fields={"error_message": "lost"})
    assert result.changed and result.from_status == JobStatus.QUEUED
    assert result.job.finished_at == at and result.job.updated_at == at and result.job.error_message == "lost"
    event = db.session.query(JobEvent).filter_by(job_id=job_id, to_status="failed").one()
    assert event.at == at and event.from_status == "queued" and event.actor == "reconciler"
