"""GPUs and other resources, end to end with pretend devices (``--fake-gpus``): one agent runs several jobs at
once, each on exactly its devices; a job that cannot be placed says why and starts the moment devices free up;
what no host could ever run is refused at submit; the agent refuses devices that are not there or already
offered; and a job's memory is held to what it asked."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest

from tests.support import REPO, events, row, wait_for, wait_status

pytestmark = pytest.mark.e2e
SAMPLE = {"TRAINQ_TASKS": "tests.task_modules.sample"}
SEEN = re.compile(r"sees CUDA_VISIBLE_DEVICES=(\S*) OMP_NUM_THREADS=(\S+) torch_threads=(\d+)")


def submit(client, resources=None, **params):
    body = {"task": "test-devices", "params": params, **({"resources": resources} if resources else {})}
    response = client.post("/api/training", json=body)
    assert response.status_code == 201, response.get_json()
    return response.get_json()["job"]["id"]


def seen(client, job_id):
    """What the job's process saw, from its log: (CUDA_VISIBLE_DEVICES, OMP_NUM_THREADS, torch's threads)."""
    def line():
        lines = client.get(f"/api/training/{job_id}/logs").get_json()["lines"]
        return next((m.groups() for entry in lines if (m := SEEN.search(entry["line"]))), None)

    return wait_for(line, 120, f"job {job_id} to log its devices")


def test_four_one_gpu_jobs_at_once_each_on_its_own_device_and_a_fifth_waits_until_one_ends(client, workers):
    workers("gpu-box", TRAINQ_FAKE_GPUS="4", TRAINQ_CPUS="8", TRAINQ_SLOTS="5", **SAMPLE)
    ids = [submit(client, seconds=600) for _ in range(4)]  # the task declares one GPU
    for job_id in ids:
        wait_status(job_id, "running", timeout=180)
    placements = {job_id: client.get(f"/api/training/{job_id}").get_json()["placement"] for job_id in ids}
    assert sorted(g for p in placements.values() for g in p["gpus"]) == [0, 1, 2, 3]  # each its own
    for job_id, placement in placements.items():
        assert placement["host"] == "gpu-box" and placement["worker"].startswith("gpu-box-")
        visible, omp, threads = seen(client, job_id)
        assert visible == ",".join(map(str, placement["gpus"]))  # exactly its reservation
        assert (omp, threads) == ("1", "1")  # one CPU asked (the default): one thread
    hosts = client.get("/api/hosts").get_json()["hosts"]
    [box] = [h for h in hosts if h["name"] == "gpu-box"]
    assert box["fake_gpus"] and {g["job"] for g in box["gpus"]} == set(ids) and box["cpus"] == {"total": 8,
                                                                                                "reserved": 4}

    fifth = submit(client, seconds=600)
    reason = client.get(f"/api/training/{fifth}").get_json()["status_reason"]
    assert reason == "waiting for 1 GPU: the most free on any host offering task test-devices is 0 GPUs (gpu-box)"
    assert client.delete(f"/api/training/{ids[0]}").status_code == 200
    wait_status(fifth, "running", timeout=120)  # placed on the freed GPU at once, not at a timer's tick
    assert client.get(f"/api/training/{fifth}").get_json()["placement"]["gpus"] == placements[ids[0]]["gpus"]
    assert ("queued", "running", "worker") in events(fifth)


def test_two_gpus_cpus_and_threads_follow_the_reservation(client, workers):
    workers("big-box", TRAINQ_FAKE_GPUS="4", TRAINQ_CPUS="8", TRAINQ_SLOTS="2", **SAMPLE)
    job_id = submit(client, {"gpus": 2, "cpus": 3}, seconds=600)
    wait_status(job_id, "running", timeout=180)
    placement = client.get(f"/api/training/{job_id}").get_json()["placement"]
    assert placement["gpus"] == [0, 1] and placement["cpus"] == 3 and len(placement["cpu_ids"]) == 3
    assert seen(client, job_id) == ("0,1", "3", "3")
    assert client.delete(f"/api/training/{job_id}").status_code == 200


def test_what_no_host_could_run_is_refused_at_submit_naming_the_biggest_host(client, workers):
    workers("small-box", TRAINQ_FAKE_GPUS="2", **SAMPLE)
    response = client.post("/api/training", json={"task": "test-devices", "resources": {"gpus": 16}})
    error = response.get_json()["error"]
    assert response.status_code == 422 and error["field"] == "resources.gpus"
    assert "asks 16 GPUs" in error["message"] and "small-box, has 2" in error["message"]
    for bad, field in (({"gpus": -1}, "resources.gpus"), ({"gpus": 1.5}, "resources.gpus"),
                       ({"cpus": 0}, "resources.cpus"), ({"memory_gb": 0}, "resources.memory_gb"),
                       ({"tpus": 1}, "resources.tpus")):
        answer = client.post("/api/training", json={"task": "test-devices", "resources": bad})
        assert answer.status_code == 422 and answer.get_json()["error"]["field"] == field, (bad, answer.get_json())


def test_an_agent_refuses_a_gpu_it_does_not_have_or_that_another_agent_offers(settings, ctx, workers, tmp_path):
    env = {**settings, **SAMPLE, "TRAINQ_FAKE_GPUS": "4", "TRAINQ_HOST_NAME": "shared-host"}

    def agent(name: str, *options: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "flask", "--app", "api", "worker", "--name", name, *options],
                              env={**__import__("os").environ, **env}, cwd=REPO, capture_output=True, text=True,
                              timeout=120)

    missing = agent("no-such-gpu", "--gpus", "7")
    assert missing.returncode != 0
    assert "GPU 7 does not exist on this host; the GPUs here are: 0, 1, 2, 3" in missing.stderr
    first = workers("first-agent", TRAINQ_FAKE_GPUS="4", TRAINQ_HOST_NAME="shared-host")
    listening = time.monotonic()
    second = agent("second-agent")
    assert second.returncode != 0 and "is already offered by agent first-agent" in second.stderr, second.stderr
    # and the first, idle all this while (longer than REDIS_TIMEOUT: its BLPOP waits longer), still listens: an RQ
    # worker on a connection made with the app's socket timeout quit after it ("Redis connection timeout, quitting")
    idle = 2 * float(settings.get("REDIS_TIMEOUT", 2.0))
    wait_for(lambda: time.monotonic() - listening > idle, idle + 5, "the first agent to idle past REDIS_TIMEOUT")
    assert first.process.poll() is None and "quitting" not in first.log(), first.log()[-2000:]


def test_a_job_past_its_memory_fails_saying_so_and_others_run_on(client, workers):
    workers("mem-box", TRAINQ_FAKE_GPUS="1", TRAINQ_SLOTS="2", **SAMPLE)
    job_id = submit(client, {"gpus": 0, "memory_gb": 0.25}, seconds=600, alloc_mb=600)
    job = wait_status(job_id, "failed", timeout=180)
    assert re.fullmatch(r"out of memory: used \d+\.\d\d GB of the 0\.25 GB it asked \(resources\.memory_gb\)",
                        job.status_reason), job.status_reason
    fine = submit(client, {"gpus": 0, "memory_gb": 2}, seconds=1, alloc_mb=50)
    wait_status(fine, "completed", timeout=180)
    assert row(fine).metrics["held_mb"] == 50
