"""How the CLI writes a length of time: a short job's is never "0 s"."""

from __future__ import annotations

import pytest

from trainq.cli import duration_text


@pytest.mark.parametrize(("seconds", "text"), [
    (None, None), (0.04, "0.0 s"), (0.4, "0.4 s"), (9.94, "9.9 s"), (12.4, "12 s"), (75, "1 min 15 s"),
    (3 * 3600 + 125, "3 h 2 min"),
])
def test_duration_text(seconds, text) -> None:
    assert duration_text(seconds) == text
