"""Redis or PostgreSQL unreachable: clear 503s, and a submitted job is never lost."""

from __future__ import annotations

from datetime import timedelta

from api.dev.servers import RedisServer, free_port
from api.queue import fetch
from api.record.status import utcnow
from api.record.tables import TrainingJob
from api.service.reconcile import cleanup_orphaned_training_jobs
from api.stores import db
from tests.conftest import make_app


def test_submit_with_redis_down_is_202_and_reconciler_enqueues_later(settings, ctx, tmp_path):
    server = RedisServer(tmp_path / "redis")  # not started yet: Redis is down
    down = make_app(settings, REDIS_URL=server.url, REDIS_TIMEOUT=0.5)
    with down.app_context():
        response = down.test_client().post("/api/training", json={"name": "survivor", "config": {"epochs": 2}})
        assert response.status_code == 202, response.get_json()
        body = response.get_json()
        assert body["enqueued"] is False and "Redis is unreachable" in body["message"]
        job_id = body["job"]["id"]
        assert body["job"]["status"] == "queued" and body["job"]["rq_job_id"] == job_id  # RQ id, not yet in RQ
        assert body["job"]["status_reason"].startswith("waiting for Redis")
        assert response.headers["Location"].endswith(job_id)

        health = down.test_client().get("/api/health")
        assert health.status_code == 503 and health.get_json()["checks"]["redis"]["ok"] is False

        server.start()  # Redis comes back
        try:
            assert cleanup_orphaned_training_jobs(now=utcnow()).actions == {}  # within the grace: left alone
            report = cleanup_orphaned_training_jobs(now=utcnow() + timedelta(seconds=10))
            assert report.actions["requeued"] == [job_id]
            assert cleanup_orphaned_training_jobs(now=utcnow() + timedelta(seconds=10)).actions == {}
            job = db.session.get(TrainingJob, job_id)
            assert job.status == "queued" and job.rq_job_id == job_id
            assert fetch(job_id, down.extensions["redis"]).args == [job_id, 1]
        finally:
            server.stop()


def test_database_down_answers_503_json(settings):
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    down = make_app(settings, DATABASE_URL=url)
    client = down.test_client()
    for response in (client.get("/api/training"), client.post("/api/training", json={"config": {}}),
                     client.get("/api/health")):
        assert response.status_code == 503, response.get_data(as_text=True)
        assert response.get_json()["error" if "error" in response.get_json() else "checks"]
    assert client.get("/api/training").get_json()["error"]["code"] == "database_unavailable"
