"""Every endpoint needs a user except a short allowed list; tokens that are unknown, expired, revoked or a disabled
user's are refused; only a job's owner or an admin changes it; no answer sets a cookie, and a page asked for without
a credential (a browser's navigation) is a shell with no data; /rq, /metrics and cleanup are an admin's;
rq-dashboard's actions never run from a GET."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, text, update

from api.record.status import Actor, JobStatus, utcnow
from api.record.status_writer import transition
from api.record.tables import ApiToken, JobEvent, User
from api.record.webhook_tables import Webhook, WebhookDelivery
from api.service import users
from api.stores import db
from api.web import auth
from tests.support import SHORT, TOKENS, row, submit
from trainq.checkpoints import checkpoint_name

ALLOWED_WITHOUT_CREDENTIALS = {
    ("health.health", "GET"),  # {"healthy": ...} only
    ("auth.login", "GET"),  # the login page
    ("static", "GET"),  # CSS and JS
    ("rq_dashboard.static", "GET"),  # rq-dashboard's CSS and JS
}
"""(endpoint, method) pairs that may answer 2xx (or show a page) to a caller with no credentials."""

URL_VALUES = {"instance_number": 0, "queue_name": "training.mlp", "registry_name": "failed", "per_page": 10,
              "order": "asc", "page": 1, "filename": "monitor.css", "name": "model.pt"}


def _state(job_id: str, redis) -> tuple:
    """Everything a request could change: the rows, events, users, tokens and every key in Redis."""
    db.session.expire_all()
    jobs = db.session.execute(text("SELECT id, status, attempts, updated_at FROM training_jobs ORDER BY id")).all()
    counts = tuple(db.session.scalar(select(func.count()).select_from(model))
                   for model in (JobEvent, User, ApiToken, Webhook, WebhookDelivery))
    hooks = db.session.execute(text("SELECT id, enabled, events, updated_at FROM webhooks ORDER BY id")).all()
    tokens = db.session.execute(text("SELECT id, revoked_at FROM api_tokens ORDER BY id")).all()
    db.session.commit()
    read = {b"string": redis.get, b"hash": redis.hgetall, b"list": lambda k: redis.lrange(k, 0, -1),
            b"set": redis.smembers, b"zset": lambda k: redis.zrange(k, 0, -1, withscores=True),
            b"stream": lambda k: redis.xrange(k)}
    values = {key: read[redis.type(key)](key) for key in sorted(redis.keys("*"))
              if not key.startswith(b"trainq:auth-failures:")}  # the count of refused credentials (test_backoff)
    return jobs, counts, tokens, hooks, values


def _urls(app, job_id: str, hook_id: int) -> list[tuple[str, str, str]]:
    out = []
    given = {**URL_VALUES, "hook_id": hook_id, "delivery_id": uuid.UUID(int=1)}  # issue 25's webhook routes
    for rule in app.url_map.iter_rules():
        values = {arg: given.get(arg, job_id) for arg in rule.arguments}
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
    hook = client.post("/api/webhooks", json={"url": "https://93.184.216.34/hook", "events": ["failed"]})
    assert hook.status_code == 201, hook.get_json()
    anonymous = app.test_client(token=None)
    urls = _urls(app, job_id, hook.get_json()["webhook"]["id"])
    assert len(urls) > 40  # the walk covers the whole app: API, pages, rq-dashboard, metrics
    before = _state(job_id, redis)
    for endpoint, method, url in urls:
        response = anonymous.open(url, method=method, json={}, headers=headers)
        assert "Set-Cookie" not in response.headers, (endpoint, method)
        allowed = (endpoint, "GET" if method == "HEAD" else method) in ALLOWED_WITHOUT_CREDENTIALS
        if credentials == "none" and method in ("GET", "HEAD") and _is_page(endpoint):
            assert response.status_code == 200 and (method == "HEAD" or _is_shell(response)), (endpoint, method)
        elif not allowed:
            assert not 200 <= response.status_code < 300, (endpoint, method, url, response.status_code)
            if url.startswith("/api/") or endpoint in ("metrics.metrics",) or credentials != "none":
                assert response.status_code in (401, 403, 429), (endpoint, method, response.status_code)
                assert method == "HEAD" or "error" in response.get_json(), (endpoint, method)
        if response.status_code in (301, 302, 303, 307, 308):
            assert "/login" in response.headers["Location"], (endpoint, method, response.headers["Location"])
        assert _state(job_id, redis) == before, (endpoint, method, url)
    assert client.delete(f"/api/webhooks/{hook.get_json()['webhook']['id']}").status_code == 200
    if credentials == "none":
        health = anonymous.get("/api/health")
        assert health.status_code == 200 and health.get_json() == {"healthy": True}  # no details


def _is_page(endpoint: str) -> bool:
    return endpoint.startswith("pages.") or endpoint in auth.PAGES


def _is_shell(response) -> bool:
    html = response.get_data(as_text=True)
    return 'id="shell-status"' in html and "shell.js" in html and response.headers["Vary"] == "Authorization"


def test_a_new_route_is_closed_until_it_is_allowed(app):
    """The check runs before every request, not per view: a view added later needs no decorator to be closed."""
    assert auth.PUBLIC_ENDPOINTS == {"health.health", "auth.login", "static", "rq_dashboard.static"}
    assert auth.PAGES == {"docs.docs_page", "rq_dashboard.queues_overview", "rq_dashboard.workers_overview",
                          "rq_dashboard.jobs_overview", "rq_dashboard.job_view"}


def test_health_details_need_a_user(client, anon):
    assert set(client.get("/api/health").get_json()) == {"healthy", "checks", "workers", "workers_paused"}
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


# ---------------------------------------------------------------- the monitor: no cookie, pages as shells


def test_a_navigation_gets_a_shell_and_the_shells_fetch_gets_the_page(ctx, client, anon):
    """Issue 21, item 2: the monitor has no cookie (cookies go to every port of a host). A page asked for without an
    Authorization header answers a shell with no data; its script asks again with the tab's token."""
    job_id = submit(client, SHORT, name="secret-name")
    for url in ("/", f"/jobs/{job_id}", f"/compare?ids={job_id}", "/docs", "/rq/", "/rq/0/view/workers",
                f"/rq/0/view/job/{job_id}"):
        shell = anon.get(url)
        assert shell.status_code == 200 and _is_shell(shell), url
        assert shell.headers["Cache-Control"] == "no-store" and "Set-Cookie" not in shell.headers, url
        assert "secret-name" not in shell.get_data(as_text=True) and job_id not in shell.get_data(as_text=True), url
        page = client.get(url)  # what shell.js fetches, with the token in its header
        assert page.status_code == 200 and not _is_shell(page), url
        assert page.headers["Vary"] == "Authorization" and "Set-Cookie" not in page.headers, url
    assert "secret-name" in client.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert anon.get("/", headers={"Authorization": "Bearer tq_nope"}).status_code == 401
    login = anon.get("/login")
    assert login.status_code == 200 and "Set-Cookie" not in login.headers
    posted = anon.post("/login", data={"token": TOKENS["admin"]})  # no login on the server: nothing to post to
    assert posted.status_code in (401, 405) and "Set-Cookie" not in posted.headers


def test_rq_dashboard_pages_reuse_their_shells_nonce_and_send_the_token(ctx, client, anon):
    shell = anon.get("/rq/")
    nonce = re.search(r'nonce="([^"]+)"', shell.get_data(as_text=True)).group(1)
    assert f"'nonce-{nonce}'" in shell.headers["Content-Security-Policy"]
    page = client.get("/rq/", headers={"X-Shell-Nonce": nonce})
    html = page.get_data(as_text=True)
    assert f"'nonce-{nonce}'" in page.headers["Content-Security-Policy"] and f'nonce="{nonce}"' in html
    assert "/static/rq_auth.js" in html  # its jQuery calls send the tab's token
    forged = client.get("/rq/", headers={"X-Shell-Nonce": "x\"' onload=alert(1)"})
    assert "onload" not in forged.headers["Content-Security-Policy"]
    assert anon.get("/rq/", headers={"X-Shell-Nonce": nonce}).status_code == 200  # still only the shell
    assert anon.post("/rq/requeue/training.mlp").status_code == 401
    assert anon.get("/rq/static/js/jquery-3.5.1.min.js").status_code == 200  # rq-dashboard's own files


def test_unused_job_id_for_other_users_is_404_not_403(ctx, make_user):
    _, user_client, _ = make_user("missing")
    assert user_client.delete(f"/api/training/{uuid.uuid4()}").status_code == 404


@pytest.mark.parametrize("target", ["//evil.example/x", "/\t/evil.example", "/\\evil.example", "/\nx",
                                    "https://evil.example/", "/ /evil.example", "javascript:alert(1)"])
def test_login_never_redirects_off_site(anon, target):
    page = anon.get("/login", query_string={"next": target}).get_data(as_text=True)
    assert 'data-next="/"' in page
