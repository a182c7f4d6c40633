"""The monitor's server side: pages render with their first data inlined, safely; bad URLs get a page, not
a traceback. (What the pages do in a browser is tests/browser.)"""

from __future__ import annotations

import json
import re

from tests.support import LONG, submit


def initial_data(html: str, script_id: str = "initial") -> dict:
    match = re.search(rf'<script type="application/json" id="{script_id}">(.*?)</script>', html, re.S)
    assert match, f"no inlined data #{script_id}"
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
    # the form is generated in the browser from the tasks the workers published, inlined for the first paint
    catalog = initial_data(html, "tasks")
    assert {"mlp", "diabetes-regression"} <= {task["name"] for task in catalog["tasks"]}
    mlp = next(task for task in catalog["tasks"] if task["name"] == "mlp")
    assert mlp["params_schema"]["properties"]["epochs"]["minimum"] == 1
    assert 'id="task-select"' in html and 'id="err-task"' in html and 'id="param-list"' in html
    assert 'id="task-filter"' in html and '<option value="mlp">mlp</option>' in html


def test_jobs_page_filters_and_survives_a_bad_status(client):
    submit(client, LONG)
    assert initial_data(client.get("/?status=running").get_data(as_text=True))["jobs"] == []
    assert initial_data(client.get("/?task=diabetes-regression").get_data(as_text=True))["jobs"] == []
    html = client.get("/?task=mlp&status=queued").get_data(as_text=True)
    assert len(initial_data(html)["jobs"]) == 1
    assert '<option value="mlp" selected>mlp</option>' in html and '<option value="queued" selected>' in html
    html = client.get("/?task=gone-task").get_data(as_text=True)  # a task no worker offers: still selectable
    assert initial_data(html)["jobs"] == [] and '<option value="gone-task" selected>gone-task</option>' in html
    response = client.get("/?status=bogus")
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and "status: must be one of" in html and len(initial_data(html)["jobs"]) == 1


def test_job_page_inlines_the_job_with_its_actions(client):
    job_id = submit(client, LONG)
    html = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    job = initial_data(html)
    assert job["id"] == job_id and job["actions"] == ["cancel", "force-start", "mark-failed"]
    assert job["task"] == "mlp" and job["params"]["epochs"] == LONG["epochs"]
    assert "vendor/uplot-1.6.32/uPlot.iife.min.js" in html and "Cancel this job?" in html
    assert '<strong id="job-task">mlp</strong>' in html and "Classify scikit-learn" in html  # task and description
    params = re.findall(r'<dt>([a-z_]+)</dt><dd data-param="\1">([^<]*)</dd>', html)
    mlp = next(task for task in client.get("/api/tasks").get_json()["tasks"] if task["name"] == "mlp")
    # the declared order where the API gives it, else by name (as the submit form shows them)
    assert [name for name, _ in params] == (mlp.get("params_order") or sorted(mlp["params_schema"]["properties"]))
    assert ("hidden_sizes", "32") in params and ("epochs", "100000") in params
    assert 'id="artifacts"' in html and 'id="checkpoints"' in html and 'id="charts"' in html


def test_job_page_shows_params_of_any_task(client):
    response = client.post("/api/training", json={"task": "diabetes-regression", "params": {"epochs": 3, "lr": 0.5}})
    assert response.status_code == 201, response.get_json()
    html = client.get(f"/jobs/{response.get_json()['job']['id']}").get_data(as_text=True)
    params = dict(re.findall(r'<dt>([a-z_]+)</dt><dd data-param="\1">([^<]*)</dd>', html))
    assert params == {"epochs": "3", "hidden": "32", "lr": "0.5", "batch_size": "32", "weight_decay": "0.0",
                      "seed": "0"}
    assert '<strong id="job-task">diabetes-regression</strong>' in html


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


def test_compare_page_inlines_the_jobs_and_refuses_unknown_ones(client):
    first, second = submit(client, LONG, name="one"), submit(client, LONG, name="two")
    response = client.get(f"/compare?ids={first},{second},{first}")
    assert response.status_code == 200
    data = initial_data(response.get_data(as_text=True))
    assert [job["id"] for job in data["jobs"]] == [first, second] and "history" in data["jobs"][0]
    assert data["params_order"][:2] == ["dataset", "model"]
    assert client.get(f"/compare?ids={first},00000000-0000-4000-8000-000000000000").status_code == 404
    assert client.get(f"/compare?ids={first},nonsense").status_code == 404
    assert client.get("/compare").status_code == 400
    assert client.get("/compare?ids=" + ",".join(f"x{i}" for i in range(13))).status_code == 400  # 12 at most


def test_jobs_page_keeps_every_filter_and_fills_the_form_to_run_a_job_again(client):
    source = submit(client, LONG, name="source")
    html = client.get("/?name=sou&since=2020-01-01&sort=-val_loss").get_data(as_text=True)
    assert initial_data(html)["jobs"] == []  # sorted by a metric: only jobs that reported it
    assert 'id="name-filter" type="search" value="sou"' in html and 'value="-" selected' in html
    html = client.get(f"/?clone={source}").get_data(as_text=True)
    clone = initial_data(html, "clone")
    assert clone["id"] == source and clone["task"] == "mlp" and clone["params"]["epochs"] == LONG["epochs"]
    assert "no job nope to run again" in client.get("/?clone=nope").get_data(as_text=True)
    page = client.get(f"/jobs/{source}").get_data(as_text=True)
    assert f'href="/?clone={source}"' in page and f"/api/training/{source}/history?format=csv" in page


def test_hosts_page_inlines_the_live_hosts_as_the_api_gives_them(client, anon):
    response = client.get("/hosts")
    assert response.status_code == 200
    hosts = initial_data(response.get_data(as_text=True))["hosts"]
    def unseen(listed: list[dict]) -> list[dict]:  # seen_at moves every second (the host's lease)
        return [{k: v for k, v in h.items() if k != "seen_at"} for h in listed]

    assert unseen(hosts) == unseen(client.get("/api/hosts").get_json()["hosts"])
    assert [h["name"] for h in hosts] == ["published-by-the-test-session"]  # the placeholder host (conftest)
    assert 'href="/hosts"' in client.get("/").get_data(as_text=True)  # in every page's menu
    shell = anon.get("/hosts")  # a navigation without a token: the shell, no data
    assert shell.status_code == 200 and 'id="initial"' not in shell.get_data(as_text=True)
