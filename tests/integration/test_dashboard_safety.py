"""rq-dashboard and the pages, hardened (issue 21): no user text in RQ's fields, every string rq-dashboard's
templates show is HTML-escaped, every answer carries a Content-Security-Policy and nosniff, and input
rq-dashboard 0.9 would answer with a 500 is a 404 or 400 naming the field."""

from __future__ import annotations

import pytest

from api.queue import fetch
from tests.support import SHORT, submit

HOSTILE = '<img src=x onerror="window.__xss=1">'


def test_rq_fields_carry_no_user_text(client, redis):
    from api.queue import fetch

    job_id = submit(client, SHORT, name=HOSTILE)
    rq_job = fetch(job_id)
    assert rq_job.description == f"training job {job_id} (attempt 1)"
    assert HOSTILE not in str(redis.hgetall(f"rq:job:{job_id}"))


def test_rq_dashboard_json_is_html_escaped(client, redis):
    job_id = submit(client, SHORT)
    redis.hset(f"rq:job:{job_id}", "description", HOSTILE)  # as a job enqueued before the fix has it
    data = client.get(f"/rq/0/data/job/{job_id}.json").get_json()
    assert data["description"] == "&lt;img src=x onerror=&quot;window.__xss=1&quot;&gt;"
    listed = client.get(f"/rq/0/data/jobs/{fetch(job_id).origin}/queued/8/asc/1.json").get_json()
    assert listed["jobs"] and all("<img" not in job["description"] for job in listed["jobs"])


@pytest.mark.parametrize("path", ["/", "/login", "/rq/", "/rq/0/data/queues.json", "/api/training",
                                  "/api/training/00000000-0000-0000-0000-000000000000", "/no-such-page"])
def test_every_answer_has_a_csp_and_nosniff(client, path):
    response = client.get(path)
    csp = response.headers.get("Content-Security-Policy", "")
    assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp, (path, csp)
    assert "'unsafe-inline'" not in csp.split("script-src", 1)[1].split(";")[0], csp
    assert response.headers.get("X-Content-Type-Options") == "nosniff", path


def test_rq_dashboard_inline_script_carries_the_nonce(client):
    response = client.get("/rq/")
    nonce = response.headers["Content-Security-Policy"].split("'nonce-", 1)[1].split("'", 1)[0]
    html = response.get_data(as_text=True)
    assert html.count("<script") - html.count('type="text/template"') - html.count(" src=") == \
        html.count(f'nonce="{nonce}"') > 0


@pytest.mark.parametrize(("path", "status", "field"), [
    ("/rq/0/view/job/nonexistent", 404, "job_id"),
    ("/rq/0/data/job/nonexistent.json", 404, "job_id"),
    ("/rq/7/view/queues", 404, "instance_number"),
    ("/rq/7/data/queues.json", 404, "instance_number"),
    ("/rq/0/data/jobs/training.mlp/queued/abc/asc/1.json", 400, "per_page"),
    ("/rq/0/data/jobs/training.mlp/queued/8/asc/x.json", 400, "page"),
    ("/rq/0/data/jobs/training.mlp/queued/8/sideways/1.json", 400, "order"),
])
def test_rq_dashboard_bad_input_is_a_4xx_naming_the_field(client, path, status, field):
    response = client.get(path)
    assert response.status_code == status, (path, response.status_code)
    assert response.get_json()["error"]["field"] == field
