"""The transition table itself: terminals have no exits, every status is reachable, groups are right."""

import pytest

from api.status import ACTIVE, INITIAL, RESTARTS, TERMINAL, TRANSITIONS, Actor, JobStatus, allowed_from, transition


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
    assert TERMINAL == {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED}
    assert ACTIVE == {JobStatus.QUEUED, JobStatus.RUNNING}
    assert not TERMINAL & ACTIVE
