"""The reconcile mapping, one RQ state at a time, as the pure function ``decide``."""

from datetime import UTC, datetime, timedelta

import pytest

from api.queue import RQState
from api.reconcile import CANCELLED_IN_RQ, decide
from api.status import JobStatus

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
GRACE = timedelta(seconds=5)
R, Q = JobStatus.RUNNING, JobStatus.QUEUED


def run(status, state, rq_id="x", since=NOW - timedelta(minutes=1)):
    return decide(status, rq_id, since, state, now=NOW, enqueue_grace=GRACE)


@pytest.mark.parametrize(
    ("row", "state", "action", "to", "reason"),
    [
        (R, RQState("finished"), "completed", JobStatus.COMPLETED, "RQ job finished"),
        (Q, RQState("finished"), "failed", JobStatus.FAILED, "RQ job finished without the job being started"),
        (R, RQState("failed", error="ValueError: boom"), "failed", JobStatus.FAILED, "RQ job failed: ValueError: boom"),
        (R, RQState("stopped"), "cancelled", JobStatus.CANCELLED, CANCELLED_IN_RQ),
        (Q, RQState("canceled"), "cancelled", JobStatus.CANCELLED, CANCELLED_IN_RQ),
        (R, RQState(None), "orphaned", JobStatus.FAILED, "orphaned: RQ job not found"),
        (Q, None, "orphaned", JobStatus.FAILED, "orphaned: RQ job not found"),
        (R, RQState("started", "w1", worker_alive=False), "worker_lost", JobStatus.FAILED, "worker lost"),
    ],
)
def test_mismatches(row, state, action, to, reason):
    decision = run(row, state)
    assert (decision.action, decision.to, decision.reason) == (action, to, reason)


@pytest.mark.parametrize(
    ("row", "state"),
    [
        (R, RQState("started", "w1", worker_alive=True)),
        (Q, RQState("queued")),
        (Q, RQState("started", "w1", worker_alive=True)),
        (R, RQState("queued")),
        (Q, RQState("deferred")),
    ],
)
def test_agreement_means_no_action(row, state):
    assert run(row, state) is None


def test_running_row_without_rq_id_fails():
    decision = run(R, None, rq_id=None)
    assert (decision.action, decision.to) == ("no_rq_id", JobStatus.FAILED)


def test_queued_row_never_enqueued_is_enqueued_after_the_grace():
    assert run(Q, None, rq_id=None, since=NOW - timedelta(seconds=1)) is None
    decision = run(Q, None, rq_id=None, since=NOW - timedelta(seconds=6))
    assert (decision.action, decision.to) == ("enqueued", None)
