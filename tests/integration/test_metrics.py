"""/metrics: Prometheus text, computed from PostgreSQL and Redis at scrape time."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from api.queue import host_queue_name
from api.record.status import Actor, JobStatus
from api.record.status_writer import transition
from api.service.reconcile import run_pass
from api.stores import db
from tests.conftest import PLACEHOLDER_HOST
from tests.support import lose, submit


def scrape(client) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics")
    assert response.status_code == 200 and response.content_type.startswith("text/plain")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.get_data(as_text=True))
            for sample in family.samples}


def test_metrics_reflect_jobs_transitions_orphans_and_latencies(client, redis):
    queued, cancelled, lost = (submit(client, {}) for _ in range(3))
    assert client.delete(f"/api/training/{cancelled}").status_code == 200
    transition(lost, JobStatus.RUNNING, reason="test", actor=Actor.WORKER)
    db.session.execute(text("UPDATE training_jobs SET heartbeat_at = now() - interval '1 hour' WHERE id = :i"),
                       {"i": lost})
    db.session.commit()
    lose(redis, lost)
    redis.lrem(f"rq:queue:{host_queue_name(PLACEHOLDER_HOST)}", 0, lost)  # gone from Redis altogether
    assert run_pass().actions["worker_lost"] == [lost]

    m = scrape(client)
    assert m[("trainq_jobs", (("status", "queued"),))] == 1
    assert m[("trainq_jobs", (("status", "cancelled"),))] == 1
    assert m[("trainq_jobs", (("status", "failed"),))] == 1
    assert m[("trainq_jobs", (("status", "running"),))] == 0
    assert m[("trainq_transitions_total", (("actor", "api"), ("from_status", ""), ("to_status", "queued")))] == 3
    assert m[("trainq_transitions_total", (("actor", "reconciler"), ("from_status", "running"),
                                           ("to_status", "failed")))] == 1
    assert m[("trainq_orphans_detected_total", (("reason", "worker lost"),))] == 1
    # The cancel ran a cleanup pass and the test ran one more: two real passes, one cancel.
    assert m[("trainq_reconcile_pass_seconds_count", ())] == 2
    assert m[("trainq_cancel_seconds_count", ())] == 1
    assert m[("trainq_cancel_seconds_bucket", (("le", "+Inf"),))] == 1
    assert m[("trainq_queue_length", ())] == 1  # the queued job (the cancelled one left the queue)
    assert m[("trainq_workers_live", ())] == 0


def test_dry_runs_are_not_reconcile_passes(client):
    client.get("/api/training/health")  # a dry run
    assert scrape(client)[("trainq_reconcile_pass_seconds_count", ())] == 0
