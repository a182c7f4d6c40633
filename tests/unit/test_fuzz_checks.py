"""The fuzzing's own check (tests/e2e/fuzz_checks.py) catches a stack trace, and only a real one."""

from __future__ import annotations

import json

import pytest

from tests.e2e.fuzz_checks import no_stack_trace

TRACE = 'Traceback (most recent call last):\n  File "/srv/api/jobs.py", line 3, in submit'


class Answer:
    def __init__(self, status: int, body: object) -> None:
        self.status_code, self.headers = status, {"content-type": ["application/json"]}
        self.text = body if isinstance(body, str) else json.dumps(body)


@pytest.mark.parametrize("answer", [Answer(500, TRACE), Answer(400, {"error": {"message": TRACE}}),
                                    Answer(200, {"jobs": [{"status_reason": TRACE}]})])
def test_a_stack_trace_anywhere_fails(answer):
    with pytest.raises(AssertionError, match="a stack trace"):
        no_stack_trace(None, answer, None)


def test_a_jobs_own_task_traceback_is_its_users_to_see():
    no_stack_trace(None, Answer(200, {"jobs": [{"error_message": TRACE, "status_reason": "failed"}]}), None)
