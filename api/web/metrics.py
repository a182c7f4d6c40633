"""Prometheus metrics at ``/metrics``, computed at scrape time from PostgreSQL and Redis.

Nothing is kept in a process's memory, so every gunicorn worker, RQ work horse and host reports the
same numbers: counts come from the tables, and the two histograms (reconcile pass and cancel duration)
keep their buckets in a Redis hash that every process adds to.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from flask import Blueprint, Flask, Response, current_app, g
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from redis.exceptions import RedisError
from sqlalchemy import func, select

from api.record.status import Actor, JobStatus
from api.stores import db, redis_connection
from api.web.auth import require_admin

log = logging.getLogger(__name__)

HISTOGRAMS: dict[str, tuple[str, tuple[float, ...]]] = {
    "trainq_reconcile_pass_seconds": ("Duration of reconcile passes (dry runs excluded)",
                                      (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)),
    "trainq_cancel_seconds": ("Duration of DELETE /api/training/<id>, until RQ confirmed the stop",
                              (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)),
}
DETECTORS = (Actor.RECONCILER, Actor.CLEANUP_SCRIPT, Actor.DASHBOARD_SYNC)


def _key(name: str) -> str:
    return f"trainq:metrics:{name}"


def observe(name: str, seconds: float) -> None:
    """Add one observation to a Redis-backed histogram; never fails the caller."""
    _, buckets = HISTOGRAMS[name]
    try:
        pipe = redis_connection.get().pipeline(transaction=False)
        for bound in buckets:
            if seconds <= bound:
                pipe.hincrby(_key(name), repr(bound), 1)
        pipe.hincrby(_key(name), "+Inf", 1)
        pipe.hincrbyfloat(_key(name), "sum", seconds)
        pipe.execute()
    except RedisError as exc:
        log.debug("metric %s not recorded: %s", name, exc)


class ServiceCollector:
    """Collects everything at scrape time; a dependency that is down leaves its metrics out."""

    def collect(self) -> Iterator[Metric]:
        yield from self._from_postgres()
        yield from self._from_redis()

    def _from_postgres(self) -> Iterator[Metric]:
        from api.record.tables import JobEvent, TrainingJob

        jobs = GaugeMetricFamily("trainq_jobs", "Training jobs by status", labels=["status"])
        counts = dict(db.session.execute(select(TrainingJob.status, func.count()).group_by(TrainingJob.status)).all())
        for status in JobStatus:
            jobs.add_metric([status.value], counts.get(status.value, 0))
        yield jobs

        transitions = CounterMetricFamily("trainq_transitions", "Status transitions (the event log)",
                                          labels=["from_status", "to_status", "actor"])
        rows = db.session.execute(
            select(JobEvent.from_status, JobEvent.to_status, JobEvent.actor, func.count())
            .group_by(JobEvent.from_status, JobEvent.to_status, JobEvent.actor)
        ).all()
        for from_status, to_status, actor, count in rows:
            transitions.add_metric([from_status or "", to_status, actor], count)
        yield transitions

        # A detection is a transition made by a reconciling actor; its reason up to the first ':' or ' (' names it.
        reason = func.split_part(func.split_part(JobEvent.reason, ":", 1), " (", 1)
        orphans = CounterMetricFamily("trainq_orphans_detected", "Jobs whose status the reconciler corrected",
                                      labels=["reason"])
        rows = db.session.execute(
            select(reason, func.count())
            .where(JobEvent.actor.in_([a.value for a in DETECTORS]))
            .group_by(reason)
        ).all()
        for name, count in rows:
            orphans.add_metric([name], count)
        yield orphans
        db.session.commit()

    def _from_redis(self) -> Iterator[Metric]:
        from api.queue import live_workers, queued_count

        conn = redis_connection.get()
        for name, (doc, buckets) in HISTOGRAMS.items():
            raw = {k.decode(): float(v) for k, v in conn.hgetall(_key(name)).items()}
            histogram = HistogramMetricFamily(name, doc)
            histogram.add_metric([], [(repr(b), raw.get(repr(b), 0.0)) for b in buckets] +
                                 [("+Inf", raw.get("+Inf", 0.0))], raw.get("sum", 0.0))
            yield histogram
        queue_length = GaugeMetricFamily("trainq_queue_length", "Jobs waiting in the tasks' RQ queues")
        queue_length.add_metric([], queued_count())
        yield queue_length
        workers = GaugeMetricFamily("trainq_workers_live", "Workers whose heartbeat key exists")
        workers.add_metric([], live_workers())
        yield workers


bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def metrics() -> Response:
    """Admins, and tokens of scope ``metrics`` (``flask --app api tokens create USER --scope metrics``: what
    Prometheus sends as its bearer token) read it."""
    if g.token.scope != "metrics":
        require_admin()
    return Response(generate_latest(current_app.extensions["metrics_registry"]), mimetype=CONTENT_TYPE_LATEST)


def init_app(app: Flask) -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector())  # type: ignore[arg-type]
    app.extensions["metrics_registry"] = registry
    app.register_blueprint(bp)
