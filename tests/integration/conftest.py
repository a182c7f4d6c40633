"""Integration tests run no worker: every one gets the placeholder host (tests/conftest.py), so a submit is placed
on it and enqueued on its queue, as on a real host; no one runs what lands there."""

import pytest


@pytest.fixture(autouse=True)
def _placed_on_the_placeholder_host(request: pytest.FixtureRequest) -> None:
    if "ctx" in request.fixturenames or "app" in request.fixturenames:
        request.getfixturevalue("placeholder_host")
