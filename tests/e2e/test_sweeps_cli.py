"""``trainq sweep``, ``trainq sweeps``, ``trainq sweep show`` and ``stop`` against a live stack: gunicorn serving
the API, a real worker and reconciler (the driver)."""

from __future__ import annotations

import json

import pytest

from tests.support import trainq, wait_for

pytestmark = pytest.mark.e2e

SAMPLE = {"TRAINQ_TASKS": "tests.task_modules.sample"}


def test_sweep_follow_show_list_and_stop(cli_env, client, workers, reconcilers):
    """A small real sweep of the built-in diabetes-regression task, two trials at a time, pruned by ASHA."""
    workers(**SAMPLE, TRAINQ_SLOTS="2")
    reconcilers(**SAMPLE)
    wait_for(lambda: any(t["name"] == "test-sweep" and t["workers"]
                         for t in client.get("/api/tasks").get_json()["tasks"]), 60, "the worker to offer test-sweep")
    done = trainq(cli_env, "sweep", "diabetes-regression", "--space", "lr=loguniform:1e-3:0.3",
                  "--space", "hidden=int:16:128:16", "--space", "batch_size=choice:16,64", "-p", "epochs=6",
                  "--objective", "val_mse:min", "--trials", "6", "--parallel", "2", "--sampler", "tpe",
                  "--pruner", "asha", "--seed", "1", "--name", "cli sweep", "--follow", timeout=600)
    print(done.stdout)  # the README's worked example is this output
    assert done.returncode == 0, done.stdout + done.stderr
    first = done.stdout.splitlines()[0]
    assert first.startswith("sweep ") and "up to 6 trials of diabetes-regression, 2 at once" in first, first
    sweep_id = first.split()[1]
    assert "sweep completed: all 6 trials ended" in done.stdout
    best = [line for line in done.stdout.splitlines() if line.startswith("best: trial ")]
    assert best and " lr=" in best[0] and "val_mse" in best[0], done.stdout
    shown = trainq(cli_env, "sweep", "show", sweep_id[:8])
    print(shown.stdout)
    assert shown.returncode == 0, shown.stderr
    assert "6/6 trials ended" in shown.stdout
    rows = [line for line in shown.stdout.splitlines() if line.strip().startswith("*")]
    assert len(rows) == 1  # the best trial, marked, listed first
    listed = json.loads(trainq(cli_env, "sweeps", "--json").stdout)
    assert [s["id"] for s in listed][:1] == [sweep_id] and listed[0]["state"] == "completed"
    assert sweep_id[:8] in trainq(cli_env, "sweeps").stdout
    # a long one, stopped from the command line
    started = trainq(cli_env, "sweep", "test-sweep", "--space", "x=uniform:0:1", "--trials", "5",
                     "-p", "epochs=100000", "--json")
    assert started.returncode == 0, started.stderr
    long_id = json.loads(started.stdout)["sweep"]["id"]
    stopped = trainq(cli_env, "sweep", "stop", long_id)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stdout + stopped.stderr
    refused = trainq(cli_env, "sweep", "test-sweep", "--space", "x=uniform:0:5")
    assert refused.returncode == 1 and "space.x.high" in refused.stderr and "Traceback" not in refused.stderr
