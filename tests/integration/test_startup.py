"""Start-up: the WSGI entry point reconciles once; make run's supervisor restarts a dead worker and stops
everything on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request

import psutil
from rq.worker import Worker

from api.dev.servers import free_port
from tests.support import REPO, process_gone, wait_for


def test_wsgi_entry_point_reconciles_at_start(settings, client, redis):
    job_id = client.post("/api/training", json={"task": "mlp"}).get_json()["job"]["id"]
    redis.flushdb()
    code = "import api.wsgi"
    env = {**os.environ, **settings, "ENQUEUE_GRACE": "0"}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"job {job_id}: requeued" in result.stderr
    assert redis.exists(f"rq:job:{job_id}")


def _get(url: str, token: str | None = None) -> dict:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as response:
        return json.loads(response.read())


def test_make_run_supervises_its_worker_and_stops_cleanly(settings, ctx, redis, tmp_path):
    port = free_port()
    env = {**os.environ, **settings, "PORT": str(port)}
    env.pop("TRAINQ_SLOTS")  # make run's default: one slot per CPU
    out_path = tmp_path / "make-run.out"
    with open(out_path, "wb") as out:
        supervisor = subprocess.Popen([sys.executable, "-m", "api.dev"], cwd=tmp_path, env=env, stdout=out,
                                      stderr=subprocess.STDOUT)
    try:
        health = f"http://127.0.0.1:{port}/api/health"

        def up() -> dict | None:
            try:
                body = _get(health, (tmp_path / "var" / "admin.token").read_text().strip())
            except OSError:
                return None
            return body if body["workers"] == slots else None

        slots = len(os.sched_getaffinity(0))  # make run's agent runs one worker per CPU
        wait_for(up, 90, f"make run's API with its agent's {slots} workers")
        wait_for(lambda: "\nready: " in out_path.read_text(), 60, "make run's ready line")
        agent = next(p for p in psutil.Process(supervisor.pid).children()
                     if "worker" in p.cmdline())  # the host's agent, whose workers are forked from it
        before = {w.pid for w in Worker.all(connection=redis)}
        os.kill(agent.pid, signal.SIGKILL)  # its workers die with it
        wait_for(lambda: len([w for w in Worker.all(connection=redis) if w.pid not in before and
                              not process_gone(w.pid)]) == slots, 90, "a new agent's workers")
        wait_for(lambda: "\nworker ready again: " in out_path.read_text(), 60, "make run's line: ready again")
        children = psutil.Process(supervisor.pid).children(recursive=True)
        supervisor.send_signal(signal.SIGTERM)
        supervisor.wait(60)
        wait_for(lambda: all(process_gone(c.pid) for c in children), 15, "every child to stop")
        output = out_path.read_text()
        assert "worker exited with -9; restarting" in output
        assert "Traceback" not in output  # a pool's workers stop without one
        assert f"curl -sS -X POST http://127.0.0.1:{port}/api/training" in output
        token = (tmp_path / "var" / "admin.token").read_text().strip()
        # stdout is a pipe, not a terminal: where the token is, never the token (the login link is for terminals)
        assert token not in output and f"kept in {tmp_path / 'var' / 'admin.token'}" in output
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
