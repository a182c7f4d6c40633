"""End-to-end fixtures shared by the CLI's tests: the API behind gunicorn (one per test module) and the ``trainq``
command's environment pointed at it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import start_gunicorn


@pytest.fixture(scope="module")
def api_settings() -> dict[str, str]:
    """Settings the module's gunicorn gets on top of the session's (a module overrides this fixture)."""
    return {}


@pytest.fixture(scope="module")
def api_url(app, settings: dict[str, str], api_settings: dict[str, str],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    process, url = start_gunicorn({**settings, **api_settings}, tmp_path_factory.mktemp("gunicorn") / "gunicorn.log")
    yield url
    process.terminate()
    process.wait(30)


@pytest.fixture
def cli_env(api_url: str, admin_token: str, tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "TRAINQ_URL": api_url, "TRAINQ_TOKEN": admin_token, "XDG_CONFIG_HOME": str(tmp_path),
            "COLUMNS": "200"}
