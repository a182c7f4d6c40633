"""``/api/health``: can this API reach its database and Redis, how many workers are alive, and which take no jobs
now, and why (their storage is full or unwritable). Without a user it answers only ``{"healthy": ...}`` (a
liveness probe needs no token); the details need one."""

from __future__ import annotations

from flask import Blueprint, g

from api.queue import live_workers, paused_workers
from api.stores import unreachable
from api.web import schemas
from api.web.openapi import operation

bp = Blueprint("health", __name__, url_prefix="/api")


@bp.get("/health")
@operation("Whether the API reaches PostgreSQL and Redis (details with a credential)",
           {200: schemas.Health, 503: schemas.Health}, public=True)
def health():
    errors = unreachable()
    healthy = not errors
    if g.get("user") is None:
        return {"healthy": healthy}, 200 if healthy else 503
    checks = {name: {"ok": False, "error": errors[name].__class__.__name__} if name in errors else {"ok": True}
              for name in ("database", "redis")}
    workers = live_workers() if "redis" not in errors else None
    paused = paused_workers() if "redis" not in errors else None
    return {"healthy": healthy, "checks": checks, "workers": workers, "workers_paused": paused}, \
        200 if healthy else 503
