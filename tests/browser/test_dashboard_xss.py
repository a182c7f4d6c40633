"""A hostile job name never runs script in the admin's rq-dashboard (issue 21, item 1), on any of its pages,
whether the text came in through the job's name (RQ's fields carry none now) or sits in RQ's fields already (a
job enqueued before the fix): what its templates insert unescaped arrives escaped. And a login link never
switches a logged-in browser to another user silently (item 6)."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.support import LONG, submit

pytestmark = [pytest.mark.browser, pytest.mark.e2e]
HOSTILE = '<img src=x onerror="window.__xss=(window.__xss||0)+1"><script>window.__xss=1</script>'
REGISTRIES = ("queued", "failed", "started", "deferred", "finished", "canceled", "scheduled")


def test_a_hostile_job_name_runs_no_script_on_any_rq_dashboard_page(page: Page, client, redis, placeholder_host):
    from rq.registry import FailedJobRegistry

    from api.queue import fetch, get_queue

    queued = submit(client, LONG, name=HOSTILE)
    failed = submit(client, LONG, name=HOSTILE)
    queue = get_queue(fetch(failed).origin)  # the queue of the host it was placed on
    redis.hset(f"rq:job:{failed}", "description", HOSTILE)  # as RQ held it before the fix
    queue.remove(failed)
    FailedJobRegistry(queue=queue).add(queue.fetch_job(failed), ttl=600)
    violations: list[str] = []
    page.on("console", lambda message: violations.append(message.text) if "Content Security" in message.text
            else None)

    pages = ["/rq/", "/rq/0/view/workers", f"/rq/0/view/job/{queued}", f"/rq/0/view/job/{failed}",
             *(f"/rq/0/view/jobs/{queue.name}/{registry}/8/asc/1" for registry in REGISTRIES)]
    for path in pages:
        page.goto(path)
        page.wait_for_load_state("networkidle")
        assert page.evaluate("window.__xss") is None, path
        assert page.locator("img[src=x]").count() == 0, path
    page.goto(f"/rq/0/view/job/{failed}")
    expect(page.locator("#job-data .description-scroll")).to_have_text(HOSTILE)  # shown as text
    page.goto(f"/rq/0/view/jobs/{queue.name}/failed/8/asc/1")
    expect(page.locator("body")).to_contain_text(failed)  # its list works (its own script ran)
    assert page.evaluate("window.__xss") is None
    assert not [text for text in violations if "script-src" in text and "eval" in text], violations


def test_a_login_link_asks_before_switching_a_logged_in_browser(page: Page, make_user, admin_token):
    bob, _, raw = make_user("bob")
    admin_name = page.locator("#current-user").inner_text()
    page.goto(f"/login?next=/#token={raw}")
    expect(page.locator("#login-submit")).to_have_text(f"Log in as {bob.name}?")
    assert page.url.endswith("/login?next=/")  # the token left the address bar, and nothing was submitted
    page.goto("/")
    expect(page.locator("#current-user")).to_have_text(admin_name)
    page.goto(f"/login?next=/#token={raw}")
    page.locator("#login-submit").click()  # asked, and confirmed
    page.wait_for_url("**/")
    expect(page.locator("#current-user")).to_have_text(bob.name)
