"""Logging in to the monitor in a real browser: a user pastes a token, submits from the form, and sees the
buttons on their own job but none on another user's; the timeline says who acted; logging out ends the
session."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import log_in
from tests.browser.test_monitor import open_form, param, shown_actions
from tests.support import LONG, row, submit

pytestmark = [pytest.mark.browser, pytest.mark.e2e]
LOGIN_PAGE = re.compile(r".*/login\?next=.+")


def test_a_user_logs_in_submits_and_sees_no_cancel_on_another_users_job(browser_context, client, make_user):
    user, _, raw = make_user("alice")
    theirs = submit(client, LONG, name="the admin's job")  # the session admin owns it

    page: Page = browser_context()
    page.goto("/")
    page.wait_for_url(LOGIN_PAGE)  # not logged in: the login page, then back
    expect(page.locator("nav")).to_have_count(0)
    page.locator("#token").fill("tq_not-a-token")
    page.locator("#login-form button[type=submit]").click()
    expect(page.locator("#login-error")).to_contain_text("unknown token")
    page.locator("#token").fill(raw)
    page.locator("#login-form button[type=submit]").click()
    page.wait_for_url("**/")
    expect(page.locator("#current-user")).to_have_text(user.name)
    expect(page.locator("nav a[href='/rq/']")).to_have_count(0)  # not an admin: no dashboard, no metrics
    expect(page.locator("nav a[href='/metrics']")).to_have_count(0)

    form = open_form(page, "mlp")
    form.locator("#job-name").fill("alice's job")
    param(form, "epochs").fill("3")
    form.locator("button[type=submit]").click()  # a POST with the session cookie and the CSRF header
    page.wait_for_url("**/jobs/*")
    mine = page.url.rsplit("/", 1)[1]
    assert row(mine).owner_id == user.id
    expect(page.locator("#actions button[data-action=cancel]")).to_be_visible()
    expect(page.locator("#d-owner")).to_have_text(user.name)
    expect(page.locator("#timeline")).to_contain_text(f"by api ({user.name})")

    page.goto(f"/jobs/{theirs}")
    expect(page.locator("#d-owner")).to_have_text("admin")
    expect(page.locator("#timeline")).to_contain_text("by api (admin)")
    page.wait_for_timeout(1500)  # a poll or two: still no button
    assert shown_actions(page) == []
    expect(page.locator("#actions button")).to_have_count(0)

    page.goto("/")
    expect(page.locator("#job-rows")).to_contain_text("alice's job")
    page.locator("#logout").click()
    page.wait_for_url("**/login")
    page.goto(f"/jobs/{mine}")
    page.wait_for_url(LOGIN_PAGE)


def test_make_runs_login_link_logs_in_without_sending_the_token(browser_context, admin_token, monitor_url):
    page: Page = browser_context()
    sent: list[str] = []
    page.on("request", lambda request: sent.append(request.url + " " + (request.post_data or "")))
    log_in(page, admin_token)
    assert page.url == f"{monitor_url}/" and "#" not in page.url
    expect(page.locator("nav a[href='/rq/']")).to_be_visible()  # the admin's links
    # the token went only in the login form's body, never in a URL
    assert not [line for line in sent if admin_token in line.split(" ", 1)[0]]
