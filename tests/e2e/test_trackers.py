"""Every report in TensorBoard and MLflow, from a real worker: TensorBoard event files read back with
TensorBoard's own reader, and a real MLflow tracking server (``mlflow server``, SQLite backend, on a free port on
127.0.0.1) started here; never a mock. Every step reaches both trackers, though the row's history samples
step-only reports. An MLflow that accepts connections and never answers neither fails nor delays the job."""

from __future__ import annotations

import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from api.dev.servers import free_port
from tests.support import wait_for, wait_status

pytestmark = pytest.mark.e2e
SAMPLE = {"TRAINQ_TASKS": "tests.task_modules.sample"}
STEPS = 300


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    log = open(folder / "server.log", "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{folder}/mlflow.db",
         "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if process.poll() is not None:
            raise AssertionError((folder / "server.log").read_text())
        try:
            return urllib.request.urlopen(f"{url}/health", timeout=2).status == 200
        except OSError:
            return False

    try:
        wait_for(up, 180, "mlflow server to answer", interval=0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def submit_loop(client, **params) -> str:
    response = client.post("/api/training", json={"task": "test-loop", "name": "tracked",
                                                  "params": {"steps": STEPS, "sleep": 0.002, "checkpoint": False,
                                                             **params}})
    assert response.status_code == 201, response.get_json()
    return response.get_json()["job"]["id"]


def scalars(folder: str, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(folder, size_guidance={"scalars": 0})
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


def test_every_step_reaches_tensorboard_and_a_real_mlflow_server(client, workers, mlflow_server):
    from mlflow.tracking import MlflowClient

    worker = workers(**SAMPLE, MLFLOW_TRACKING_URI=mlflow_server, MLFLOW_EXPERIMENT="trainq-test")
    job_id = submit_loop(client)
    job = wait_status(job_id, "completed", timeout=120)
    assert len(job.history) < STEPS  # the row samples step-only reports ...

    def recorded():
        answer = client.get(f"/api/training/{job_id}/trackers").get_json()
        return answer["mlflow_run_id"] and "trackers:" in worker.log() and answer

    trackers = wait_for(recorded, 60, "the trackers' last write")
    assert trackers["lost_reports"] == 0
    assert trackers["tensorboard_command"] == f"tensorboard --logdir {trackers['tensorboard_dir']}"
    assert Path(trackers["tensorboard_dir"]).is_relative_to(Path(client.application.config["ARTIFACT_DIR"]) / job_id)
    # ... the trackers get every step
    assert scalars(trackers["tensorboard_dir"], "value") == [(s, float(s)) for s in range(1, STEPS + 1)]
    assert scalars(trackers["tensorboard_dir"], "final/steps") == [(0, float(STEPS))]

    mlflow = MlflowClient(tracking_uri=mlflow_server)
    run = mlflow.get_run(trackers["mlflow_run_id"])
    history = mlflow.get_metric_history(run.info.run_id, "value")
    assert sorted((m.step, m.value) for m in history) == [(s, float(s)) for s in range(1, STEPS + 1)]
    assert run.info.status == "FINISHED"
    assert run.data.params == {"steps": str(STEPS), "sleep": "0.002", "checkpoint": "False"}
    tags = run.data.tags
    assert tags["trainq.job_id"] == job_id and tags["trainq.task"] == "test-loop" and tags["trainq.owner"] == "admin"
    assert len(tags["trainq.code_version"]) == 16 and tags["trainq.status"] == "completed"
    assert [a.path for a in mlflow.list_artifacts(run.info.run_id)] == ["counts.bin"]
    assert trackers["mlflow_url"] == f"{mlflow_server}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    page = client.get(f"/jobs/{job_id}").get_data(as_text=True)  # as the shell fetches it: with the tab's token
    assert trackers["mlflow_url"] in page and trackers["tensorboard_dir"] in page
    shell = client.application.test_client(token=None).get(f"/jobs/{job_id}").get_data(as_text=True)  # a navigation
    assert 'id="shell-status"' in shell and run.info.run_id not in shell and trackers["tensorboard_dir"] not in shell


def test_an_mlflow_that_never_answers_neither_fails_nor_delays_the_job(client, workers, tmp_path):
    """A server that accepts connections and never answers (the worst outage: each call waits for its timeout)."""
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(64)
    try:
        worker = workers(**SAMPLE, MLFLOW_TRACKING_URI=f"http://127.0.0.1:{hole.getsockname()[1]}",
                         TRACKER_FLUSH_TIMEOUT="8")
        job_id = submit_loop(client)
        wait_status(job_id, "completed", timeout=120)
        lines = wait_for(lambda: "lost" in (log := worker.log()) and log.splitlines(), 60, "the loss logged")
        finished = next(i for i, line in enumerate(lines) if "finished in" in line)
        lost = next(i for i, line in enumerate(lines) if "MLflow: " in line and "lost" in line)
        assert finished < lost  # the end was recorded first; MLflow's outage came after, bounded
        assert any("MLflow: starting the run failed" in line for line in lines)
        answer = wait_for(lambda: (a := client.get(f"/api/training/{job_id}/trackers").get_json())["lost_reports"]
                          and a, 30, "the loss recorded")
        assert answer["mlflow_run_id"] is None and answer["lost_reports"] >= STEPS  # the loss is counted and logged
        assert scalars(answer["tensorboard_dir"], "value")[-1] == (STEPS, float(STEPS))  # TensorBoard unaffected
    finally:
        hole.close()
