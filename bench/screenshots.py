"""Not a benchmark: stages a small real stack (the bench harness's) with jobs of both built-in tasks in every
status and saves the README's screenshots of the monitor's pages, desktop and 375 px wide, under docs/: the jobs
page with the submit form generated for the ``mlp`` task open, a finished ``diabetes-regression`` job (a
curve per metric, its params, its ``model.pt`` artifact), the compare page, and the hosts page (a host with four
fake GPUs, three of them held by two jobs, a third job waiting for GPUs). ``make screenshots``;
``python -m bench.screenshots --only hosts`` takes the hosts page's alone (a minute, no training)."""

from __future__ import annotations

import argparse
import tempfile

from api.dev.servers import free_port, wait_for
from bench.harness import REPO, http, login_url, stack
from bench.monitor_pages import CHROMIUM_ARGS

DOCS = REPO / "docs"
QUICK = {"dataset": "digits", "epochs": 8, "hidden_sizes": [64], "batch_size": 32, "checkpoint_every": 4}
LONG = {"dataset": "digits", "epochs": 400, "hidden_sizes": [256, 256], "batch_size": 8, "checkpoint_every": 3}
DIABETES = {"epochs": 60, "hidden": 32, "lr": 0.005, "weight_decay": 0.0001, "seed": 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", choices=["hosts"], help="take only these pages' screenshots")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="trainq-shots-") as artifacts, stack(ARTIFACT_DIR=artifacts) as s:
        port = free_port()
        s.gunicorn(port, workers=2)
        url = f"http://127.0.0.1:{port}"

        def submit(name: str, params: dict, task: str = "mlp", resources: dict | None = None) -> str:
            status, body = http("POST", f"{url}/api/training", {"name": name, "task": task, "params": params,
                                                                 **({"resources": resources} if resources else {})})
            assert status == 201, body
            return body["job"]["id"]

        def status_of(job_id: str) -> str:
            return http("GET", f"{url}/api/training/{job_id}")[1]["status"]

        if args.only == "hosts":
            with sync_playwright() as p:
                hosts_page(p, url, s, submit, status_of)
            print("wrote monitor-hosts.png, monitor-hosts-375.png in docs/")
            return
        s.worker("gpu-box-1", LOG_LEVEL="INFO")

        done = submit("digits-baseline", QUICK)
        wait_for(lambda: status_of(done) == "completed", 120, "the baseline to complete")
        regression = submit("diabetes-wd-1e-4", DIABETES, task="diabetes-regression")
        wait_for(lambda: status_of(regression) == "completed", 120, "the regression to complete")
        sweep = [regression] + [submit(f"diabetes-lr-{lr}", {**DIABETES, "lr": lr}, task="diabetes-regression")
                                for lr in (0.02, 0.001)]
        wait_for(lambda: all(status_of(job_id) == "completed" for job_id in sweep), 240, "the sweep to complete")
        dropped = submit("lr-sweep-0.1", {**LONG, "learning_rate": 0.1})
        wait_for(lambda: status_of(dropped) == "running", 60, "the sweep to start")
        http("DELETE", f"{url}/api/training/{dropped}")
        running = submit("digits-wide", LONG)
        wait_for(lambda: status_of(running) == "running", 60, "the wide model to start")
        stuck = submit("old-host-run", QUICK)
        http("POST", f"{url}/api/training/{stuck}/mark-failed", {"reason": "its GPU host was retired"})
        submit("diabetes-wide", {**DIABETES, "hidden": 256}, task="diabetes-regression")
        submit("digits-wide-seed-2", {**LONG, "seed": 2})
        wait_for(lambda: http("GET", f"{url}/api/training/{running}")[1]["epoch"] >= 3, 300, "some epochs")

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            for width, suffix in ((1280, ""), (375, "-375")):
                page = browser.new_page(viewport={"width": width, "height": 900})
                page.goto(login_url(url))  # logs in as the bench admin, then shows the jobs page
                page.wait_for_url(f"{url}/")
                page.locator("#job-rows tr").first.wait_for()
                page.locator("#submit-panel summary").click()
                page.locator("#task-select").select_option("mlp")
                page.locator("#param-epochs").wait_for()
                for job_id in sweep:
                    page.locator(f"tr[data-job-id='{job_id}'] .select-job").check()
                page.screenshot(path=DOCS / f"monitor-jobs{suffix}.png", full_page=True)
                page.goto(f"{url}/jobs/{regression}")
                page.locator("#charts .chart[data-metric=val_r2] canvas").wait_for()
                page.locator("#artifacts a").first.wait_for()
                page.locator("#log .log-line").nth(5).wait_for()
                page.wait_for_timeout(1500)  # one more poll: curves and log settled for the picture
                page.screenshot(path=DOCS / f"monitor-job{suffix}.png", full_page=True)
                page.goto(f"{url}/compare?ids={','.join(sweep)}")
                page.locator("#charts .chart[data-metric=val_r2][data-lines='3'] canvas").wait_for()
                page.wait_for_timeout(500)
                page.screenshot(path=DOCS / f"monitor-compare{suffix}.png", full_page=True)
                page.close()
            browser.close()
            hosts_page(p, url, s, submit, status_of)
    print(f"wrote {', '.join(sorted(p.name for p in DOCS.glob('monitor-*.png')))} in docs/")


def hosts_page(playwright, url: str, s, submit, status_of) -> None:
    """A second host, ``gpu-box-2``, with four fake GPUs: a 2-GPU and a 1-GPU job on it, and a 2-GPU job waiting
    (one GPU is free); the hosts page, desktop and 375 px wide."""
    s.worker("gpu-box-2", LOG_LEVEL="INFO", TRAINQ_FAKE_GPUS="4", TRAINQ_CPUS="8", TRAINQ_MEMORY="64G",
             TRAINQ_SLOTS="4")
    held = [submit("digits-2-gpus", LONG, resources={"gpus": 2, "cpus": 2, "memory_gb": 8}),
            submit("digits-1-gpu", {**LONG, "seed": 3}, resources={"gpus": 1})]
    for job_id in held:
        wait_for(lambda job_id=job_id: status_of(job_id) == "running", 120, "the GPU jobs to start")
    submit("digits-waits-for-2", {**LONG, "seed": 4}, resources={"gpus": 2})
    browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
    for width, suffix in ((1280, ""), (375, "-375")):
        page = browser.new_page(viewport={"width": width, "height": 900})
        page.goto(login_url(url))
        page.wait_for_url(f"{url}/")
        page.goto(f"{url}/hosts")
        page.locator(".host[data-host='gpu-box-2'] tr[data-gpu='2'] a.gpu-job").wait_for()
        page.screenshot(path=DOCS / f"monitor-hosts{suffix}.png", full_page=True)
        page.close()
    browser.close()
    for job_id in held:
        http("DELETE", f"{url}/api/training/{job_id}")


if __name__ == "__main__":
    main()
