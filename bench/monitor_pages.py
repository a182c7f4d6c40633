"""The web monitor under load: with 100k rows, the jobs page's server time and a poll that finds nothing
changed (304), served by gunicorn with 2 sync workers, requests from a second process on loopback; then a
Chromium tab on a training job's page for ``--minutes``, its JS heap and DOM size sampled through CDP."""

from __future__ import annotations

import argparse
import time
from typing import Any

from sqlalchemy import text

from api.dev.servers import free_port, wait_for
from api.stores import db, redis_connection
from bench.api_latency import client
from bench.harness import http, login_url, percentiles, stack, write_result
from bench.reconcile_pass import load

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
WATCHED = {"dataset": "digits", "epochs": 100_000, "hidden_sizes": [512, 512], "batch_size": 2,
           "checkpoint_every": 20}  # a few seconds an epoch here: a log line and a curve point each


def latencies(url: str, job_id: str, n: int) -> dict[str, Any]:
    cases = {
        "jobs_page": ("/", False),
        "jobs_page_filtered": ("/?status=failed", False),
        "job_page": (f"/jobs/{job_id}", False),
        "list_poll_304": ("/api/training", True),
        "job_poll_304": (f"/api/training/{job_id}", True),
    }
    out = {}
    for name, (path, conditional) in cases.items():
        client("get", url, path, "20", *(["conditional"] if conditional else []))  # warm-up
        samples = client("get", url, path, str(n), *(["conditional"] if conditional else []))["samples_s"]
        out[name] = {"path": path, "conditional": conditional, "samples_s": samples, "summary": percentiles(samples)}
        print(f"{name:20s} p50 {out[name]['summary']['p50'] * 1000:6.2f} ms  "
              f"p99 {out[name]['summary']['p99'] * 1000:6.2f} ms")
    return out


def browser_memory(url: str, job_id: str, minutes: float, every_s: float) -> dict[str, Any]:
    """Sample the job page's JS heap (after a forced GC) and DOM node count while the job trains."""
    from playwright.sync_api import sync_playwright

    samples = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(login_url(url))
        page.wait_for_url(f"{url}/")
        page.goto(f"{url}/jobs/{job_id}")
        cdp = page.context.new_cdp_session(page)
        cdp.send("Performance.enable")
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) <= minutes * 60:
            cdp.send("HeapProfiler.collectGarbage")
            metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
            epoch = int(page.locator("#curves-title").get_attribute("data-points") or 0)
            log_lines = page.locator("#log .log-line").count()
            samples.append({"t_s": round(elapsed, 1), "js_heap_mb": metrics["JSHeapUsedSize"] / 2**20,
                            "dom_nodes": metrics["Nodes"], "epochs_shown": epoch, "log_lines_shown": log_lines})
            print(f"  {elapsed:6.0f}s heap {samples[-1]['js_heap_mb']:.2f} MB, {metrics['Nodes']:.0f} nodes, "
                  f"{epoch} epochs, {log_lines} log lines", flush=True)
            page.wait_for_timeout(every_s * 1000)  # the page keeps polling meanwhile
        browser.close()
    after_first_minute = [s for s in samples if s["t_s"] >= 60] or samples
    heaps = [s["js_heap_mb"] for s in after_first_minute]
    return {"samples": samples, "heap_mb_at_1min": heaps[0], "heap_mb_at_end": heaps[-1],
            "heap_mb_max": max(heaps), "growth_after_1min": heaps[-1] / heaps[0] - 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--minutes", type=float, default=10.0, help="how long the browser watches a job")
    parser.add_argument("--every", type=float, default=15.0, help="seconds between memory samples")
    args = parser.parse_args()
    with stack() as s:
        with s.app.app_context():
            load(args.rows)
            # every tenth row failed rather than queued: a worker's start-up reconcile would re-enqueue 10k jobs
            db.session.execute(text("UPDATE training_jobs SET status = 'failed' WHERE status = 'queued'"))
            db.session.commit()
            redis_connection.get().flushdb()
            some_job = str(db.session.scalar(text("SELECT id FROM training_jobs ORDER BY created_at DESC LIMIT 1")))
            db.session.remove()
        port = free_port()
        s.gunicorn(port, workers=2)
        url = f"http://127.0.0.1:{port}"
        pages = latencies(url, some_job, args.requests)  # nothing trains yet: unchanged polls are 304s
        s.worker("bench-monitor", LOG_LEVEL="INFO")  # the job's epoch lines reach its log
        status, body = http("POST", f"{url}/api/training", {"name": "watched", "config": WATCHED})
        assert status == 201, body
        job_id = body["job"]["id"]
        wait_for(lambda: http("GET", f"{url}/api/training/{job_id}")[1]["status"] == "running", 120, "training")
        memory = browser_memory(url, job_id, args.minutes, args.every)
    print(f"browser heap {memory['heap_mb_at_1min']:.2f} MB at 1 min -> {memory['heap_mb_at_end']:.2f} MB at "
          f"{args.minutes:g} min ({memory['growth_after_1min']:+.1%})")
    write_result("monitor_pages", {
        "description": f"gunicorn -w 2 (sync), {args.rows} rows (10 % failed) plus one job training; sequential GETs "
                       "from a second process (client-side latency, an upper bound of server time); then Chromium on "
                       f"the training job's page for {args.minutes:g} min, heap sampled after a forced GC via CDP",
        "targets": {"jobs_page_p99_s": "<= 0.050", "poll_304_p50_s": "<= 0.005", "browser_memory": "flat"},
        "rows": args.rows,
        "pages": pages,
        "browser": memory,
    })


if __name__ == "__main__":
    main()
