"""The transition table itself: terminals have no exits, every status is reachable, groups are right."""

from api.status import ACTIVE, INITIAL, TERMINAL, TRANSITIONS, JobStatus, allowed_from


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


def test_groups():
    assert TERMINAL == {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED}
    assert ACTIVE == {JobStatus.QUEUED, JobStatus.RUNNING}
    assert not TERMINAL & ACTIVE
