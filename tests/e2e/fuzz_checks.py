"""Checks of our own for the fuzzing in ``test_fuzz.py``, loaded by schemathesis (``SCHEMATHESIS_HOOKS``)."""

from __future__ import annotations

import re

import schemathesis

_TRACE = re.compile(r"Traceback \(most recent call last\)|File \"[^\"]+\", line \d+|\b\w+(Error|Exception): .*\n\s+at ")


@schemathesis.check
def no_stack_trace(ctx, response, case):
    """No answer, of any status, shows a stack trace (the server log has them)."""
    if _TRACE.search(response.text or ""):
        raise AssertionError(f"a stack trace in the body of a {response.status_code}: {response.text[:300]}")
