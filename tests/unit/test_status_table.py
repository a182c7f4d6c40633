"""The transition table itself: terminals have no exits, every status is reachable, groups are right."""

import pytest

from api.record.status import ACTIVE, INITIAL, RESTARTS, TERMINAL, TRANSITIONS, Actor, JobStatus, allowed_from
from api.record.status_writer import transition


def test_every_status_has_a_row():
    assert set(TRANSITIONS) == set(JobStatus)


def test_terminal_statuses_have_no_exits():
    for status in TERMINAL:
        assert TRANSITIONS[status] == frozenset(), status


def test_non_terminal_statuses_can_end():
    for status in set(JobStatus) - TERMINAL:
        assert TRANSITIONS[status] & TERMINAL, f"{status} can never finish"


def test_every_status_is_reachable_from_initial():
    seen, frontier = {INITIAL}, [INITIAL]
    while frontier:
        for nxt in TRANSITIONS[frontier.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                frontier.append(nxt)
    assert seen == set(JobStatus)


def test_no_self_transitions():
    for status, targets in TRANSITIONS.items():
        assert status not in targets


def test_allowed_from_inverts_the_table():
    assert allowed_from(JobStatus.CANCELLED) == {JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.PAUSED}
    assert allowed_from(JobStatus.COMPLETED) == {JobStatus.RUNNING}
    assert allowed_from(JobStatus.RUNNING) == {JobStatus.QUEUED}
    assert allowed_from(JobStatus.QUEUED) == {JobStatus.RUNNING, JobStatus.PAUSED}
    assert allowed_from(JobStatus.QUEUED, restart=True) == {
        JobStatus.RUNNING, JobStatus.PAUSED, JobStatus.FAILED, JobStatus.CANCELLED}


def test_restarts_only_leave_terminal_statuses_back_to_queued():
    for status, targets in RESTARTS.items():
        assert status in TERMINAL and targets == {JobStatus.QUEUED}
    assert JobStatus.COMPLETED not in RESTARTS


@pytest.mark.parametrize("actor", [Actor.WORKER, Actor.RECONCILER, Actor.CLEANUP_SCRIPT])
def test_only_the_api_may_restart(actor):
    with pytest.raises(ValueError):
        transition("00000000-0000-0000-0000-000000000000", JobStatus.QUEUED, reason="x", actor=actor,
                   restart=True, fields={"attempts": 2})


def test_a_restart_always_starts_a_new_attempt():
    with pytest.raises(ValueError):
        transition("00000000-0000-0000-0000-000000000000", JobStatus.QUEUED, reason="x", actor=Actor.API,
                   restart=True)


def test_groups():
    assert TERMINAL == {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.PRUNED}
    assert ACTIVE == {JobStatus.QUEUED, JobStatus.RUNNING}
    assert not TERMINAL & ACTIVE


def test_actions_agree_with_the_transition_table():
    """A button is offered exactly where the status module lets the action's transition happen."""
    from api.record.status import ACTIONS, Action

    assert ACTIONS[Action.CANCEL] == allowed_from(JobStatus.CANCELLED)
    assert ACTIONS[Action.MARK_FAILED] == allowed_from(JobStatus.FAILED)
    assert ACTIONS[Action.PAUSE] == allowed_from(JobStatus.PAUSED)
    restartable = allowed_from(JobStatus.QUEUED, restart=True) - allowed_from(JobStatus.QUEUED)
    assert ACTIONS[Action.RESUME] == restartable | {JobStatus.PAUSED}
    assert ACTIONS[Action.FORCE_START] == restartable | {JobStatus.QUEUED}
    assert not any(JobStatus.COMPLETED in sources for sources in ACTIONS.values())


@pytest.mark.parametrize(("status", "has_checkpoint", "expected"), [
    (JobStatus.QUEUED, False, ["cancel", "force-start", "mark-failed"]),  # the stuck-queued recovery card
    (JobStatus.RUNNING, True, ["cancel", "pause", "mark-failed"]),
    (JobStatus.PAUSED, True, ["cancel", "resume", "mark-failed"]),
    (JobStatus.FAILED, True, ["resume", "force-start"]),
    (JobStatus.CANCELLED, False, ["force-start"]),  # no checkpoint: only a fresh start
    (JobStatus.COMPLETED, True, []),
])
def test_actions_for_a_status(status, has_checkpoint, expected):
    from api.record.status import actions_for

    assert [a.value for a in actions_for(status, has_checkpoint)] == expected
