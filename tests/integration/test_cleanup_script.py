"""``cleanup_orphaned_jobs.py``: exit codes, one-line summary, JSON, dry run, unreachable servers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta

from api.dev.servers import free_port
from api.record.status import Actor, JobStatus, transition, utcnow
from api.record.tables import TrainingJob
from api.stores import db
from tests.support import REPO, lose


def run_script(settings, *args, **env_overrides):
    env = {**os.environ, **settings, **env_overrides}
    return subprocess.run([sys.executable, "cleanup_orphaned_jobs.py", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def orphan(client, redis) -> str:
    """A running row whose RQ job vanished (as after a Redis flush) and which no process beats for."""
    job_id = client.post("/api/training", json={"config": {}}).get_json()["job"]["id"]
    transition(job_id, JobStatus.RUNNING, reason="test", actor=Actor.WORKER,
               fields={"heartbeat_at": utcnow() - timedelta(minutes=5)})
    lose(redis, job_id)
    return job_id


def test_json_report_and_dry_run(settings, client, redis):
    job_id = orphan(client, redis)
    dry = run_script(settings, "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    report = json.loads(dry.stdout)
    assert report["dry_run"] is True and report["checked"] == 1 and report["actions"] == {"worker_lost": [job_id]}
    db.session.expire_all()
    assert db.session.get(TrainingJob, job_id).status == "running"  # dry run wrote nothing

    real = run_script(settings, "--json")
    assert real.returncode == 0, real.stderr
    assert json.loads(real.stdout)["counts"] == {"worker_lost": 1}
    db.session.expire_all()
    job = db.session.get(TrainingJob, job_id)
    assert job.status == "failed" and job.status_reason == "worker lost (RQ job not found, no heartbeat)"
    assert client.get(f"/api/training/{job_id}/events").get_json()["events"][-1]["actor"] == "cleanup script"


def test_one_line_summary(settings, ctx):
    result = run_script(settings)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith("checked 0 active jobs in ") and result.stdout.count("\n") == 1


def test_unreachable_servers_exit_2_with_clear_message(settings, ctx):
    redis_down = run_script(settings, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", REDIS_TIMEOUT="0.5")
    assert redis_down.returncode == 2
    assert "cannot reach Redis" in redis_down.stderr and "Traceback" not in redis_down.stderr
    pg_down = run_script(settings, DATABASE_URL=f"postgresql://postgres@127.0.0.1:{free_port()}/x")
    assert pg_down.returncode == 2
    assert "cannot reach PostgreSQL" in pg_down.stderr and "Traceback" not in pg_down.stderr


def test_help():
    result = subprocess.run([sys.executable, "cleanup_orphaned_jobs.py", "--help"], cwd=REPO, capture_output=True,
                            text=True)
    assert result.returncode == 0 and "--dry-run" in result.stdout and "DATABASE_URL" in result.stdout
