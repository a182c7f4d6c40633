"""Limits: a foreign Host is a 400 (on loopback too), a body over MAX_CONTENT_LENGTH a 413, a user's queued jobs
past their limit a 429; all in the API's error shape, naming the limit."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from api.dev.servers import free_port, wait_for
from tests.conftest import make_app
from tests.support import REPO, SHORT, TOKENS, row, submit


@pytest.mark.parametrize("host", ["evil.example", "evil.example:5000", "127.0.0.1.evil.example", "localhost.",
                                  "", "[::2]:5000"])
def test_a_foreign_host_is_refused_even_on_loopback(client, anon, host):
    for test_client in (client, anon):
        response = test_client.get("/api/health", headers={"Host": host})
        assert response.status_code == 400, (host, response.status_code)
        error = response.get_json()["error"]
        assert error["code"] == "bad_host" and "ALLOWED_HOSTS" in error["message"] and error["field"] == "Host"


@pytest.mark.parametrize("host", ["localhost", "localhost:5000", "127.0.0.1", "127.0.0.1:8080", "[::1]:5000",
                                  "LOCALHOST:1"])
def test_the_configured_names_are_answered_on_any_port(client, host):
    assert client.get("/api/health", headers={"Host": host}).status_code == 200, host


def test_allowed_hosts_is_configurable(settings):
    app = make_app(settings, ALLOWED_HOSTS="trainq.example.com")
    test_client = app.test_client()
    assert test_client.get("/api/health", headers={"Host": "trainq.example.com:443"}).status_code == 200
    assert test_client.get("/api/health", headers={"Host": "localhost"}).status_code == 400


def test_a_body_over_the_limit_is_a_413_naming_it(client, ctx):
    limit = ctx.config["MAX_CONTENT_LENGTH"]
    response = client.post("/api/training", data=b"{" + b" " * limit + b"}", content_type="application/json")
    assert response.status_code == 413
    error = response.get_json()["error"]
    assert error["code"] == "request_too_large" and "MAX_CONTENT_LENGTH" in error["message"]
    assert str(limit) in error["message"]


def test_a_users_queued_jobs_are_limited(ctx, make_user):
    user, user_client, _ = make_user("busy", max_queued_jobs=2)
    first = submit(user_client, SHORT)
    submit(user_client, SHORT)
    response = user_client.post("/api/training", json={"task": "mlp", "params": SHORT})
    assert response.status_code == 429
    error = response.get_json()["error"]
    assert error["code"] == "queued_jobs_limit" and "max_queued_jobs=2" in error["message"]
    assert user.name in error["message"]
    _, other_client, _ = make_user("idle", max_queued_jobs=2)
    submit(other_client, SHORT)  # the limit is per user
    user_client.delete(f"/api/training/{first}")
    submit(user_client, SHORT)  # one left the queue: room for one more
    # force-start (and resume) put a job back in the queue: they count as a submit does
    restarted = user_client.post(f"/api/training/{first}/force-start")
    assert restarted.status_code == 429 and restarted.get_json()["error"]["code"] == "queued_jobs_limit"
    assert row(first).status == "cancelled"


def test_the_default_queued_jobs_limit_is_max_queued_jobs(settings, ctx, make_user):
    app = make_app(settings, MAX_QUEUED_JOBS=1)
    _, _, raw = make_user("default-limit")
    with app.app_context():
        test_client = app.test_client(token=raw)
        assert test_client.post("/api/training", json={"task": "mlp", "params": SHORT}).status_code == 201
        response = test_client.post("/api/training", json={"task": "mlp", "params": SHORT})
        assert response.status_code == 429 and "MAX_QUEUED_JOBS=1" in response.get_json()["error"]["message"]


def test_no_secret_key_is_asked_for_since_nothing_is_signed_with_one(settings):
    """No cookie, no session: the app signs nothing, so it asks for no SECRET_KEY (a setting that did nothing but
    stop the service from starting was removed)."""
    env = {k: v for k, v in {**os.environ, **settings, "RECONCILE_ON_START": "0"}.items() if k != "SECRET_KEY"}
    result = subprocess.run([sys.executable, "-c", "import api.wsgi; print(bool(api.wsgi.app.secret_key))"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "False", result.stderr[-2000:]


def test_gunicorns_access_log_never_holds_a_token(settings, ctx, tmp_path):
    """The token travels in the Authorization header, which no access log format of gunicorn's default shows."""
    port = free_port()
    log = tmp_path / "access.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--workers", "1", "--bind", f"127.0.0.1:{port}", "--access-logfile",
         str(log), "api.wsgi:app"], env={**os.environ, **settings, "RECONCILE_ON_START": "false"}, cwd=REPO,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}/api/training"

        def answered() -> bool:
            try:
                request = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKENS['admin']}"})
                return urllib.request.urlopen(request, timeout=2).status == 200
            except (urllib.error.URLError, OSError):  # not listening yet, or slow to answer on a busy machine
                return False

        wait_for(answered, 60, "gunicorn")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(urllib.request.Request(url, headers={"Authorization": "Bearer tq_wrong"}))
        assert refused.value.code == 401
        wait_for(lambda: log.exists() and log.read_text().count("/api/training") >= 2, 10, "the access log")
        assert TOKENS["admin"] not in log.read_text() and "tq_wrong" not in log.read_text()
    finally:
        process.terminate()
        process.wait(15)
