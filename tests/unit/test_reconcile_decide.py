"""The reconcile mapping as the pure function ``decide``: one row, RQ's view of it, a clock."""

import uuid

import pytest

from api.queue import RQState
from api.record.status import JobStatus
from api.service.reconcile import CANCELLED_IN_RQ, DELETED_IN_RQ, ENDED_SESSION, Policy, RowView, decide

POLICY = Policy(enqueue_grace_s=5, heartbeat_timeout_s=10, max_queue_age_s=3600)
R, Q = JobStatus.RUNNING, JobStatus.QUEUED
ROW = RowView(id=str(uuid.uuid4()), status=R, attempts=1, max_attempts=1, rq_job_id="x", waited_s=60,
              heartbeat_age_s=60, checkpoint_path=None)
CKPT = {"checkpoint_path": "/ckpt/epoch-000003.pt", "max_attempts": 2}


def run(state, **row):
    return decide(ROW._replace(**row), state, POLICY)


@pytest.mark.parametrize(
    ("row", "state", "action", "to", "reason"),
    [
        ({}, RQState("finished"), "completed", JobStatus.COMPLETED, "RQ job finished"),
        ({"status": Q}, RQState("finished"), "failed", JobStatus.FAILED,
         "RQ job finished without the job being started"),
        ({"status": Q}, RQState("failed", error="ValueError: boom"), "failed", JobStatus.FAILED,
         "RQ job failed: ValueError: boom"),
        ({}, RQState("failed", error="Work-horse terminated"), "worker_lost", JobStatus.FAILED,
         "RQ job failed: Work-horse terminated"),
        ({}, RQState("stopped"), "cancelled", JobStatus.CANCELLED, CANCELLED_IN_RQ),
        ({"status": Q}, RQState("canceled"), "cancelled", JobStatus.CANCELLED, CANCELLED_IN_RQ),
        ({}, RQState("started", worker_name="w1", worker_alive=False), "worker_lost", JobStatus.FAILED,
         "worker lost"),
        ({}, RQState(None), "worker_lost", JobStatus.FAILED, "worker lost (RQ job not found, no heartbeat)"),
        ({"status": Q, "waited_s": 7200}, None, "orphaned", JobStatus.FAILED,
         "orphaned: RQ job not found"),
        ({"rq_job_id": None}, None, "no_rq_id", JobStatus.FAILED, "no RQ job id recorded"),
        ({}, RQState("queued"), "worker_lost", JobStatus.FAILED, "worker lost (RQ job is queued, no heartbeat)"),
    ],
)
def test_mismatches(row, state, action, to, reason):
    decision = run(state, **row)
    assert (decision.action, decision.to, decision.reason, decision.retry) == (action, to, reason, False)


@pytest.mark.parametrize(
    ("row", "state"),
    [
        ({}, RQState("started", worker_name="w1", worker_alive=True)),
        ({"status": Q}, RQState("queued")),
        ({"status": Q}, RQState("started", worker_name="w1", worker_alive=True)),
        ({"heartbeat_age_s": 3}, RQState("queued")),
        ({"status": Q}, RQState("deferred")),
        # Redis lost the job but the attempt still beats: in Redis, or in its row.
        ({}, RQState(None, job_beating=True)),
        ({"heartbeat_age_s": 9}, RQState(None)),
        # A queued row not yet in RQ, within the grace: its submitter may still be enqueueing it.
        ({"status": Q, "waited_s": 1}, RQState(None)),
        ({"status": Q, "rq_job_id": None, "waited_s": 1}, None),
    ],
)
def test_agreement_means_no_action(row, state):
    assert run(state, **row) is None


@pytest.mark.parametrize(
    ("row", "state", "action"),
    [
        ({"status": Q, "rq_job_id": None}, None, "enqueued"),
        ({"status": Q}, RQState(None), "requeued"),
        ({"status": Q}, None, "requeued"),
        # The worker died between taking the job and marking it running.
        ({"status": Q, **CKPT}, RQState("started", worker_name="w1", worker_alive=False), "requeued"),
    ],
)
def test_queued_rows_that_rq_lost_are_enqueued_again(row, state, action):
    decision = run(state, **row)
    assert (decision.action, decision.to) == (action, None)


@pytest.mark.parametrize(
    "state",
    [RQState("started", worker_name="w1", worker_alive=False), RQState(None), RQState("failed", error="killed")],
)
def test_lost_attempt_with_checkpoint_and_attempts_left_is_retried(state):
    decision = run(state, **CKPT)
    assert (decision.action, decision.to, decision.retry) == ("retried", JobStatus.QUEUED, True)
    assert "re-queued to resume from /ckpt/epoch-000003.pt (attempt 2 of 2)" in decision.reason


def test_no_retry_without_checkpoint_or_attempts():
    lost = RQState("started", worker_name="w1", worker_alive=False)
    assert run(lost, max_attempts=2).action == "worker_lost"
    assert run(lost, checkpoint_path="/c.pt", attempts=2, max_attempts=2).action == "worker_lost"


@pytest.mark.parametrize("state", [None, RQState(None), RQState("started", worker_name="w1", worker_alive=True),
                                   RQState("queued")])
def test_an_ended_session_is_a_lost_attempt_at_once_whatever_rq_and_the_heartbeats_say(state):
    fresh = {"heartbeat_age_s": 0.1, "session": False}
    decision = run(state, **fresh)
    assert decision.action == "worker_lost" and decision.reason == ENDED_SESSION
    retried = run(state, **fresh, **CKPT)
    assert retried.action == "retried" and retried.retry and retried.reason.startswith(ENDED_SESSION)


def test_an_ended_session_keeps_rqs_more_precise_reason_when_there_is_one():
    assert run(RQState("started", worker_name="w1", worker_alive=False), session=False).reason == "worker lost"


@pytest.mark.parametrize("state", [None, RQState(None), RQState("started", worker_name="w1", worker_alive=False),
                                   RQState("queued")])
def test_a_held_session_is_alive_even_with_a_stale_heartbeat_and_a_dead_looking_worker(state):
    assert run(state, heartbeat_age_s=3600, session=True) is None


@pytest.mark.parametrize(("state", "action"), [(RQState("finished"), "completed"), (RQState("stopped"), "cancelled"),
                                               (RQState("failed", error="x"), "worker_lost")])
def test_rq_saying_how_it_ended_comes_before_the_session(state, action):
    assert run(state, session=False).action == action
    if state.status != "failed":
        assert run(state, session=True).action == action


def test_a_held_session_outranks_rqs_abandoned_job_verdict():
    """RQ's registry clean-up (any worker's, by its own clock) moves a started job it thinks abandoned to failed;
    while the attempt's session holds its lock, the attempt lives and writes its own end (issue 26, case 3)."""
    abandoned = RQState("failed", error="rq.exceptions.AbandonedJobError: ...")
    assert run(abandoned, session=True) is None
    assert run(abandoned, session=True, heartbeat_age_s=3600, **CKPT) is None
    assert run(abandoned, session=False).action == "worker_lost"


def test_an_unknown_session_leaves_the_heartbeat_rules():
    assert run(RQState(None), heartbeat_age_s=1, session=None) is None
    assert run(RQState(None), heartbeat_age_s=60, session=None).action == "worker_lost"


def test_an_ended_session_with_a_fresh_beat_is_a_process_cut_off_from_postgresql_not_a_dead_one():
    for state in (RQState(None, job_beating=True, job_beat_fresh=True),
                  RQState("started", worker_name="w1", worker_alive=True, job_beat_fresh=True)):
        assert run(state, session=False, heartbeat_age_s=60) is None
    stale = RQState(None, job_beating=True, job_beat_fresh=False)
    assert run(stale, session=False).reason == ENDED_SESSION


@pytest.mark.parametrize("row", [{"status": Q}, {"status": Q, "waited_s": 1}, {"status": Q, "waited_s": 7200}, {},
                                 {"heartbeat_age_s": 1}, {"session": True}, {"session": False, **CKPT}])
def test_a_job_gone_from_rq_while_its_enqueue_marker_stays_was_deleted_on_purpose_and_is_never_brought_back(row):
    decision = run(RQState(None, removed=True), **row)
    assert (decision.action, decision.to, decision.reason, decision.retry) == \
        ("deleted", JobStatus.CANCELLED, DELETED_IN_RQ, False)


def test_a_job_gone_with_its_enqueue_marker_was_lost_by_redis_and_is_enqueued_again():
    assert run(RQState(None, removed=False), status=Q).action == "requeued"
