"""The JSON API against real Redis and PostgreSQL (no worker: jobs stay queued)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import time_machine
from sqlalchemy import func, select, update

from api.queue import fetch
from api.record.status import Actor, JobStatus, utcnow
from api.record.status_writer import transition
from api.record.tables import TrainingJob
from api.stores import db
from trainq.checkpoints import checkpoint_name


def submit(client, **config):
    response = client.post("/api/training", json={"task": "mlp", "params": {"epochs": 5, **config}})
    assert response.status_code == 201, response.get_json()
    return response.get_json()["job"]


def error_of(response, status):
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"error"} and body["error"]["code"] and body["error"]["message"]
    return body["error"]


def test_submit_writes_row_then_enqueues(client, redis):
    job = submit(client, seed=3)
    assert job["status"] == "queued" and job["attempts"] == 1 and job["rq_job_id"] == job["id"]
    assert job["name"] == "mlp" and job["task"] == "mlp"
    assert job["params"]["seed"] == 3 and job["params"]["epochs"] == 5 and job["params"]["dataset"] == "digits"
    expected_columns = {
        "id", "name", "status", "status_reason", "task", "params", "epoch", "step", "total_steps", "loss", "metrics",
        "rq_job_id", "worker_name", "worker_pid", "hostname", "attempts", "checkpoint_path", "error_message",
        "created_at", "queued_at", "started_at", "finished_at", "updated_at", "heartbeat_at", "owner_id", "owner",
        "max_attempts", "resume_from", "heartbeat_age_seconds", "stale", "log_truncated", "history", "cloned_from",
        "total_epochs", "metric", "metric_mode", "resources", "placement", "provenance", "fail_on_nan", "resumes_at",
        "sweep_id", "trial_number", "pruned_at",
    }
    assert set(job) == expected_columns
    rq_job = fetch(job["id"], redis)
    assert rq_job.get_status() == "queued" and rq_job.args == [job["id"], 1]
    again = client.get(f"/api/training/{job['id']}").get_json()
    assert again.pop("actions") == ["cancel", "force-start", "mark-failed"]
    assert (again.pop("history_length"), again.pop("history_truncated")) == (0, False)  # the read caps history
    assert (again.pop("runs"), again.pop("first_started_at"), again.pop("training_seconds")) == ([], None, None)
    assert {k: v for k, v in again.items() if k != "heartbeat_age_seconds"} == \
        {k: v for k, v in job.items() if k != "heartbeat_age_seconds"}
    assert job["stale"] is False and job["max_attempts"] == 1
    listed = client.get("/api/training").get_json()["jobs"][0]
    # lists leave out the growing per-epoch history, and say how long each trained over all its runs
    assert set(listed) == expected_columns - {"history"} | {"first_started_at", "ended_runs_seconds"}


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"task": "mlp", "params": {"epochs": 0}}, 422, "params.epochs"),
        ({"task": "mlp", "params": {"epochs": "ten"}}, 422, "params.epochs"),
        ({"task": "mlp", "params": {"epochs": 100_001}}, 422, "params.epochs"),
        ({"task": "mlp", "params": {"learning_rate": -1}}, 422, "params.learning_rate"),
        ({"task": "mlp", "params": {"hidden_sizes": [64, "x"]}}, 422, "params.hidden_sizes.1"),
        ({"task": "mlp", "params": {"dataset": "cifar"}}, 422, "params.dataset"),
        ({"task": "mlp", "params": {"warp": 9}}, 422, "params.warp"),
        ({"task": "mlp", "params": "epochs=3"}, 422, "params"),
        ({"task": "mlp", "priority": 1}, 422, "priority"),
        ({"name": 5, "task": "mlp"}, 422, "name"),
        ({"name": "", "task": "mlp"}, 422, "name"),
        ({"name": "x" * 201, "task": "mlp"}, 422, "name"),
        ({"name": "no task"}, 422, "task"),
        ({"task": "mlp", "params": {"epochs": 0}}, 422, "params.epochs"),
        ({"task": "mlp", "params": {"hidden_sizes": [64, 0]}}, 422, "params.hidden_sizes.1"),
        ({"task": "mlp", "params": {"warp": 9}}, 422, "params.warp"),
        ({"task": "mlp", "params": [1]}, 422, "params"),
        ({"task": "diabetes-regression", "params": {"lr": 2}}, 422, "params.lr"),
        ({"task": "mlp", "config": {}}, 422, "config"),  # the old form of params, retired
        ({"config": {"epochs": 3}}, 422, "config"),
        ({"task": 5}, 422, "task"),
        ({"task": "no-such-task"}, 422, "task"),
    ],
)
def test_bad_submissions_name_the_field(client, body, status, field):
    error = error_of(client.post("/api/training", json=body), status)
    assert error["field"] == field and field in error["message"]


def test_malformed_or_non_json_bodies(client):
    error_of(client.post("/api/training", data="{not json", content_type="application/json"), 400)
    error_of(client.post("/api/training", json=[1, 2]), 400)
    error_of(client.post("/api/training", data="config=1", content_type="application/x-www-form-urlencoded"), 415)
    error_of(client.post("/api/training"), 415)
    assert client.get("/api/training").get_json()["jobs"] == []  # nothing was written


def test_unknown_and_malformed_ids_are_404(client):
    for method in (client.get, client.delete):
        error_of(method("/api/training/not-a-uuid"), 404)
        error_of(method(f"/api/training/{uuid.uuid4()}"), 404)
    error_of(client.get("/api/nope"), 404)
    error_of(client.put("/api/training"), 405)


def test_list_newest_first_with_cursor_pages_and_filter(client):
    ids = [submit(client, seed=i)["id"] for i in range(5)]
    seen, cursor = [], None
    for _ in range(3):
        url = "/api/training?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(url).get_json()
        seen += [job["id"] for job in page["jobs"]]
        cursor = page["next_cursor"]
    assert seen == ids[::-1] and cursor is None

    client.delete(f"/api/training/{ids[1]}")
    cancelled = client.get("/api/training?status=cancelled").get_json()["jobs"]
    assert [job["id"] for job in cancelled] == [ids[1]]
    assert len(client.get("/api/training?status=queued&limit=200").get_json()["jobs"]) == 4


@pytest.mark.parametrize(
    ("query", "field"),
    [("limit=0", "limit"), ("limit=201", "limit"), ("limit=abc", "limit"), ("status=lost", "status"),
     ("cursor=garbage", "cursor"), ("sort=val%20loss", "sort"), ("since=today", "since"), ("order=asc", "order"),
     ("until=9999-12-31", "until"), ("name=" + "n" * 201, "name"), ("sort=" + "m" * 101, "sort"), ("sort=--x", "sort")],
)
def test_bad_list_parameters(client, query, field):
    assert error_of(client.get(f"/api/training?{query}"), 400)["field"] == field


def test_cancel_of_finished_jobs_is_409(client, ctx):
    for final in (JobStatus.COMPLETED, JobStatus.FAILED):
        job = submit(client)
        transition(job["id"], JobStatus.RUNNING, reason="test", actor=Actor.WORKER)
        transition(job["id"], final, reason="test", actor=Actor.WORKER)
        error = error_of(client.delete(f"/api/training/{job['id']}"), 409)
        assert error["message"] == f"job {job['id']} is already {final} and cannot be cancelled"
        assert error["job_status"] == final


def test_events_endpoint(client):
    job = submit(client)
    client.delete(f"/api/training/{job['id']}")
    events = client.get(f"/api/training/{job['id']}/events").get_json()["events"]
    assert [(e["from_status"], e["to_status"], e["actor"]) for e in events] == [
        (None, "queued", "api"), ("queued", "cancelled", "api")]


def test_health_ok_with_worker_count(client):
    body = client.get("/api/health").get_json()
    assert body == {"healthy": True, "checks": {"database": {"ok": True}, "redis": {"ok": True}}, "workers": 0,
                    "workers_paused": {}}


def test_dashboard_is_mounted(client):
    response = client.get("/rq/")
    assert response.status_code == 200 and b"RQ" in response.data
    assert client.get("/rq/0/data/queues.json").status_code == 200


@pytest.mark.parametrize("path", ["", "/{id}", "/{id}/events", "/{id}/checkpoints"])
def test_unchanged_reads_answer_304_to_if_none_match(client, path):
    """The monitor polls with If-None-Match: nothing changed costs an empty 304; any change a new tag."""
    job = submit(client)
    url = "/api/training" + path.format(id=job["id"])
    first = client.get(url)
    tag = first.headers["ETag"]
    assert first.status_code == 200 and tag.startswith('W/"') and first.headers["Cache-Control"] == "no-cache"
    unchanged = client.get(url, headers={"If-None-Match": tag})
    assert unchanged.status_code == 304 and unchanged.get_data() == b"" and unchanged.headers["ETag"] == tag
    if path.endswith("checkpoints"):
        folder = Path(client.application.config["CHECKPOINT_DIR"]) / job["id"]
        folder.mkdir(parents=True)
        (folder / checkpoint_name(1, epoch=1)).write_bytes(b"state")
    else:
        client.delete(f"/api/training/{job['id']}")
    changed = client.get(url, headers={"If-None-Match": tag})
    assert changed.status_code == 200 and changed.headers["ETag"] != tag


def test_ages_are_measured_on_postgresqls_clock_not_the_api_hosts(client, ctx):
    """Issue 26, case 3: a host whose clock runs ahead calls no fresh heartbeat stale, and what it writes (a submit's
    ``queued_at``) is stamped on PostgreSQL's clock."""
    job = submit(client)
    transition(job["id"], JobStatus.RUNNING, reason="started by worker w1 (attempt 1)", actor=Actor.WORKER)
    db.session.execute(update(TrainingJob).where(TrainingJob.id == uuid.UUID(job["id"])).values(
        heartbeat_at=func.now()))
    db.session.commit()
    url = f"/api/training/{job['id']}"
    fresh = client.get(url)
    with time_machine.travel(utcnow() + timedelta(minutes=2), tick=True):  # this host's clock, 2 min ahead
        read = client.get(url).get_json()
        assert read["stale"] is False and read["heartbeat_age_seconds"] < 30
        assert read["training_seconds"] < 30 and read["runs"][0]["seconds"] < 30  # its run so far
        assert client.get(url, headers={"If-None-Match": fresh.headers["ETag"]}).status_code == 304
        listed = {j["id"]: j for j in client.get("/api/training").get_json()["jobs"]}[job["id"]]
        assert listed["stale"] is False
        later = submit(client)
    queued_at, now = db.session.execute(select(TrainingJob.queued_at, func.now())
                                        .where(TrainingJob.id == uuid.UUID(later["id"]))).one()
    db.session.commit()
    assert abs((now - queued_at).total_seconds()) < 30, (queued_at, now)


def test_the_tag_ignores_the_growing_heartbeat_age_but_not_staleness(client, ctx):
    job = submit(client)
    db.session.execute(update(TrainingJob).where(TrainingJob.id == uuid.UUID(job["id"])).values(
        status="running", heartbeat_at=utcnow() - timedelta(seconds=5)))
    db.session.commit()
    url = f"/api/training/{job['id']}"
    first = client.get(url)
    assert first.get_json()["stale"] is False
    assert client.get(url, headers={"If-None-Match": first.headers["ETag"]}).status_code == 304
    db.session.execute(update(TrainingJob).where(TrainingJob.id == uuid.UUID(job["id"])).values(
        heartbeat_at=utcnow() - timedelta(seconds=60)))
    db.session.commit()
    now_stale = client.get(url, headers={"If-None-Match": first.headers["ETag"]})
    assert now_stale.status_code == 200 and now_stale.get_json()["stale"] is True


def test_submit_a_task_with_params_and_read_the_tasks(client):
    response = client.post("/api/training", json={"task": "diabetes-regression", "params": {"epochs": 3},
                                                  "name": "diabetes"})
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["job"]["task"] == "diabetes-regression" and body["job"]["params"]["epochs"] == 3
    assert body["job"]["params"]["lr"] == 0.01  # the schema's defaults filled in
    # no live worker offers it in this test: accepted, queued, with a warning that says so
    assert "no live worker offers task diabetes-regression" in body["warning"]
    tasks = {t["name"]: t for t in client.get("/api/tasks").get_json()["tasks"]}
    assert {"mlp", "diabetes-regression"} <= set(tasks)
    mlp = tasks["mlp"]
    assert mlp["workers"] == 0 and mlp["description"].startswith("Classify scikit-learn's 8x8 digits")
    assert mlp["params_schema"]["properties"]["epochs"] == {"default": 10, "maximum": 100000, "minimum": 1,
                                                            "title": "Epochs", "type": "integer"}
    assert len(mlp["code_version"]) == 16
    assert mlp["params_order"] == ["dataset", "model", "hidden_sizes", "epochs", "batch_size", "learning_rate",
                                   "seed", "checkpoint_every", "num_workers"]  # as declared (JSONB sorts keys)
    listed = client.get("/api/training?task=diabetes-regression").get_json()["jobs"]
    assert [job["name"] for job in listed] == ["diabetes"]
    # the task's declared primary metric: published, and recorded on the job at submit (the list's main column)
    assert (tasks["diabetes-regression"]["metric"], tasks["diabetes-regression"]["metric_mode"]) == ("val_mse", "min")
    assert (listed[0]["metric"], listed[0]["metric_mode"]) == ("val_mse", "min")


def test_an_unknown_task_lists_the_known_ones(client):
    error = error_of(client.post("/api/training", json={"task": "no-such-task-anywhere"}), 422)
    assert error["field"] == "task" and "unknown task 'no-such-task-anywhere'" in error["message"]
    assert "diabetes-regression" in error["message"] and "mlp" in error["message"]


def test_artifact_names_are_checked_and_missing_ones_are_404(client):
    job = submit(client)
    assert client.get(f"/api/training/{job['id']}/artifacts").get_json() == {"artifacts": []}
    for name in ("model.pt", "..", "a%2Fb", "%2Fetc%2Fpasswd", ".hidden"):
        response = client.get(f"/api/training/{job['id']}/artifacts/{name}")
        assert response.status_code == 404, (name, response.get_data(as_text=True))
        assert response.get_json()["error"]["code"] in ("artifact_not_found", "not_found")


@pytest.mark.parametrize(("body", "field"), [
    ('{"task": "mlp", "params": {}, "name": "a\\u0000b"}', "name"),
    ('{"task": "mlp", "params": {}, "name": "a\\ud800b"}', "name"),
    ('{"task": "mlp", "params": {"dataset": "dig\\u0000its"}}', "params.dataset"),
    ('{"task": "mlp", "params": {"learning_rate": NaN}}', None),
    ('{"task": "mlp", "params": {"learning_rate": Infinity}}', None),
    ('[' * 100_000 + ']' * 100_000, None),
    ('{"task": "mlp", "params": {"hidden_sizes": ' + '[' * 100_000 + ']' * 100_000 + '}}', None),
])
def test_bodies_postgresql_cannot_store_are_a_400_naming_where_never_a_500(client, body, field):
    response = client.post("/api/training", data=body, content_type="application/json")
    assert response.status_code == 400, response.get_data(as_text=True)[:300]
    error = response.get_json()["error"]
    assert error.get("field") == field and "Traceback" not in response.get_data(as_text=True)


def test_names_with_control_characters_are_refused(client):
    response = client.post("/api/training", json={"task": "mlp", "params": {}, "name": "\x1b[2Jclear\nscreen"})
    assert response.status_code == 422 and response.get_json()["error"]["field"] == "name"


def test_a_reason_with_a_nul_is_a_400(client):
    job_id = submit(client)["id"]
    response = client.post(f"/api/training/{job_id}/mark-failed", json={"reason": "stuck\u0000"})
    assert response.status_code == 400 and response.get_json()["error"]["field"] == "reason"


@pytest.mark.parametrize("query", ["owner=%00", "task=%00", "status=%00", "id_prefix=%00", "task=a%0Ab"])
def test_query_values_with_control_characters_are_a_400(client, query):
    for url in (f"/api/training?{query}", f"/?{query}"):
        response = client.get(url)
        assert response.status_code in (200, 400) and response.status_code != 500, url
    assert client.get(f"/api/training?{query}").status_code == 400


def test_fail_on_nan_is_a_submits_choice_and_a_wrong_one_names_the_field(client):
    assert submit(client)["fail_on_nan"] is None  # left out: as the task says
    response = client.post("/api/training", json={"task": "mlp", "fail_on_nan": True})
    assert response.status_code == 201 and response.get_json()["job"]["fail_on_nan"] is True
    for wrong in (0, "yes"):
        error = error_of(client.post("/api/training", json={"task": "mlp", "fail_on_nan": wrong}), 422)
        assert error["field"] == "fail_on_nan", error
