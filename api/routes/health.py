"""``/api/health``: can this API reach its database and Redis, and how many workers are alive."""

from __future__ import annotations

from flask import Blueprint, jsonify
from redis.exceptions import RedisError
from rq.worker import Worker
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from api.extensions import db, redis_connection

bp = Blueprint("health", __name__, url_prefix="/api")


@bp.get("/health")
def health():
    checks: dict[str, dict] = {}
    try:
        db.session.execute(text("SELECT 1"))
        checks["database"] = {"ok": True}
    except SQLAlchemyError as exc:
        db.session.rollback()
        checks["database"] = {"ok": False, "error": exc.__class__.__name__}
    workers = None
    try:
        conn = redis_connection.get()
        conn.ping()
        workers = Worker.count(connection=conn)
        checks["redis"] = {"ok": True}
    except RedisError as exc:
        checks["redis"] = {"ok": False, "error": exc.__class__.__name__}
    healthy = all(check["ok"] for check in checks.values())
    return jsonify({"healthy": healthy, "checks": checks, "workers": workers}), 200 if healthy else 503
