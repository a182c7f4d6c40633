"""The monitor's server side: pages render with their first data inlined, safely; bad URLs get a page, not
a traceback. (What the pages do in a browser is tests/browser.)"""

from __future__ import annotations

import json
import re

from tests.support import LONG, submit


def initial_data(html: str) -> dict:
    match = re.search(r'<script type="application/json" id="initial">(.*?)</script>', html, re.S)
    assert match, "no inlined data"
    return json.loads(match.group(1))


def test_jobs_page_inlines_the_first_page_of_the_api(client):
    job_id = submit(client, LONG, name="</script><script>alert(1)</script>")
    response = client.get("/")
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and response.mimetype == "text/html"
    assert "<script>alert(1)" not in html  # the name is data, escaped inside the JSON
    data = initial_data(html)
    assert [job["id"] for job in data["jobs"]] == [job_id] and data["jobs"][0]["name"].startswith("</script>")
    for link in ('href="/rq/"', 'href="/api/health"', 'href="/metrics"'):
        assert link in html
    assert 'name="epochs"' in html and 'id="err-epochs"' in html


def test_jobs_page_filters_and_survives_a_bad_status(client):
    submit(client, LONG)
    assert initial_data(client.get("/?status=running").get_data(as_text=True))["jobs"] == []
    response = client.get("/?status=bogus")
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and "status: must be one of" in html and len(initial_data(html)["jobs"]) == 1


def test_job_page_inlines_the_job_with_its_actions(client):
    job_id = submit(client, LONG)
    html = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    job = initial_data(html)
    assert job["id"] == job_id and job["actions"] == ["cancel", "force-start", "mark-failed"]
    assert "vendor/uplot-1.6.32/uPlot.iife.min.js" in html and "Cancel this job?" in html


def test_unknown_job_page_is_a_404_page(client):
    for job_id in ("00000000-0000-0000-0000-000000000000", "not-a-uuid"):
        response = client.get(f"/jobs/{job_id}")
        assert response.status_code == 404 and "Job not found" in response.get_data(as_text=True)


def test_static_files_and_the_vendored_chart_library_are_served(client):
    for path in ("/static/monitor.js", "/static/jobs.js", "/static/job.js", "/static/monitor.css",
                 "/static/vendor/uplot-1.6.32/uPlot.iife.min.js", "/static/vendor/uplot-1.6.32/LICENSE"):
        response = client.get(path)
        assert response.status_code == 200, path
        response.close()
