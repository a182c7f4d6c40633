"""GPUs and the scheduler on a real GPU host: ``python -m bench.gpu_scheduler_check`` (beside bench/cuda_check.py,
which checks the tasks themselves on CUDA). It starts its own PostgreSQL, Redis, API (gunicorn), reconciler and
one agent offered GPU 0 alone (``--gpus 0``, two slots: a one-GPU host that could run two jobs if the scheduler
let it), prints a pass/fail line per check and a summary, writes ``gpu_scheduler_check.json`` (into ``$OUT`` when
set, else bench/results/) and exits 0 only if every check passed. Where there is no NVIDIA GPU it says so and
exits 2, having started nothing.

1. The agent found the GPU through NVML (``nvidia-ml-py``), and did not initialise CUDA: ``GET /api/hosts`` lists
   GPU 0 with nvidia-smi's UUID, not as a fake one; and no process of the agent (it and its forked workers) is in
   nvidia-smi's list of compute processes.
2. A 1-GPU job (``bench-cuda-hold``: 256 MiB on ``ctx.device``, held) sees exactly its device:
   ``CUDA_VISIBLE_DEVICES`` is the reserved GPU's UUID, torch finds one device, and its UUID is that one; its
   placement names GPU 0; and nvidia-smi shows the job's pid on that GPU (in a container whose pids nvidia-smi
   cannot show, the GPU's used memory grown by the job's 256 MiB instead, and the check says so).
3. A second 1-GPU job waits while the first holds the GPU, with the reason "waiting for 1 GPU: the most free on any
   host offering task bench-cuda-hold is 0 GPUs (gpu-check)", for 3 s; once the first is cancelled it runs on the
   freed GPU and completes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
AGENT = "gpu-check"
TASK = "bench-cuda-hold"
WAITING = f"waiting for 1 GPU: the most free on any host offering task {TASK} is 0 GPUs ({AGENT})"


def no_gpu() -> str | None:
    """Why this host cannot run the check (no driver, no NVML, no GPU), or None."""
    if not shutil.which("nvidia-smi"):
        return "nvidia-smi is not installed"
    from api.worker.inventory import nvml_gpus

    try:
        import pynvml  # noqa: F401 - nvml_gpus finds none without it, silently
    except ImportError:
        return "nvidia-ml-py is not installed (pip install nvidia-ml-py)"
    if not nvml_gpus():
        return "NVML finds no GPU (no NVIDIA driver here)"
    return None


def smi(*query: str) -> list[list[str]]:
    out = subprocess.run(["nvidia-smi", *query, "--format=csv,noheader,nounits"], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    return [[field.strip() for field in line.split(",")] for line in out.splitlines() if line.strip()]


def gpus() -> dict[int, dict[str, Any]]:
    return {int(i): {"uuid": uuid, "name": name, "used_mib": int(used)}
            for i, uuid, name, used in smi("--query-gpu=index,uuid,name,memory.used")}


def compute_apps() -> list[tuple[int, str]]:
    """(pid, GPU UUID) of every process nvidia-smi shows using a GPU."""
    return [(int(pid), uuid) for pid, uuid in smi("--query-compute-apps=pid,gpu_uuid") if pid.isdigit()]


class Checks:
    def __init__(self) -> None:
        self.results: list[dict[str, Any]] = []

    def record(self, name: str, passed: bool, detail: str) -> bool:
        self.results.append({"check": name, "passed": passed, "detail": detail})
        print(f"[{'PASS' if passed else 'FAIL'}] {name}: {detail}", flush=True)
        return passed

    @property
    def passed(self) -> bool:
        return bool(self.results) and all(r["passed"] for r in self.results)


def run(checks: Checks, workdir: Path) -> dict[str, Any]:
    import psutil

    from api.dev.servers import free_port
    from bench.harness import http, stack, wait_for

    before = gpus()
    gpu0 = before[0]
    facts: dict[str, Any] = {"nvidia_smi_gpus": before}
    with stack() as s, s.app.app_context():
        port = free_port()
        s.gunicorn(port)
        base = f"http://127.0.0.1:{port}"
        s.flask("reconciler", name="reconciler")
        agent = s.worker(AGENT, TRAINQ_GPUS="0", TRAINQ_SLOTS="2", TRAINQ_TASKS="bench.bench_tasks")

        # 1. the GPU through NVML, CUDA not initialised by the agent
        hosts = http("GET", f"{base}/api/hosts")[1]["hosts"]
        listed = next((h for h in hosts if h["name"] == AGENT), None)
        facts["host"] = listed
        shown = [(g["index"], g["uuid"]) for g in listed["gpus"]] if listed else None
        checks.record("agent finds the GPU through NVML", bool(listed) and shown == [(0, gpu0["uuid"])]
                      and not listed["fake_gpus"], f"/api/hosts lists {shown}, fake={listed and listed['fake_gpus']}; "
                      f"nvidia-smi: GPU 0 {gpu0['uuid']} ({gpu0['name']})")
        agent_pids = {agent.pid, *(p.pid for p in psutil.Process(agent.pid).children(recursive=True))}
        apps = compute_apps()
        on_gpu = sorted(agent_pids & {pid for pid, _ in apps})
        checks.record("agent has not initialised CUDA", not on_gpu,
                      f"agent and workers (pids {sorted(agent_pids)}) among nvidia-smi's compute processes: "
                      f"{on_gpu or 'none'}")

        # 2. a 1-GPU job sees exactly its device
        def submit(name: str, seconds: float) -> tuple[str, Path]:
            report = workdir / f"{name}.json"
            status, body = http("POST", f"{base}/api/training", {"name": name, "task": TASK,
                                                                "params": {"seconds": seconds, "report": str(report)}})
            if status != 201:
                raise RuntimeError(f"submit {name}: {status} {body}")
            return body["job"]["id"], report

        def job(job_id: str) -> dict[str, Any]:
            return http("GET", f"{base}/api/training/{job_id}")[1]

        first, report = submit("first", 600)
        wait_for(report.exists, 180, "the first job to report what it sees")
        seen = json.loads(report.read_text())
        placement = job(first)["placement"]
        facts["first"] = {"seen": seen, "placement": placement}
        uuid = gpu0["uuid"]
        checks.record("the job sees exactly its GPU", seen["visible"] == uuid and seen["device_count"] == 1
                      and (seen["uuid"] or "").lower() == uuid.lower() and seen["on"].startswith("cuda")
                      and placement["gpus"] == [0] and placement["gpu_uuids"] == [uuid],
                      f"CUDA_VISIBLE_DEVICES={seen['visible']}, torch sees {seen['device_count']} device(s), "
                      f"{seen['uuid']}, tensor on {seen['on']}; placement GPUs {placement['gpus']}")
        time.sleep(1)  # the 256 MiB are allocated before the report; nvidia-smi samples
        apps, now = compute_apps(), gpus()
        mine = [u for pid, u in apps if pid == seen["pid"]]
        grown = now[0]["used_mib"] - before[0]["used_mib"]
        facts["compute_apps_while_first_runs"], facts["used_mib_grown"] = apps, grown
        if apps:
            checks.record("nvidia-smi shows the job's pid on its GPU", mine == [uuid],
                          f"pid {seen['pid']} on {mine or 'no GPU'}; all compute processes: {apps}")
        else:
            checks.record("nvidia-smi shows the job's pid on its GPU (by memory: it shows no pids here)", grown >= 256,
                          f"nvidia-smi lists no compute process (a pid namespace); GPU 0's used memory grew by "
                          f"{grown} MiB while the job holds 256 MiB")

        # 3. a second 1-GPU job waits, saying why, and runs once the GPU is free
        second, second_report = submit("second", 1)
        reasons = []
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            row = job(second)
            reasons.append((row["status"], row["status_reason"]))
            time.sleep(0.2)
        facts["second_while_waiting"] = reasons[-1]
        checks.record("a second 1-GPU job waits with the right reason",
                      all(r == ("queued", WAITING) for r in reasons[2:]) and reasons[-1] == ("queued", WAITING),
                      f"for 3 s: {sorted(set(reasons))}")
        http("DELETE", f"{base}/api/training/{first}")
        done = wait_for(lambda: (r := job(second))["status"] not in ("queued", "running") and r, 180,
                        "the second job to end")
        seen2 = json.loads(second_report.read_text()) if second_report.exists() else {}
        facts["second"] = {"row_status": done["status"], "seen": seen2}
        checks.record("it runs on the freed GPU once the first is cancelled", done["status"] == "completed"
                      and seen2.get("visible") == uuid, f"{done['status']}: {done['status_reason']}; saw "
                      f"CUDA_VISIBLE_DEVICES={seen2.get('visible')}")
    return facts


def main() -> None:
    sys.path.insert(0, str(REPO))
    out = Path(os.environ.get("OUT") or REPO / "bench" / "results") / "gpu_scheduler_check.json"
    why = no_gpu()
    if why is not None:
        print(f"GPU SCHEDULER CHECK: not run: no NVIDIA GPU here ({why}). Run it on a GPU host.")
        sys.exit(2)
    checks = Checks()
    facts: dict[str, Any] = {}
    try:
        facts = run(checks, Path(tempfile.mkdtemp(prefix="gpu-scheduler-check-")))
    except Exception as exc:  # noqa: BLE001 - a check that could not finish is a failed check, said plainly
        checks.record("the check ran to its end", False, f"{exc.__class__.__name__}: {exc}")
    result = {"benchmark": "gpu_scheduler_check", "date": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
              "passed": checks.passed, "checks": checks.results, "facts": facts}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {out}")
    print(f"GPU SCHEDULER CHECK: {'PASSED' if checks.passed else 'FAILED'} "
          f"({sum(r['passed'] for r in checks.results)} of {len(checks.results)} checks passed)")
    sys.exit(0 if checks.passed else 1)


if __name__ == "__main__":
    main()
