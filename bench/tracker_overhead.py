"""The trackers' cost on the training loop (issue 25; BENCHMARKS.md §10): ``ctx.report`` every step with
TensorBoard and MLflow on, against the same ``ctx.report`` without trackers, in one process and one loop,
alternating blocks of steps (ABBA) so machine noise falls on both alike. The loop is §7's (an MLP on random
batches, 1 torch thread). MLflow is a real ``mlflow server`` (SQLite backend) started here on 127.0.0.1.

The trackers run as in a worker (``api.worker.trackers.Trackers``, their own thread: TensorBoard event files and
MLflow batches); the row's writer is stood in for by a sink that keeps reports under a lock, as
``ProgressWriter.report`` does, so both arms pay it alike.

    python -m bench.tracker_overhead [--steps 20000] [--block 25]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "tracker_overhead.json"


class RowSink:
    coalesce_seconds = 0.05

    def __init__(self, track: Any = None) -> None:
        self.lock, self.pending, self.track = threading.Lock(), [], track

    def report(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self.pending.append(entry)

    def progress_total(self, *args: Any) -> None: ...

    def checkpointed(self, *args: Any) -> None: ...

    def artifact_saved(self, *args: Any) -> None: ...

    def stop_reason(self) -> None:
        return None


def tight_report_ns(context: Any, folder: Path, calls: int = 200_000) -> dict[str, float]:
    """One ``ctx.report(step=i, loss=x)`` in a tight loop, without trackers and with ``track`` a bare
    ``deque.append`` (the training thread's whole share of the trackers), best of 5 rounds each (ns)."""
    import collections

    best: dict[str, float] = {}
    for arm in ("plain", "tracked"):
        track = collections.deque().append if arm == "tracked" else None
        rounds = []
        for _ in range(5):
            ctx = context(job_id=arm, attempt=1, checkpoint_dir=folder, artifact_dir=folder, workdir=folder,
                          log=logging.getLogger("bench"), sink=RowSink(track))
            start = time.perf_counter()
            for i in range(calls):
                ctx.report(step=i, loss=0.5)
            rounds.append((time.perf_counter() - start) / calls * 1e9)
        best[f"report_ns_tight_{arm}"] = min(rounds)
    return best


def start_mlflow(folder: Path) -> tuple[subprocess.Popen, str]:
    from api.dev.servers import free_port, wait_for

    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                                f"sqlite:///{folder}/mlflow.db", "--artifacts-destination", str(folder / "a"),
                                "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return urllib.request.urlopen(f"{url}/health", timeout=2).status == 200
        except OSError:
            return False

    wait_for(up, 180, "mlflow server", interval=0.5)
    return process, url


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20000, help="steps per arm")
    parser.add_argument("--block", type=int, default=25)
    args = parser.parse_args()

    import torch

    from api.worker.trackers import Trackers
    from trainq.context import TaskContext

    torch.set_num_threads(1)
    folder = Path(tempfile.mkdtemp(prefix="tracker-bench-"))
    tight = tight_report_ns(TaskContext, folder)
    server, uri = start_mlflow(folder)
    quiet = logging.getLogger("bench.trackers")
    quiet.setLevel(logging.ERROR)
    try:
        job = SimpleNamespace(id=uuid.uuid4(), name="bench", task="bench", params={"lr": 0.01}, owner_id=1)
        config = {"TENSORBOARD": True, "ARTIFACT_DIR": str(folder / "artifacts"), "MLFLOW_TRACKING_URI": uri,
                  "MLFLOW_EXPERIMENT": "bench", "TRACKER_FLUSH_TIMEOUT": 60.0}
        trackers = Trackers(job, 1, config, engine=None, jlog=quiet)  # type: ignore[arg-type]
        contexts = {}
        for arm, track in (("plain", None), ("tracked", trackers.track)):
            contexts[arm] = TaskContext(job_id=arm, attempt=1, checkpoint_dir=folder / arm / "c",
                                        artifact_dir=folder / arm / "a", workdir=folder, log=quiet,
                                        sink=RowSink(track))
        model = torch.nn.Sequential(torch.nn.Linear(128, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256),
                                    torch.nn.ReLU(), torch.nn.Linear(256, 10))
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        x, y = torch.randn(64, 128), torch.randint(0, 10, (64,))
        loss_fn = torch.nn.CrossEntropyLoss()
        spent = {"plain": 0.0, "tracked": 0.0}
        in_report = {"plain": 0.0, "tracked": 0.0}
        ratios = []
        step = {"plain": 0, "tracked": 0}
        with trackers:
            time.sleep(3)  # the tracker thread has imported MLflow and made the run: steady state is measured
            blocks = args.steps // args.block
            for pair in range(blocks):
                order = ("plain", "tracked") if pair % 2 == 0 else ("tracked", "plain")
                took = {}
                for arm in order:
                    ctx = contexts[arm]
                    start = time.perf_counter()
                    for _ in range(args.block):
                        opt.zero_grad()
                        loss = loss_fn(model(x), y)
                        loss.backward()
                        opt.step()
                        step[arm] += 1
                        t0 = time.perf_counter()
                        ctx.report(step=step[arm], loss=loss)
                        in_report[arm] += time.perf_counter() - t0
                    took[arm] = time.perf_counter() - start
                    spent[arm] += took[arm]
                ratios.append(took["tracked"] / took["plain"])
            ended = time.perf_counter()
        flush = time.perf_counter() - ended
        from mlflow.tracking import MlflowClient

        logged = len(MlflowClient(uri).get_metric_history(trackers._run_id, "loss")) if trackers._run_id else 0
        ratio = spent["tracked"] / spent["plain"]
        # the tracker thread's own work per report (TensorBoard scalar + an MLflow metric queued and batched), timed
        # alone: what it could take from the training thread at worst, if both wanted the GIL all the time
        solo = Trackers(SimpleNamespace(id=uuid.uuid4(), name="solo", task="bench", params={}, owner_id=1), 1,
                        config, engine=None, jlog=quiet)  # type: ignore[arg-type]
        solo._open()
        for i in range(20000):
            solo.track({"step": i + 1, "loss": 0.5})
        cpu0, wall0 = time.thread_time(), time.perf_counter()
        solo._drain()
        solo._send_mlflow()
        solo_cpu_us = 1e6 * (time.thread_time() - cpu0) / 20000
        solo_wall_us = 1e6 * (time.perf_counter() - wall0) / 20000
        solo._writer.close()
        means = sorted(statistics.mean(ratios[i::10]) for i in range(10))  # ten interleaved subsets: a spread
        result = {
            "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "steps_per_arm": step["plain"], "block": args.block,
            "step_ms_plain": 1000 * spent["plain"] / step["plain"],
            "ratio_tracked_over_plain": ratio, "ratio_subsets_min_max": [means[0], means[-1]],
            "ratio_blocks_p50": statistics.median(ratios),
            "report_us_plain": 1e6 * in_report["plain"] / step["plain"],
            "report_us_tracked": 1e6 * in_report["tracked"] / step["tracked"],
            "reports_tracked": trackers.reports, "mlflow_points": logged, "lost": trackers.lost,
            "flush_after_loop_s": flush, **tight,
            "tracker_thread_cpu_us_per_report": solo_cpu_us, "tracker_thread_wall_us_per_report": solo_wall_us,
        }
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
