"""The monitor in a real browser: Debian's Chromium driven by Playwright, against the app served by gunicorn
with sync workers (as in production), real Redis/PostgreSQL and real worker processes.

Without /usr/bin/chromium these tests skip with how to install it; under CI (CI=true) they fail instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import start_gunicorn

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
MONITOR_SETTINGS = {
    "HEARTBEAT_TIMEOUT": "4",  # a dead worker's job turns stale quickly on the page
    "RECONCILE_ON_START": "false",
}


@pytest.fixture(scope="session")
def browser() -> Iterator:
    if not CHROMIUM.exists():
        message = (f"no Chromium at {CHROMIUM}: install Debian's package (apt-get install chromium) to run the "
                   "browser tests, or point CHROMIUM at one")
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def monitor_url(app, settings: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app behind gunicorn, 2 sync workers, on a free port."""
    log_path = tmp_path_factory.mktemp("gunicorn") / "gunicorn.log"
    process, url = start_gunicorn({**settings, **MONITOR_SETTINGS}, log_path, "--worker-class", "sync")
    yield url
    process.terminate()
    process.wait(15)


def log_in(tab, token: str) -> None:
    """Log ``tab``'s browser context in the way a user does with make run's link: /login#token=..."""
    tab.goto(f"/login#token={token}")
    tab.wait_for_url("**/")
    tab.locator("#current-user").wait_for()


@pytest.fixture
def browser_context(browser, monitor_url: str, ctx) -> Iterator:
    """Factory: fresh browser contexts on the monitor (clean tables, see ``ctx``), each tab failing the test on
    any JavaScript error."""
    contexts, errors = [], []

    def new_tab():
        context = browser.new_context(base_url=monitor_url, viewport={"width": 1280, "height": 900})
        context.set_default_timeout(15_000)
        contexts.append(context)
        tab = context.new_page()
        tab.on("pageerror", lambda exc: errors.append(str(exc)))
        return tab

    yield new_tab
    for context in contexts:
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture
def page(browser_context, admin_token: str) -> Iterator:
    """A browser tab logged in as the test session's admin."""
    tab = browser_context()
    log_in(tab, admin_token)
    yield tab
