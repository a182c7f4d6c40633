"""Two timings every process adds to (reconcile pass, cancel), kept as histogram buckets in a Redis hash so
that every gunicorn worker, reconciler and host adds to the same numbers; ``/metrics`` reads them."""

from __future__ import annotations

import logging

from redis.exceptions import RedisError

from api.stores import redis_connection

log = logging.getLogger(__name__)

HISTOGRAMS: dict[str, tuple[str, tuple[float, ...]]] = {
    "trainq_reconcile_pass_seconds": ("Duration of reconcile passes (dry runs excluded)",
                                      (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)),
    "trainq_cancel_seconds": ("Duration of DELETE /api/training/<id>, until RQ confirmed the stop",
                              (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)),
}
def key(name: str) -> str:
    return f"trainq:metrics:{name}"


def observe(name: str, seconds: float) -> None:
    """Add one observation to a Redis-backed histogram; never fails the caller."""
    _, buckets = HISTOGRAMS[name]
    try:
        pipe = redis_connection.get().pipeline(transaction=False)
        for bound in buckets:
            if seconds <= bound:
                pipe.hincrby(key(name), repr(bound), 1)
        pipe.hincrby(key(name), "+Inf", 1)
        pipe.hincrbyfloat(key(name), "sum", seconds)
        pipe.execute()
    except RedisError as exc:
        log.debug("metric %s not recorded: %s", name, exc)
