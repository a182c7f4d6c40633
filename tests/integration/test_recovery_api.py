"""Recovery endpoints against real Redis and PostgreSQL: what each accepts, refuses, and answers."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text

from api.queue import fetch
from api.record.status import Actor, JobStatus, transition, utcnow
from api.stores import db
from api.web import auth
from tests.support import lose, submit


def set_status(job_id, *path):
    for status in path:
        transition(job_id, status, reason="test", actor=Actor.WORKER)


def error_of(response, status):
    assert response.status_code == status, response.get_data(as_text=True)
    return response.get_json()["error"]


@pytest.mark.parametrize(
    ("path", "advice"),
    [
        ((JobStatus.RUNNING,), "cancel it first, or mark it failed if it is stuck"),
        ((JobStatus.RUNNING, JobStatus.COMPLETED), "submit a new job to train again"),
        ((JobStatus.RUNNING, JobStatus.PAUSED), "resume it to continue from its checkpoint"),
    ],
)
def test_force_start_refusals_name_the_right_action(client, path, advice):
    job_id = submit(client, {})
    set_status(job_id, *path)
    error = error_of(client.post(f"/api/training/{job_id}/force-start"), 409)
    assert advice in error["message"] and error["job_status"] == path[-1]


def test_force_start_a_queued_job_whose_rq_job_was_lost(client, redis):
    job_id = submit(client, {})
    body = client.post(f"/api/training/{job_id}/force-start").get_json()
    assert body["message"] == f"Job {job_id} is already queued in RQ" and body["queue_position"] == 0
    lose(redis, job_id)
    redis.delete("rq:queue:training.mlp")
    body = client.post(f"/api/training/{job_id}/force-start").get_json()
    assert body == {**body, "success": True, "job_id": job_id, "previous_status": "queued", "new_status": "queued",
                    "queue_position": 0, "message": f"Job {job_id} re-enqueued (its RQ job was lost)"}
    assert fetch(job_id, redis).get_status() == "queued"


def test_force_start_a_failed_job_starts_afresh_on_a_new_attempt(client, redis):
    job_id = submit(client, {})
    set_status(job_id, JobStatus.RUNNING, JobStatus.FAILED)
    body = client.post(f"/api/training/{job_id}/force-start").get_json()
    assert (body["previous_status"], body["new_status"]) == ("failed", "queued")
    job = body["job"]
    assert job["attempts"] == 2 and job["resume_from"] is None and job["error_message"] is None
    assert job["rq_job_id"] == f"{job_id}-attempt-2"  # each attempt its own RQ job
    assert fetch(f"{job_id}-attempt-2", redis).args == [job_id, 2]
    assert fetch(job_id, redis).get_status() == "queued"  # attempt 1's, never run here


def test_force_start_revalidates_the_params(client):
    job_id = submit(client, {})
    set_status(job_id, JobStatus.CANCELLED)
    db.session.execute(text("UPDATE training_jobs SET params = '{\"epochs\": 0}' WHERE id = :i"), {"i": job_id})
    db.session.commit()
    assert error_of(client.post(f"/api/training/{job_id}/force-start"), 422)["field"] == "params.epochs"


def test_mark_failed_stuck_rows_with_a_reason(client, redis):
    job_id = submit(client, {})
    body = client.post(f"/api/training/{job_id}/mark-failed", json={"reason": "stuck for a week"}).get_json()
    assert body["success"] and body["job"]["status"] == "failed"
    assert body["job"]["status_reason"] == "marked failed by user: stuck for a week"
    assert fetch(job_id, redis).get_status() == "canceled"  # nothing left to run
    error = error_of(client.post(f"/api/training/{job_id}/mark-failed", json={"reason": "again"}), 409)
    assert "already failed" in error["message"]
    other = submit(client, {})
    assert error_of(client.post(f"/api/training/{other}/mark-failed", json={"reason": 7}), 422)["field"] == "reason"
    assert error_of(client.post(f"/api/training/{other}/mark-failed", json={"why": "x"}), 422)["field"] == "why"
    assert client.post(f"/api/training/{other}/mark-failed").get_json()["job"]["status_reason"] == \
        "marked failed by user: no reason given"


def test_pause_and_resume_refusals(client):
    job_id = submit(client, {})
    assert "only a running job can be paused" in error_of(client.post(f"/api/training/{job_id}/pause"), 409)["message"]
    assert "only a paused, failed or cancelled" in error_of(client.post(f"/api/training/{job_id}/resume"),
                                                            409)["message"]
    set_status(job_id, JobStatus.CANCELLED)
    error = error_of(client.post(f"/api/training/{job_id}/resume"), 409)
    assert "no checkpoint to resume from; force-start it" in error["message"]


def test_pause_asks_the_running_attempt(client, redis):
    job_id = submit(client, {})
    set_status(job_id, JobStatus.RUNNING)
    response = client.post(f"/api/training/{job_id}/pause")
    assert response.status_code == 202 and "is asked to stop" in response.get_json()["message"]
    assert redis.get(f"trainq:control:{job_id}") == f"pause:{auth.first_admin().id}".encode()  # and who asked


def test_recovery_posts_refuse_form_bodies(client):
    job_id = submit(client, {})
    for action in ("force-start", "pause", "resume", "mark-failed"):
        response = client.post(f"/api/training/{job_id}/{action}", data={"reason": "x"})
        assert error_of(response, 415)["code"] == "unsupported_media_type"


def test_stale_flag_and_heartbeat_age(client, ctx):
    job_id = submit(client, {})
    set_status(job_id, JobStatus.RUNNING)
    db.session.execute(text("UPDATE training_jobs SET heartbeat_at = :t WHERE id = :i"),
                       {"t": utcnow() - timedelta(seconds=30), "i": job_id})
    db.session.commit()
    job = client.get(f"/api/training/{job_id}").get_json()
    assert job["stale"] is True and 29 < job["heartbeat_age_seconds"] < 60
    assert client.get("/api/training").get_json()["jobs"][0]["stale"] is True
    health = client.get("/api/training/health").get_json()
    assert health["stale_jobs"] == [job_id] and health["orphaned_jobs"] == [job_id]
    assert health["healthy"] is False and health["total_running_db"] == 1 and health["total_running_rq"] == 0
    assert health["workers"] == 0


def test_training_health_when_all_is_well(client):
    submit(client, {})
    assert client.get("/api/training/health").get_json() == {
        "healthy": True, "orphaned_jobs": [], "stale_jobs": [], "total_running_db": 0, "total_running_rq": 0,
        "workers": 0, "actions_pending": {}}


def test_admin_cleanup_with_max_queue_age(client, redis):
    job_id = submit(client, {})
    db.session.execute(text("UPDATE training_jobs SET queued_at = now() - interval '2 hours' WHERE id = :i"),
                       {"i": job_id})
    db.session.commit()
    lose(redis, job_id)
    assert error_of(client.post("/api/training/admin/cleanup?max_age_minutes=0"), 400)["field"] == "max_age_minutes"
    assert error_of(client.post("/api/training/admin/cleanup?max_age_minutes=x"), 400)["field"] == "max_age_minutes"
    report = client.post("/api/training/admin/cleanup?max_age_minutes=60").get_json()
    assert report["actions"] == {"orphaned": [job_id]} and report["dry_run"] is False
    job = client.get(f"/api/training/{job_id}").get_json()
    assert job["status"] == "failed" and job["status_reason"] == "orphaned: RQ job not found"


def test_young_queued_job_lost_by_redis_is_requeued(client, redis):
    job_id = submit(client, {})
    assert client.post("/api/training/admin/cleanup").get_json()["actions"] == {}
    redis.flushdb()
    assert client.post("/api/training/admin/cleanup").get_json()["actions"] == {}  # within ENQUEUE_GRACE
    db.session.execute(text("UPDATE training_jobs SET queued_at = now() - interval '1 minute' WHERE id = :i"),
                       {"i": job_id})
    db.session.commit()
    report = client.post("/api/training/admin/cleanup").get_json()
    assert report["actions"] == {"requeued": [job_id]}
    assert fetch(job_id, redis).get_status() == "queued"
    assert client.post("/api/training/admin/cleanup").get_json()["actions"] == {}


def test_bad_numbers_and_empty_json_bodies(client):
    assert error_of(client.get("/api/training?limit=%C2%B2"), 400)["field"] == "limit"
    assert error_of(client.post("/api/training/admin/cleanup?max_age_minutes=%C2%B2"), 400)["field"] == \
        "max_age_minutes"
    assert error_of(client.get("/api/training?limit=" + "9" * 5000), 400)["field"] == "limit"
    response = client.post("/api/training/admin/cleanup", data="", content_type="application/json")
    assert response.status_code == 200, response.get_json()


def test_resume_takes_the_newest_checkpoint(client, app, tmp_path):
    from pathlib import Path

    from trainq.checkpoints import checkpoint_name

    job_id = submit(client, {})
    set_status(job_id, JobStatus.RUNNING, JobStatus.PAUSED)
    directory = Path(app.config["CHECKPOINT_DIR"]) / job_id
    directory.mkdir(parents=True)
    old, new = directory / checkpoint_name(1, epoch=5, step=17), directory / checkpoint_name(2, epoch=10)
    for path in (old, new):
        path.write_bytes(b"x")
    db.session.execute(text("UPDATE training_jobs SET resume_from = :p WHERE id = :i"), {"p": str(old), "i": job_id})
    db.session.commit()
    body = client.post(f"/api/training/{job_id}/resume").get_json()
    assert body["job"]["resume_from"] == str(new) and body["job"]["rq_job_id"] == f"{job_id}-attempt-2"
