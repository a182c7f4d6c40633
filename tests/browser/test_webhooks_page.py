"""The monitor's /webhooks page in a real browser, on main's design (issue 21): a navigation without a token gets
the page's shell, which sends the tab to log in and back; the page then comes with the tab's token, and every
change it makes is a call to /api/webhooks with that token in an Authorization header (no cookie, no CSRF)."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select

from api.record.webhook_tables import Webhook
from api.stores import db

pytestmark = [pytest.mark.browser, pytest.mark.e2e]
LOGIN_PAGE = re.compile(r".*/login\?next=%2Fwebhooks$")
HOOK_URL = "https://93.184.216.34/trainq-browser-test"  # a global address: taken without WEBHOOK_ALLOW_PRIVATE
# (no sender runs beside the browser tests' gunicorn, so nothing is ever sent there)


def test_a_user_logs_in_adds_a_webhook_on_the_page_and_sees_it_listed(browser_context, make_user):
    user, _, raw = make_user("hooks")
    page: Page = browser_context()
    api_calls: list = []
    page.on("request", lambda request: api_calls.append(request) if "/api/webhooks" in request.url else None)

    page.goto("/webhooks")
    page.wait_for_url(LOGIN_PAGE)  # the shell: no token in this tab, so the login page, then back
    page.locator("#token").fill(raw)
    page.locator("#login-form button[type=submit]").click()
    page.wait_for_url("**/webhooks")
    expect(page.locator("#current-user")).to_have_text(user.name)
    expect(page.locator("#hooks")).to_contain_text("No webhooks yet.")

    page.locator("#hook-url").fill("http://127.0.0.1:9/")  # loopback, refused without WEBHOOK_ALLOW_PRIVATE
    page.locator("#new-hook button[type=submit]").click()
    expect(page.locator("#hook-message")).to_have_class("form-error")
    expect(page.locator("#hook-message")).to_contain_text("127.0.0.1")

    page.locator("#hook-url").fill(HOOK_URL)
    page.locator("input[name=events][value=cancelled]").check()
    page.locator("#hook-task").fill("mlp")
    page.locator("#new-hook button[type=submit]").click()
    expect(page.locator("#hook-message")).to_contain_text(re.compile(r"webhook \d+ added"))
    secret = page.locator("#new-secret").inner_text()
    assert secret.startswith("whsec_")
    hook = page.locator("#hooks article.hook")
    expect(hook).to_have_count(1)
    expect(hook.locator("code")).to_have_text(HOOK_URL)
    events = hook.locator("p").first.inner_text().split(" · ")[0]
    assert set(events.split(", ")) == {"completed", "failed", "cancelled"}, events
    expect(hook).to_contain_text("task mlp")
    expect(hook.locator(".hook-state")).to_have_text("enabled")

    db.session.rollback()
    row = db.session.scalar(select(Webhook).where(Webhook.url == HOOK_URL))
    assert row is not None and row.owner_id == user.id and row.filter_task == "mlp"

    page.reload()  # a navigation again: the shell fetches the page with the token; the hook is listed from the server
    expect(page.locator("#hooks article.hook code")).to_have_text(HOOK_URL)
    assert secret not in page.content()  # shown once
    page.locator("#hooks article.hook button.toggle").click()
    expect(page.locator("#hooks article.hook .hook-state")).to_contain_text("disabled")

    assert page.context.cookies() == []  # nothing for a browser to send by itself
    posted = [request for request in api_calls if request.method in ("POST", "PATCH")]
    assert len(posted) == 3  # the refused one, the added one, the disable
    for request in api_calls:
        headers = request.all_headers()
        assert headers.get("authorization") == f"Bearer {raw}", (request.method, request.url)
        assert "cookie" not in headers and "x-csrf-token" not in headers, (request.method, request.url)
    db.session.delete(db.session.get(Webhook, row.id))  # the session's other tests list every hook as the admin
    db.session.commit()
