"""What a job's record says about its run (issue 23): NaN and infinities stay visible, fail_on_nan ends a diverged
run failed saying where, each job records what ran it, a cancel is written into the job's log, and a job paused
and resumed shows its first start and every run."""

from __future__ import annotations

import platform
import subprocess
from datetime import datetime

import torch

from tests.support import REPO, row, wait_for, wait_status

SAMPLE = {"TRAINQ_TASKS": "tests.task_modules.sample"}


def submit_task(client, task: str, body: dict | None = None, **params) -> str:
    response = client.post("/api/training", json={"task": task, "params": params, "name": task, **(body or {})})
    assert response.status_code == 201, response.get_json()
    return response.get_json()["job"]["id"]


def log_lines(client, job_id: str) -> list[str]:
    return [line["line"] for line in client.get(f"/api/training/{job_id}/logs").get_json()["lines"]]


def test_nan_and_infinities_stay_visible_in_metrics_history_and_csv(client, workers):
    workers(**SAMPLE)
    nan = submit_task(client, "test-diverge", steps=5, bad_at=3)
    inf = submit_task(client, "test-diverge", steps=4, bad_at=4, value="-inf")
    job = wait_status(nan, "completed")
    assert job.metrics["loss"] == "NaN"  # never null: a diverged run does not look like one that reported nothing
    assert [entry["loss"] for entry in job.history] == [1.0, 0.5, "NaN", "NaN", "NaN"]
    answer = client.get(f"/api/training/{nan}").get_json()
    assert answer["metrics"]["loss"] == "NaN" and answer["loss"] is None  # the deprecated number stays a number
    csv = client.get(f"/api/training/{nan}/history?format=csv").get_data(as_text=True).splitlines()
    assert csv[3].split(",")[csv[0].split(",").index("loss")] == "NaN"
    assert wait_status(inf, "completed").metrics["loss"] == "-Infinity"
    listed = client.get("/api/training?sort=loss").get_json()["jobs"]  # a metric sort takes numbers only
    assert nan not in {j["id"] for j in listed}


def test_fail_on_nan_ends_the_job_failed_saying_where(client, workers):
    workers(**SAMPLE)
    asked = submit_task(client, "test-diverge", {"fail_on_nan": True}, steps=6, bad_at=4)
    declared = submit_task(client, "test-diverge-strict", steps=6, bad_at=2, value="inf")
    overridden = submit_task(client, "test-diverge-strict", {"fail_on_nan": False}, steps=3, bad_at=2)
    job = wait_status(asked, "failed")
    assert job.status_reason == "loss became NaN at step 4"
    assert job.metrics["loss"] == "NaN" and job.step == 4  # the bad report is kept: the curve shows where
    assert any("loss became NaN at step 4; failed (fail_on_nan)" in line for line in log_lines(client, asked))
    assert wait_status(declared, "failed").status_reason == "loss became Infinity at step 2"
    assert wait_status(overridden, "completed").metrics["loss"] == "NaN"  # the submit's choice wins
    assert client.get(f"/api/training/{asked}").get_json()["fail_on_nan"] is True


def test_each_job_records_what_ran_it(client, workers):
    workers(**SAMPLE)
    sample = submit_task(client, "test-diverge", steps=2, bad_at=5)
    builtin = submit_task(client, "diabetes-regression", epochs=1)
    wait_status(sample, "completed")
    wait_status(builtin, "completed", timeout=120)
    tasks = {t["name"]: t for t in client.get("/api/tasks").get_json()["tasks"]}
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    ran = client.get(f"/api/training/{sample}").get_json()["provenance"]
    assert ran["attempt"] == 1 and ran["code_version"] == tasks["test-diverge"]["code_version"]
    assert ran["module"] == "tests.task_modules.sample"
    assert ran["package"] is None  # named in TRAINQ_TASKS, not installed (rq-dashboard's own "tests" is not it)
    assert ran["git_commit"] == head and isinstance(ran["git_dirty"], bool)
    assert ran["python"] == platform.python_version() and ran["torch"] == torch.__version__
    assert ran["cuda"] == torch.version.cuda  # as torch was built: the worker never initialised CUDA to know it
    mlp = row(builtin).provenance
    assert (mlp["package"], mlp["module"]) == ("trainq", "builtin_tasks.tasks") and mlp["package_version"]
    assert mlp["code_version"] == tasks["diabetes-regression"]["code_version"]


def test_a_cancel_is_written_into_the_jobs_log(client, workers):
    workers(**SAMPLE)
    job_id = submit_task(client, "test-loop", steps=100_000, sleep=0.01)
    wait_for(lambda: row(job_id).step >= 5, 60, "the job to train")
    assert client.delete(f"/api/training/{job_id}").status_code == 200
    lines = log_lines(client, job_id)
    assert any("running (attempt 1" in line for line in lines)
    owner = client.get(f"/api/training/{job_id}").get_json()["owner"]
    assert lines[-1].endswith(f"job {job_id}: cancelled by {owner} (api): cancelled by user; "
                              "its training was stopped")
    numbers = [line["n"] for line in client.get(f"/api/training/{job_id}/logs").get_json()["lines"]]
    assert numbers == list(range(1, len(numbers) + 1))  # after every line the attempt wrote, each once


def test_a_paused_and_resumed_job_shows_its_first_start_and_every_run(client, workers):
    workers(**SAMPLE)
    job_id = submit_task(client, "test-loop", steps=300, sleep=0.01)
    wait_for(lambda: (j := row(job_id)).status == "running" and j.step >= 20 and j, 60, "the job to train")
    assert client.post(f"/api/training/{job_id}/pause").status_code == 202
    paused = wait_status(job_id, "paused")
    answer = client.get(f"/api/training/{job_id}").get_json()
    assert answer["resumes_at"] == {"epoch": None, "step": paused.step}  # test-loop checkpoints every step
    assert client.post(f"/api/training/{job_id}/resume").status_code == 200
    wait_status(job_id, "completed", timeout=90)
    job = client.get(f"/api/training/{job_id}").get_json()
    first, second = job["runs"]
    assert (first["attempt"], first["ended_as"], second["attempt"], second["ended_as"]) == (1, "paused", 2, "completed")
    assert first["worker"] and second["worker"]
    assert job["first_started_at"] == first["started_at"] != job["started_at"]  # started_at is the newest attempt's
    assert job["started_at"] == second["started_at"] and job["resumes_at"] is None
    spans = [datetime.fromisoformat(r["ended_at"]) - datetime.fromisoformat(r["started_at"]) for r in job["runs"]]
    assert abs(job["training_seconds"] - sum(s.total_seconds() for s in spans)) < 0.01
    assert job["training_seconds"] > second["seconds"]
    listed = client.get(f"/api/training?id_prefix={job_id[:8]}").get_json()["jobs"][0]
    assert listed["first_started_at"] == first["started_at"]
    assert abs(listed["ended_runs_seconds"] - job["training_seconds"]) < 0.01
