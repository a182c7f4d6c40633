"""Checks of our own for the fuzzing in ``test_fuzz.py``, loaded by schemathesis (``SCHEMATHESIS_HOOKS``)."""

from __future__ import annotations

import json
import re
from typing import Any

import schemathesis

_TRACE = re.compile(r"Traceback \(most recent call last\)|File \"[^\"]+\", line \d+")


def _texts(value: Any) -> str:
    """Every string in a JSON answer, keys too, but a job's ``error_message``: its task's own traceback, shown to
    its user on purpose, not the server's."""
    if isinstance(value, dict):
        return "\n".join(f"{k}\n{_texts(v)}" for k, v in value.items() if k != "error_message")
    if isinstance(value, list):
        return "\n".join(_texts(v) for v in value)
    return value if isinstance(value, str) else ""


@schemathesis.check
def no_stack_trace(ctx, response, case):
    """No answer, of any status, shows a stack trace of the service (the server log has them)."""
    text = response.text or ""
    if response.status_code < 400 and "json" in (response.headers.get("content-type") or [""])[0]:
        try:
            text = _texts(json.loads(text))
        except ValueError:
            pass
    if _TRACE.search(text):
        raise AssertionError(f"a stack trace in the body of a {response.status_code}: {text[:300]}")
