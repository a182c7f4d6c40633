"""Users' tasks end to end: discovered from TRAINQ_TASKS, published, routed only to workers that offer them,
run with a TaskContext (reports, checkpoints, restore, pause, artifacts), and every way a task can go wrong
ends in a true status with a reason."""

from __future__ import annotations

import hashlib

from api.queue import worker_heartbeat_key
from api.stores import db
from tests.support import row, wait_for, wait_status

SAMPLE = {"TRAINQ_TASKS": "tests.task_modules.sample"}


def submit_task(client, task: str, **params) -> str:
    response = client.post("/api/training", json={"task": task, "params": params, "name": task})
    assert response.status_code == 201, response.get_json()
    return response.get_json()["job"]["id"]


def publish_then_go(workers, redis) -> None:
    """A worker with the sample tasks starts (and publishes them), then dies: they stay known, with no live
    worker."""
    worker = workers(**SAMPLE)
    worker.kill()
    wait_for(lambda: not redis.exists(worker_heartbeat_key(worker.name)), 30, "the worker's heartbeat to expire")


def log_lines(client, job_id: str) -> list[str]:
    return [line["line"] for line in client.get(f"/api/training/{job_id}/logs").get_json()["lines"]]


def test_a_broken_module_is_not_offered_and_the_worker_runs_the_others(client, workers):
    worker = workers(TRAINQ_TASKS="tests.task_modules.broken,tests.task_modules.sample")
    log = worker.log()
    assert "task module tests.task_modules.broken failed to import" in log
    assert "RuntimeError: this module is broken on purpose" in log and "Traceback" in log
    tasks = {t["name"]: t for t in client.get("/api/tasks").get_json()["tasks"]}
    assert tasks["test-loop"]["workers"] == 1 and tasks["mlp"]["workers"] == 1  # entry point + TRAINQ_TASKS
    assert tasks["test-loop"]["description"] == "Counts steps, reports each, checkpoints each when asked, and stops " \
                                                "when told."
    assert tasks["test-loop"]["params_schema"]["properties"]["steps"]["maximum"] == 10**7
    job_id = submit_task(client, "test-loop", steps=3, sleep=0)
    job = wait_status(job_id, "completed")
    assert job.metrics == {"value": 3.0, "steps": 3, "resumed_from": 0}


def test_task_modules_are_imported_once_per_worker_never_per_job(client, workers, tmp_path):
    imports = tmp_path / "imports"
    worker = workers(SAMPLE_IMPORT_LOG=str(imports), **SAMPLE)
    for _ in range(3):
        wait_status(submit_task(client, "test-loop", steps=2, sleep=0), "completed")
    assert imports.read_text().split() == [str(worker.pid)]  # the worker imported it; no horse did


def test_a_worker_never_takes_a_task_it_does_not_offer(client, workers, redis):
    publish_then_go(workers, redis)
    plain = workers()  # offers only the built-in tasks
    response = client.post("/api/training", json={"task": "test-loop", "params": {"steps": 2, "sleep": 0}})
    assert response.status_code == 201 and "no live worker offers task test-loop" in response.get_json()["warning"]
    job_id = response.get_json()["job"]["id"]
    mlp = submit_task(client, "mlp", epochs=1)
    wait_status(mlp, "completed")  # the plain worker is busy-able and alive, and left test-loop alone
    assert row(job_id).status == "queued"
    assert "test-loop" not in plain.log()
    workers(**SAMPLE)
    wait_status(job_id, "completed")


def test_reports_checkpoints_pause_resume_and_artifacts(client, workers, settings):
    workers(**SAMPLE)
    job_id = submit_task(client, "test-loop", steps=400, sleep=0.01)
    running = wait_for(lambda: (j := row(job_id)).status == "running" and j.checkpoint_path and j.step >= 20 and j,
                       60, "test-loop to checkpoint")
    assert running.total_steps == 400  # ctx.total_steps, while it runs: the progress bar's denominator
    assert client.post(f"/api/training/{job_id}/pause").status_code == 202
    paused = wait_status(job_id, "paused")
    assert paused.resume_from == paused.checkpoint_path and paused.status_reason.startswith("paused at checkpoint ")
    kept = client.get(f"/api/training/{job_id}/checkpoints").get_json()["checkpoints"]
    assert len(kept) == 3 and kept[-1]["path"] == paused.resume_from  # KEEP_CHECKPOINTS: the newest 3
    assert kept[-1]["resume_point"] and kept[-1]["step"] == paused.step
    stopped_at = paused.step
    assert any(f"stopping at step {stopped_at}: pause" in line for line in log_lines(client, job_id))

    assert client.post(f"/api/training/{job_id}/resume").status_code == 200
    done = wait_status(job_id, "completed", timeout=90)
    assert done.attempts == 2 and done.metrics["resumed_from"] == stopped_at and done.metrics["steps"] == 400
    steps = [h["step"] for h in done.history]
    assert steps == sorted(set(steps)) and steps[-1] == 400  # sampled, in order, nothing counted twice
    assert any(f"starting at step {stopped_at} (attempt 2)" in line for line in log_lines(client, job_id))

    [artifact] = client.get(f"/api/training/{job_id}/artifacts").get_json()["artifacts"]
    content = bytes(range(256)) * 4
    assert artifact["name"] == "counts.bin" and artifact["size"] == len(content)
    assert artifact["sha256"] == hashlib.sha256(content).hexdigest() and artifact["attempt"] == 2
    download = client.get(artifact["url"])
    assert download.status_code == 200 and download.get_data() == content
    assert "attachment" in download.headers["Content-Disposition"]


def test_pausing_a_task_with_no_checkpoint_ends_it_truthfully(client, workers):
    workers(**SAMPLE)
    job_id = submit_task(client, "test-loop", steps=100_000, checkpoint=False, sleep=0.01)
    wait_for(lambda: (j := row(job_id)).status == "running" and j.step > 5 and j, 60, "test-loop to run")
    client.post(f"/api/training/{job_id}/pause")
    job = wait_status(job_id, "cancelled")
    assert "nothing to resume from" in job.status_reason and job.resume_from is None
    assert client.get(f"/api/training/{job_id}").get_json()["actions"] == ["force-start"]


def test_a_task_that_raises_fails_with_its_exception_and_traceback(client, workers):
    workers(**SAMPLE)
    job_id = submit_task(client, "test-raise")
    job = wait_status(job_id, "failed")
    assert job.status_reason == "ValueError: the data is not what I expected"
    assert "Traceback" in job.error_message
    log = "\n".join(log_lines(client, job_id))
    assert "task test-raise raised" in log and "Traceback (most recent call last)" in log
    assert 'raise ValueError("the data is not what I expected")' in log


def test_a_task_returning_anything_but_a_dict_of_numbers_fails_clearly(client, workers):
    workers(**SAMPLE)
    expected = {"string": "task test-returns returned a str, not a dict",
                "text-metric": "task test-returns returned 'val_loss': str 'low', not a number",
                "list": "task test-returns returned a list, not a dict"}
    ids = {kind: submit_task(client, "test-returns", kind=kind) for kind in expected}
    for kind, job_id in ids.items():
        assert wait_status(job_id, "failed").status_reason.startswith(expected[kind]), kind


def test_params_that_no_longer_validate_at_the_worker_fail_with_pydantics_message(client, workers, redis):
    publish_then_go(workers, redis)
    job_id = submit_task(client, "test-strict", lr=0.5)  # waits queued: no live worker offers it
    # the task's code changed meanwhile: what was valid at submit is not any more
    db.session.execute(db.text("UPDATE training_jobs SET params = '{\"lr\": 5}' WHERE id = :i"), {"i": job_id})
    db.session.commit()
    workers(**SAMPLE)
    job = wait_status(job_id, "failed")
    assert job.status_reason.startswith("params no longer valid for task test-strict")
    assert "lr" in job.status_reason and "less than or equal to 1" in job.status_reason
