"""One JSON error shape for every 4xx/5xx: ``{"error": {"code", "message", "field"?}}``."""

from __future__ import annotations

import logging
import re
from typing import Any

from flask import Flask, jsonify, request
from redis.exceptions import RedisError
from sqlalchemy.exc import InterfaceError, OperationalError, PendingRollbackError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from api.record.status import JobNotFound
from api.service.catalogue import TaskRejected, WorkersStarting
from api.service.jobs import JobConflict
from api.service.limits import LimitExceeded
from api.service.queries import ArtifactNotFound, BadCursor
from api.service.sweeps import SweepConflict, SweepNotFound
from api.service.users import Forbidden
from api.web.auth import Unauthorized
from api.web.schemas import ApiError, Error, shape
from api.web.throttle import TooManyFailures

log = logging.getLogger(__name__)

_JOB_PATH = re.compile(r"/api/training/([^/]+)")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def error_response(status: int, code: str, message: str, field: str | None = None, **extra: Any):
    body: dict[str, Any] = {"code": code, "message": message}
    if field:
        body["field"] = field
    body.update(extra)
    return jsonify(shape(Error, {"error": body})), status  # the shape /api/openapi.json documents


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return error_response(exc.status, exc.code, exc.message, exc.field)

    @app.errorhandler(Unauthorized)
    def _unauthorized(exc: Unauthorized):
        response, status = error_response(401, "unauthorized", str(exc))
        response.headers["WWW-Authenticate"] = 'Bearer realm="trainq"'
        return response, status

    @app.errorhandler(TooManyFailures)
    def _too_many_failures(exc: TooManyFailures):
        response, status = error_response(429, "too_many_failures", str(exc))
        response.headers["Retry-After"] = str(exc.retry_after)
        return response, status

    @app.errorhandler(Forbidden)
    def _forbidden(exc: Forbidden):
        return error_response(403, exc.code, exc.message)

    @app.errorhandler(LimitExceeded)
    def _limit(exc: LimitExceeded):
        return error_response(exc.status, exc.code, exc.message, exc.field)

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(exc: RequestEntityTooLarge):
        limit = app.config["MAX_CONTENT_LENGTH"]
        return error_response(413, "request_too_large",
                              f"the request body is over the limit of {limit} bytes (MAX_CONTENT_LENGTH)")

    @app.errorhandler(TaskRejected)
    def _task_rejected(exc: TaskRejected):
        return error_response(422, exc.code, exc.message, exc.field)

    @app.errorhandler(WorkersStarting)
    def _workers_starting(exc: WorkersStarting):
        response, status = error_response(503, "workers_starting", str(exc), exc.field)
        response.headers["Retry-After"] = str(exc.retry_after)
        return response, status

    @app.errorhandler(JobNotFound)
    def _not_found(exc: JobNotFound):
        return error_response(404, "job_not_found", f"no training job with id {exc}")

    @app.errorhandler(ArtifactNotFound)
    def _no_artifact(exc: ArtifactNotFound):
        return error_response(404, "artifact_not_found", str(exc), "name")

    @app.errorhandler(SweepNotFound)
    def _no_sweep(exc: SweepNotFound):
        return error_response(404, "sweep_not_found", f"no sweep with id {exc}")

    @app.errorhandler(SweepConflict)
    def _sweep_conflict(exc: SweepConflict):
        return error_response(409, "conflict", exc.message, sweep_state=exc.sweep.state)

    @app.errorhandler(JobConflict)
    def _conflict(exc: JobConflict):
        return error_response(409, "conflict", exc.message, job_status=exc.job.status)

    @app.errorhandler(BadCursor)
    def _bad_cursor(exc: BadCursor):
        return error_response(400, "invalid_cursor", str(exc), "cursor")

    @app.errorhandler(RedisError)
    def _redis_down(exc: RedisError):
        log.warning("Redis unavailable: %s", exc)
        return error_response(503, "redis_unavailable", "Redis is unreachable; try again shortly")

    def _db_down(exc: Exception):
        log.warning("database unavailable: %s", getattr(exc, "orig", None) or exc)
        return error_response(503, "database_unavailable", "PostgreSQL is unreachable; try again shortly")

    for db_failure in (OperationalError, InterfaceError, PendingRollbackError, PoolTimeout):
        app.register_error_handler(db_failure, _db_down)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):
        job_path = _JOB_PATH.match(request.path)
        if exc.code == 404 and job_path and not _UUID.fullmatch(job_path.group(1)):  # no route takes a non-uuid id
            return error_response(404, "job_not_found", f"no training job with id {job_path.group(1)[:100]}")
        code = (exc.name or "error").lower().replace(" ", "_")
        response, status = error_response(exc.code or 500, code, exc.description or exc.name)
        if getattr(exc, "valid_methods", None):  # a 405 says what is allowed
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response, status

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error")
        return error_response(500, "internal_error", "internal error; the server log has the details")
