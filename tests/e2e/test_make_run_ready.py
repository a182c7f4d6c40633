"""``make run`` (``python -m api.dev``, here on the test session's servers) as a newcomer meets it:

- its banner comes only once the API answers and its worker has published its tasks, so the README's first curl,
  run the moment the banner is printed, is accepted;
- its terminal shows the banner, starts and stops, and warnings and errors: the access log and the jobs' output
  go to ``var/log/`` (``make logs``);
- after a task module is edited, ``make reload`` (SIGHUP) restarts only the worker, which offers the new code;
  meanwhile a task it has not published yet is "workers are starting; retry in a few seconds" (503), not unknown.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request

import psutil

from api.dev.servers import free_port
from tests.support import REPO, wait_for

TASKS_V1 = '''
from pydantic import BaseModel
from trainq import task


class Params(BaseModel):
    n: int = 1


@task("edited", params=Params)
def edited(ctx, params):
    ctx.log.info("edited task, first version")
    return {"version": 1.0}
'''

TASKS_V2 = TASKS_V1.replace("first version", "second version").replace('"version": 1.0', '"version": 2.0') + '''

@task("added-later", params=Params)
def added_later(ctx, params):
    return {"version": 2.0}
'''


def _call(url: str, token: str, body: dict | None = None) -> tuple[int, dict, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Authorization": f"Bearer {token}",
                                                              "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), dict(exc.headers)


def _readme_first_curl() -> str:
    readme = (REPO / "README.md").read_text()
    return re.search(r"```sh\n(curl -sS -X POST http://127\.0\.0\.1:5000/api/training .*?)```", readme, re.S).group(1)


def test_make_run_is_ready_when_it_says_so_keeps_its_terminal_readable_and_reloads_its_worker(settings, ctx,
                                                                                               tmp_path):
    project, modules = tmp_path / "clone", tmp_path / "modules"
    project.mkdir()
    modules.mkdir()
    (modules / "edit_me.py").write_text(TASKS_V1)
    port = free_port()
    env = {**os.environ, **settings, "PORT": str(port), "TRAINQ_TASKS": "edit_me",
           "PYTHONPATH": os.pathsep.join([str(modules), str(REPO)])}
    env.pop("CHECKPOINT_DIR")
    out_path = tmp_path / "terminal.out"
    with open(out_path, "wb") as out:
        supervisor = subprocess.Popen([sys.executable, "-m", "api.dev"], cwd=project, env=env, stdout=out,
                                      stderr=subprocess.STDOUT, start_new_session=True)

    def terminal() -> str:
        return out_path.read_text(errors="replace")

    def alive() -> None:
        assert supervisor.poll() is None, f"make run exited with {supervisor.returncode}:\n{terminal()}"

    base = f"http://127.0.0.1:{port}"
    try:
        # 1. The banner is printed once a submit works: the README's curl, the moment it shows, is accepted.
        wait_for(lambda: alive() or "Submit a first job" in terminal(), 240, "make run's banner")
        curl = _readme_first_curl().replace(":5000/", f":{port}/")
        result = subprocess.run(["bash", "-c", curl], cwd=project, capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        job = json.loads(result.stdout)["job"]
        assert job["status"] == "queued" and "warning" not in json.loads(result.stdout), result.stdout
        assert re.search(r"^ready: the API answers and the worker offers .*\bedited\b", terminal(), re.M), terminal()
        token = (project / "var" / "admin.token").read_text().strip()


        def ended(job_id: str) -> dict | None:
            row = _call(f"{base}/api/training/{job_id}", token)[1]
            return row if row["status"] in ("completed", "failed", "cancelled") else None

        status, body, _ = _call(f"{base}/api/training", token, {"name": "v1", "task": "edited"})
        assert status == 201, body
        done = wait_for(lambda: ended(body["job"]["id"]), 120, "the v1 job to end")
        assert done["status"] == "completed" and done["metrics"]["version"] == 1.0, done

        # 2. The terminal: the banner, starts and stops; the access log and the jobs' output in var/log/.
        logs = project / "var" / "log"
        wait_for(lambda: "edited task, first version" in (logs / "worker.log").read_text(), 30, "the job's output")
        assert "GET /api/health" in (logs / "access.log").read_text()
        shown = terminal()
        assert "edited task, first version" not in shown and "GET /api/" not in shown and "POST /api" not in shown
        assert "started worker" in shown and "started api" in shown and "Traceback" not in shown, shown
        agents_before = {p.pid for p in psutil.Process(supervisor.pid).children()}

        # 3. Edit the task module, `make reload`: only the worker restarts, and runs the new code.
        (modules / "edit_me.py").write_text(TASKS_V2)
        pid_file = project / "var" / "make-run.pid"
        reload = subprocess.run(["make", "-s", "-C", str(REPO), "reload", f"PID_FILE={pid_file}"],
                                capture_output=True, text=True, timeout=30)
        assert reload.returncode == 0, reload.stderr
        wait_for(lambda: alive() or "SIGHUP: restarting the worker" in terminal(), 30, "the reload to begin")
        status, body, headers = _call(f"{base}/api/training", token, {"name": "early", "task": "added-later"})
        if "worker ready again" not in terminal():  # still importing: not published yet, so "retry soon"
            assert status == 503 and "workers are starting; retry in a few seconds" in body["error"]["message"], body
            assert int(headers["Retry-After"]) > 0
        wait_for(lambda: alive() or "worker ready again: the API answers and the worker offers" in terminal(), 240,
                 "the reloaded worker to publish")
        children = {p.pid: p.cmdline() for p in psutil.Process(supervisor.pid).children()}
        assert sum("worker" in cmd for cmd in children.values()) == 1
        assert {pid for pid, cmd in children.items() if "worker" not in cmd} <= agents_before  # API, reconciler kept

        status, body, _ = _call(f"{base}/api/training", token, {"name": "v2", "task": "edited"})
        assert status == 201, body
        done = wait_for(lambda: ended(body["job"]["id"]), 120, "the v2 job to end")
        assert done["status"] == "completed" and done["metrics"]["version"] == 2.0, done
        status, body, _ = _call(f"{base}/api/training", token, {"name": "added", "task": "added-later"})
        assert status == 201, body
    finally:
        if supervisor.poll() is None:
            supervisor.send_signal(signal.SIGINT)
        try:
            code = supervisor.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(supervisor.pid, signal.SIGKILL)
            raise
    assert code == 0, terminal()
    assert "stopping" in terminal()
    assert not (project / "var" / "make-run.pid").exists()


def test_the_terminal_echo_shows_warnings_errors_and_their_tracebacks_only(tmp_path):
    from api.dev.logs import Echo

    log = tmp_path / "worker.log"
    log.write_text("2026-12-02 07:00:00,000 INFO old: before make run started\n")
    shown: list[str] = []

    class Out:
        def write(self, text: str) -> None:
            shown.append(text)

        def flush(self) -> None:
            pass

    echo = Echo({"worker": log}, out=Out())
    with open(log, "a") as file:
        file.write(textwrap.dedent("""\
            2026-12-02 07:00:01,000 INFO api.worker.attempt: job 1: running
            07:00:01 default: api.worker.run_training_job(...) (1)
            2026-12-02 07:00:02,000 ERROR api.worker.attempt: job 1 failed: ValueError: boom
            Traceback (most recent call last):
              File "x.py", line 1, in <module>
            ValueError: boom
            2026-12-02 07:00:03,000 INFO builtin_tasks.trainer: job 2: epoch 1/3
            [2026-12-02 07:00:04 +0000] [12] [WARNING] Worker with pid 13 was terminated
            2026-12-02 07:00:05,000 INFO builtin_tasks.trainer: job 2: epoch 2/3
            half a li"""))
    echo.pass_once()
    with open(log, "a") as file:
        file.write("ne\n")
    echo.pass_once()
    assert "".join(shown).splitlines() == [
        "[worker] 2026-12-02 07:00:02,000 ERROR api.worker.attempt: job 1 failed: ValueError: boom",
        "[worker] Traceback (most recent call last):",
        '[worker]   File "x.py", line 1, in <module>',
        "[worker] ValueError: boom",
        "[worker] [2026-12-02 07:00:04 +0000] [12] [WARNING] Worker with pid 13 was terminated",
    ]
