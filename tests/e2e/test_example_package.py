"""The README's walk through the example task package, on real servers and workers: the package as pip
installs it (its module is the README's snippet, as written; its entry point the one pyproject.toml
declares), offered by a worker, submitted, its curves growing, paused, resumed, its artifact downloaded."""

from __future__ import annotations

import io
import re
import tomllib
from pathlib import Path

import pytest
import torch

from tests.support import REPO, assert_events_chain, row, wait_for, wait_status

EXAMPLE = REPO / "examples" / "sine-tasks"


def readme_snippet() -> str:
    readme = (REPO / "README.md").read_text()
    match = re.search(r"```python\n(# trainq_sine/tasks\.py\n.*?)```", readme, re.S)
    assert match, "the README has no trainq_sine/tasks.py snippet"
    return match.group(1)


def test_the_readme_snippet_is_the_example_packages_module():
    assert readme_snippet() == (EXAMPLE / "trainq_sine" / "tasks.py").read_text()


@pytest.fixture
def installed_example(tmp_path: Path) -> Path:
    """What ``pip install ./examples/sine-tasks`` puts in site-packages: the module, written from the README's
    snippet, and a dist-info whose entry points are pyproject.toml's."""
    site = tmp_path / "site-packages"
    (site / "trainq_sine").mkdir(parents=True)
    (site / "trainq_sine" / "__init__.py").write_text((EXAMPLE / "trainq_sine" / "__init__.py").read_text())
    (site / "trainq_sine" / "tasks.py").write_text(readme_snippet())
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    dist = site / f"trainq_sine-{project['version']}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    entry_points = project["entry-points"]["trainq.tasks"]
    lines = "".join(f"{name} = {module}\n" for name, module in entry_points.items())
    (dist / "entry_points.txt").write_text(f"[trainq.tasks]\n{lines}")
    return site


def test_the_walk_through(client, workers, installed_example):
    workers(PYTHONPATH=str(installed_example))  # "restart the worker" after installing the package

    tasks = {t["name"]: t for t in client.get("/api/tasks").get_json()["tasks"]}
    sine = tasks["sine-lstm"]
    assert sine["workers"] == 1 and sine["description"] == "Fit an LSTM to a noisy sine wave."
    assert sine["module"] == "trainq_sine.tasks" and set(sine["params_schema"]["properties"]) == {
        "epochs", "lr", "hidden", "noise", "seed"}

    response = client.post("/api/training", json={"task": "sine-lstm", "params": {"epochs": 40, "lr": 0.01},
                                                  "name": "my sine"})
    assert response.status_code == 201, response.get_json()
    job = response.get_json()["job"]
    assert job["params"] == {"epochs": 40, "lr": 0.01, "hidden": 32, "noise": 0.05, "seed": 0}
    job_id = job["id"]

    def curves_growing():
        body = client.get(f"/api/training/{job_id}").get_json()
        points = [h for h in body["history"] if h.get("val_loss") is not None]
        return body["status"] == "running" and body["checkpoint_path"] and len(points) >= 3 and body

    wait_for(curves_growing, 90, "the sine job's curves to grow")
    assert client.post(f"/api/training/{job_id}/pause").status_code == 202
    paused = wait_status(job_id, "paused")
    assert 3 <= paused.epoch < 40 and paused.resume_from

    assert client.post(f"/api/training/{job_id}/resume").status_code == 200
    done = wait_status(job_id, "completed", timeout=120)
    assert done.attempts == 2 and done.metrics["val_loss"] < 0.1
    assert [h["epoch"] for h in done.history if "epoch" in h] == list(range(1, 41))  # each epoch once
    evs = assert_events_chain(job_id)
    assert ("running", "paused", "worker") in evs and ("paused", "queued", "api") in evs
    log = [line["line"] for line in client.get(f"/api/training/{job_id}/logs").get_json()["lines"]]
    assert any(f"job {job_id}: epoch 40 done" in line for line in log)
    assert any(f"job {job_id}: restoring ckpt-" in line for line in log)  # the second attempt restored

    [artifact] = client.get(f"/api/training/{job_id}/artifacts").get_json()["artifacts"]
    assert artifact["name"] == "model.pt"
    download = client.get(artifact["url"])
    assert download.status_code == 200 and len(download.get_data()) == artifact["size"]
    state = torch.load(io.BytesIO(download.get_data()), weights_only=True)
    assert "lstm.weight_ih_l0" in state and "head.weight" in state
    assert row(job_id).status == "completed"
