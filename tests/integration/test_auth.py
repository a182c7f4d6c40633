"""Every endpoint needs a user except a short allowed list; tokens that are unknown, expired, revoked or a disabled
user's are refused; only a job's owner or an admin changes it; the session cookie needs the CSRF token; /rq,
/metrics and cleanup are an admin's; rq-dashboard's actions never run from a GET."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, text, update

from api.record.status import Actor, JobStatus, utcnow
from api.record.status_writer import transition
from api.record.tables import ApiToken, JobEvent, TrainingJob, User
from api.service import users
from api.stores import db
from api.web import auth
from tests.support import SHORT, TOKENS, row, submit
from trainq.checkpoints import checkpoint_name

ALLOWED_WITHOUT_CREDENTIALS = {
    ("health.health", "GET"),  # {"healthy": ...} only
    ("auth.login", "GET"),  # the login page
    ("auth.login", "POST"),  # the login form: without a token it logs no one in (and needs the page's CSRF token)
    ("static", "GET"),  # CSS and JS
}
"""(endpoint, method) pairs that may answer 2xx (or show a page) to a caller with no credentials."""

URL_VALUES = {"instance_number": 0, "queue_name": "training.mlp", "registry_name": "failed", "per_page": 10,
              "order": "asc", "page": 1, "filename": "monitor.css", "name": "model.pt"}


def _state(job_id: str, redis) -> tuple:
    """Everything a request could change: the rows, events, users, tokens and every key in Redis."""
    db.session.expire_all()
    jobs = db.session.execute(text("SELECT id, status, attempts, updated_at FROM training_jobs ORDER BY id")).all()
    counts = tuple(db.session.scalar(select(func.count()).select_from(model)) for model in (JobEvent, User, ApiToken))
    tokens = db.session.execute(text("SELECT id, revoked_at FROM api_tokens ORDER BY id")).all()
    db.session.commit()
    read = {b"string": redis.get, b"hash": redis.hgetall, b"list": lambda k: redis.lrange(k, 0, -1),
            b"set": redis.smembers, b"zset": lambda k: redis.zrange(k, 0, -1, withscores=True),
            b"stream": lambda k: redis.xrange(k)}
    values = {key: read[redis.type(key)](key) for key in sorted(redis.keys("*"))}
    return jobs, counts, tokens, values


def _urls(app, job_id: str) -> list[tuple[str, str, str]]:
    out = []
    for rule in app.url_map.iter_rules():
        values = {arg: URL_VALUES.get(arg, job_id) for arg in rule.arguments}
        with app.test_request_context():
            from flask import url_for

            url = url_for(rule.endpoint, **values)
        for method in sorted(rule.methods - {"OPTIONS"}):
            out.append((rule.endpoint, method, url))
    return out


@pytest.mark.parametrize("credentials", ["none", "bad token", "not bearer"])
def test_every_route_refuses_or_changes_nothing_without_credentials(app, client, redis, credentials):
    from rq.registry import FailedJobRegistry

    from api.queue import fetch, get_queue

    job_id = submit(client, SHORT)
    failed_id = submit(client, SHORT)  # failed in RQ: what rq-dashboard's requeue-all would requeue
    queue = get_queue(fetch(failed_id).origin)  # the queue of the host it was placed on
    rq_job = queue.fetch_job(failed_id)
    queue.remove(rq_job)
    FailedJobRegistry(queue=queue).add(rq_job, ttl=600)
    headers = {"none": {}, "bad token": {"Authorization": "Bearer tq_not-a-token"},
               "not bearer": {"Authorization": f"Basic {TOKENS['admin']}"}}[credentials]
    anonymous = app.test_client(token=None)
    urls = _urls(app, job_id)
    assert len(urls) > 40  # the walk covers the whole app: API, pages, rq-dashboard, metrics
    before = _state(job_id, redis)
    for endpoint, method, url in urls:
        response = anonymous.open(url, method=method, json={}, headers=headers)
        allowed = (endpoint, method) in ALLOWED_WITHOUT_CREDENTIALS or (
            (endpoint, method) == ("auth.login", "HEAD") or (endpoint, method) == ("static", "HEAD")
            or (endpoint, method) == ("health.health", "HEAD"))
        if not allowed:
            assert not 200 <= response.status_code < 300, (endpoint, method, url, response.status_code)
            if url.startswith("/api/") or endpoint in ("metrics.metrics",):
                assert response.status_code in (401, 403), (endpoint, method, response.status_code)
                assert method == "HEAD" or "error" in response.get_json(), (endpoint, method)
        if response.status_code in (301, 302, 303, 307, 308):
            assert "/login" in response.headers["Location"], (endpoint, method, response.headers["Location"])
        assert _state(job_id, redis) == before, (endpoint, method, url)
    if credentials == "none":
        health = anonymous.get("/api/health")
        assert health.status_code == 200 and health.get_json() == {"healthy": True}  # no details


def test_a_new_route_is_closed_until_it_is_allowed(app):
    """The check runs before every request, not per view: a view added later needs no decorator to be closed."""
    assert auth.PUBLIC_ENDPOINTS == {"health.health", "auth.login", "static"}


def test_health_details_need_a_user(client, anon):
    assert set(client.get("/api/health").get_json()) == {"healthy", "checks", "workers"}
    assert anon.get("/api/health").get_json() == {"healthy": True}


def test_unknown_expired_revoked_and_disabled_tokens_are_refused(ctx, make_user):
    user, user_client, raw = make_user("tokens")
    assert user_client.get("/api/training").status_code == 200
    anon = ctx.test_client(token=None)

    def answer(token: str) -> tuple[int, str]:
        response = anon.get("/api/training", headers={"Authorization": f"Bearer {token}"})
        return response.status_code, response.get_json().get("error", {}).get("message")

    assert answer("tq_" + "x" * 43) == (401, "unknown token")
    assert answer(raw + "x") == (401, "unknown token")
    token, expiring = users.create_token(user, "soon", expires_in_days=1)
    assert answer(expiring)[0] == 200
    db.session.execute(update(ApiToken).where(ApiToken.id == token.id).values(expires_at=utcnow() - timedelta(1)))
    db.session.commit()
    assert answer(expiring) == (401, "the token has expired")

    revoked, revoked_raw = users.create_token(user, "revoke me")
    assert answer(revoked_raw)[0] == 200
    users.revoke_token(revoked.id)
    assert answer(revoked_raw) == (401, "the token was revoked")

    assert answer(raw)[0] == 200
    users.set_disabled(user.name, True)
    assert answer(raw) == (401, f"user {user.name} is disabled")
    response = anon.get("/api/training", headers={"Authorization": "Token abc"})
    assert response.status_code == 401 and response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.get_json()["error"]["code"] == "unauthorized"


def test_tokens_are_stored_hashed_and_last_use_is_written_at_most_once_a_minute(ctx, make_user):
    import hashlib

    user, user_client, raw = make_user("hash")
    [token] = users.list_tokens(user)
    assert raw.startswith("tq_") and len(raw) >= 3 + 43  # 32 random bytes, URL-safe base64
    assert token.token_hash == hashlib.sha256(raw.encode()).hexdigest() and raw not in token.token_hash
    assert token.last_used_at is None
    user_client.get("/api/training")
    db.session.expire_all()
    first = db.session.get(ApiToken, token.id).last_used_at
    db.session.commit()
    assert first is not None
    user_client.get("/api/training")
    db.session.expire_all()
    assert db.session.get(ApiToken, token.id).last_used_at == first  # within the minute: not written again
    db.session.commit()


def test_a_metrics_scope_token_reads_metrics_and_nothing_else(ctx, make_user):
    user, user_client, _ = make_user("prometheus")
    _, scrape = users.create_token(user, "prometheus", scope="metrics")
    anon = ctx.test_client(token=None)
    assert user_client.get("/metrics").status_code == 403  # not an admin
    response = anon.get("/metrics", headers={"Authorization": f"Bearer {scrape}"})
    assert response.status_code == 200 and b"trainq_jobs" in response.data
    refused = anon.get("/api/training", headers={"Authorization": f"Bearer {scrape}"})
    assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "token_scope"
    assert ctx.test_client().get("/metrics").status_code == 200  # the admin
    health = anon.get("/api/health", headers={"Authorization": f"Bearer {scrape}"})
    assert health.status_code == 200 and health.get_json() == anon.get("/api/health").get_json()  # no details


# ---------------------------------------------------------------- ownership


def _running(job_id: str) -> None:
    job = row(job_id)
    assert transition(job_id, JobStatus.RUNNING, reason="test", actor=Actor.WORKER, attempt=job.attempts).changed


def _failed_with_checkpoint(client, job_id: str, checkpoint_dir: str) -> None:
    client.post(f"/api/training/{job_id}/mark-failed", json={"reason": "test"})
    folder = Path(checkpoint_dir) / job_id
    folder.mkdir(parents=True, exist_ok=True)
    (folder / checkpoint_name(1, 1, 10)).write_bytes(b"not really a checkpoint")


ACTIONS = {
    # action: (how to put an owner's fresh job where the action is allowed, method, path, body, ok status)
    "cancel": (None, "DELETE", "", None, 200),
    "mark-failed": (None, "POST", "/mark-failed", {"reason": "stuck"}, 200),
    "pause": ("running", "POST", "/pause", None, 202),
    "force-start": ("failed", "POST", "/force-start", None, 200),
    "resume": ("failed with checkpoint", "POST", "/resume", None, 200),
}


@pytest.mark.parametrize("who", ["owner", "other user", "admin"])
@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_only_the_owner_or_an_admin_may_act_on_a_job(ctx, settings, make_user, action, who):
    owner, owner_client, _ = make_user("owner")
    other, other_client, _ = make_user("other")
    admin, admin_client, _ = make_user("admin", admin=True)
    setup, method, suffix, body, ok = ACTIONS[action]
    job_id = submit(owner_client, SHORT)
    if setup == "running":
        _running(job_id)
    elif setup == "failed":
        owner_client.post(f"/api/training/{job_id}/mark-failed", json={"reason": "test"})
    elif setup == "failed with checkpoint":
        _failed_with_checkpoint(owner_client, job_id, settings["CHECKPOINT_DIR"])
    acting, actor = {"owner": (owner_client, owner), "other user": (other_client, other),
                     "admin": (admin_client, admin)}[who]
    assert action in acting.get(f"/api/training/{job_id}").get_json()["actions"] or who == "other user"
    events_before = acting.get(f"/api/training/{job_id}/events").get_json()["events"]
    status_before = row(job_id).status
    response = acting.open(f"/api/training/{job_id}{suffix}", method=method, json=body)
    if who == "other user":
        assert response.status_code == 403, response.get_json()
        error = response.get_json()["error"]
        assert error["code"] == "not_owner" and owner.name in error["message"]
        assert row(job_id).status == status_before
        assert acting.get(f"/api/training/{job_id}/events").get_json()["events"] == events_before
        assert acting.get(f"/api/training/{job_id}").get_json()["actions"] == []  # no button to show
        return
    assert response.status_code == ok, response.get_json()
    if action != "pause":  # a pause is recorded by the worker when the task stops
        events = acting.get(f"/api/training/{job_id}/events").get_json()["events"]
        assert events[-1]["actor"] == "api" and events[-1]["user"] == actor.name, events
        assert events[0]["user"] == owner.name  # the submit


def test_any_user_reads_every_job(ctx, make_user):
    _, owner_client, _ = make_user("owner")
    other, other_client, _ = make_user("reader")
    job_id = submit(owner_client, SHORT)
    for path in ("", "/events", "/logs", "/checkpoints", "/artifacts"):
        assert other_client.get(f"/api/training/{job_id}{path}").status_code == 200, path
    listed = other_client.get("/api/training").get_json()["jobs"]
    assert [job["id"] for job in listed] == [job_id] and listed[0]["owner"].startswith("owner-")
    assert other_client.get(f"/jobs/{job_id}").status_code == 200


def test_admin_only_cleanup_metrics_and_dashboard(ctx, make_user):
    _, user_client, _ = make_user("plain")
    for method, url in (("POST", "/api/training/admin/cleanup"), ("GET", "/metrics"), ("GET", "/rq/"),
                        ("GET", "/rq/0/data/queues.json"), ("POST", "/rq/queue/training.mlp/compact")):
        response = user_client.open(url, method=method)
        assert response.status_code == 403, (url, response.status_code)
        assert response.get_json()["error"]["code"] == "admin_only"
    admin = ctx.test_client()
    assert admin.post("/api/training/admin/cleanup").status_code == 200
    assert admin.get("/rq/0/data/queues.json").status_code == 200


def test_pages_hide_admin_links_from_users(ctx, make_user):
    _, user_client, _ = make_user("plain")
    html = user_client.get("/").get_data(as_text=True)
    assert 'href="/rq/"' not in html and 'href="/metrics"' not in html and "Log out" in html
    assert 'href="/rq/"' in ctx.test_client().get("/").get_data(as_text=True)


# ---------------------------------------------------------------- rq-dashboard


def test_rq_dashboard_actions_never_run_from_a_get(ctx, client, redis):
    from rq.registry import FailedJobRegistry

    from api.queue import fetch, get_queue

    job_id = submit(client, SHORT)
    queue = get_queue(fetch(job_id).origin)  # the queue of the host it was placed on
    rq_job = queue.fetch_job(job_id)
    queue.remove(rq_job)
    FailedJobRegistry(queue=queue).add(rq_job, ttl=600)
    for url in (f"/rq/requeue/{queue.name}", f"/rq/job/{job_id}/requeue", f"/rq/job/{job_id}/delete",
                f"/rq/queue/{queue.name}/failed/empty", f"/rq/queue/{queue.name}/compact"):
        response = client.get(url)
        assert response.status_code == 405, (url, response.status_code)
        assert "GET" not in response.headers["Allow"], (url, response.headers["Allow"])
    assert "only from a POST" in client.get(f"/rq/requeue/{queue.name}").get_json()["error"]["message"]
    assert job_id in FailedJobRegistry(queue=queue).get_job_ids() and job_id not in queue.job_ids
    posted = client.post(f"/rq/requeue/{queue.name}")  # POST with the admin's bearer token: it runs
    assert posted.status_code == 200 and "is queued, not failed" in posted.get_json()["refused"][job_id]


# ---------------------------------------------------------------- the monitor's session and CSRF


def _login(test_client, token: str):
    page = test_client.get("/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    response = test_client.post("/login", data={"token": token, "csrf_token": csrf, "next": "/jobs/x"})
    return response, csrf


def test_session_login_needs_csrf_on_every_state_changing_request(ctx, make_user):
    user, _, raw = make_user("browser")
    browser = ctx.test_client(token=None)
    assert browser.get("/").status_code == 302 and "/login" in browser.get("/").headers["Location"]
    assert browser.post("/login", data={"token": raw}).status_code == 403  # the login form's CSRF token too
    response, _ = _login(browser, raw)
    assert response.status_code == 302 and response.headers["Location"] == "/jobs/x"
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    html = browser.get("/").get_data(as_text=True)
    csrf = re.search(r'<meta name="csrf-token" content="([^"]+)"', html).group(1)
    assert browser.get("/api/training").status_code == 200  # reads need no CSRF token

    refused = browser.post("/api/training", json={"task": "mlp", "params": SHORT})
    assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "csrf_failed"
    assert browser.post("/api/training", json={"task": "mlp", "params": SHORT},
                        headers={"X-CSRF-Token": "wrong"}).status_code == 403
    assert db.session.scalar(select(func.count()).select_from(TrainingJob)) == 0
    created = browser.post("/api/training", json={"task": "mlp", "params": SHORT}, headers={"X-CSRF-Token": csrf})
    assert created.status_code == 201 and created.get_json()["job"]["owner"] == user.name
    job_id = created.get_json()["job"]["id"]
    for method, path in (("DELETE", ""), ("POST", "/mark-failed"), ("POST", "/force-start"), ("POST", "/pause")):
        response = browser.open(f"/api/training/{job_id}{path}", method=method)
        assert response.status_code == 403 and response.get_json()["error"]["code"] == "csrf_failed", path
    assert row(job_id).status == "queued"
    assert browser.delete(f"/api/training/{job_id}", headers={"X-CSRF-Token": csrf}).status_code == 200

    assert browser.post("/logout").status_code == 403  # logout is a form post with the token
    assert browser.post("/logout", data={"csrf_token": csrf}).status_code == 302
    assert browser.get("/api/training").status_code == 401


def test_a_session_ends_when_its_token_is_revoked(ctx, make_user):
    user, _, raw = make_user("revoked-session")
    browser = ctx.test_client(token=None)
    _login(browser, raw)
    assert browser.get("/api/me").get_json()["user"]["name"] == user.name
    [token] = users.list_tokens(user)
    users.revoke_token(token.id)
    assert browser.get("/api/me").status_code == 401
    assert browser.get("/").status_code == 302


def test_login_refuses_bad_tokens_and_foreign_redirects(ctx, make_user):
    _, _, raw = make_user("redirect")
    browser = ctx.test_client(token=None)
    page = browser.get("/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    bad = browser.post("/login", data={"token": "tq_wrong", "csrf_token": csrf})
    assert bad.status_code == 401 and "unknown token" in bad.get_data(as_text=True)
    response = browser.post("/login", data={"token": raw, "csrf_token": csrf, "next": "//evil.example/x"})
    assert response.headers["Location"] == "/"


def test_the_session_cookie_is_secure_over_https(ctx, make_user):
    _, _, raw = make_user("https")
    browser = ctx.test_client(token=None)
    page = browser.get("/login", base_url="https://localhost").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    response = browser.post("/login", base_url="https://localhost", data={"token": raw, "csrf_token": csrf})
    assert response.status_code == 302 and "Secure" in response.headers["Set-Cookie"]


def test_a_bearer_request_needs_no_csrf_token_even_with_a_cookie(ctx, make_user):
    _, _, raw = make_user("both")
    browser = ctx.test_client(token=None)
    _login(browser, raw)
    response = browser.post("/api/training", json={"task": "mlp", "params": SHORT},
                            headers={"Authorization": f"Bearer {raw}"})
    assert response.status_code == 201


def test_rq_dashboard_posts_with_the_session_need_csrf_and_its_pages_send_it(ctx, make_user):
    _, _, raw = make_user("rq-admin", admin=True)
    browser = ctx.test_client(token=None)
    _login(browser, raw)
    refused = browser.post("/rq/requeue/training.mlp")  # what a cross-site form post would be
    assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "csrf_failed"
    html = browser.get("/rq/").get_data(as_text=True)
    csrf = re.search(r'"X-CSRF-Token": "([^"]+)"', html).group(1)
    assert browser.post("/rq/requeue/training.mlp", headers={"X-CSRF-Token": csrf}).status_code == 200


def test_unused_job_id_for_other_users_is_404_not_403(ctx, make_user):
    _, user_client, _ = make_user("missing")
    assert user_client.delete(f"/api/training/{uuid.uuid4()}").status_code == 404


def test_logout_ends_a_copy_of_the_session_cookie_too(ctx, make_user):
    user, _, raw = make_user("logout")
    browser = ctx.test_client(token=None)
    response, _ = _login(browser, raw)
    name = ctx.config["SESSION_COOKIE_NAME"]
    copied = browser.get_cookie(name).value
    html = browser.get("/").get_data(as_text=True)
    csrf = re.search(r'<meta name="csrf-token" content="([^"]+)"', html).group(1)
    assert browser.post("/logout", data={"csrf_token": csrf}).status_code == 302
    thief = ctx.test_client(token=None)
    thief.set_cookie(name, copied)
    assert thief.get("/api/me").status_code == 401  # the copy taken before the logout is dead too
    again, _ = _login(browser, raw)  # the token itself still logs in
    assert again.status_code == 302 and browser.get("/api/me").get_json()["user"]["name"] == user.name


@pytest.mark.parametrize("target", ["//evil.example/x", "/\t/evil.example", "/\\evil.example", "/\nx",
                                    "https://evil.example/", "/ /evil.example", "javascript:alert(1)"])
def test_login_never_redirects_off_site(ctx, make_user, target):
    _, _, raw = make_user("next")
    browser = ctx.test_client(token=None)
    page = browser.get("/login", query_string={"next": target}).get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    response = browser.post("/login", data={"token": raw, "csrf_token": csrf, "next": target})
    assert response.status_code == 302 and response.headers["Location"] == "/"
