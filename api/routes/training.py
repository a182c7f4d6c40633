"""``/api/training``: submit, list, read, cancel training jobs."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request, url_for
from werkzeug.exceptions import BadRequest

from api import jobs
from api.errors import ApiError
from api.status import JobStatus

bp = Blueprint("training", __name__, url_prefix="/api/training")

SUBMIT_FIELDS = {"name", "config"}
LIST_PARAMS = {"status", "limit", "cursor"}


def json_body() -> dict[str, Any]:
    """The request's JSON object; state-changing calls accept nothing else (415), so no HTML form can."""
    if not request.is_json:
        raise ApiError(415, "unsupported_media_type", "send the body as JSON with Content-Type: application/json")
    try:
        data = request.get_json()
    except BadRequest:
        raise ApiError(400, "malformed_json", "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_body", "the body must be a JSON object")
    return data


@bp.post("")
def submit_job():
    body = json_body()
    for name in sorted(set(body) - SUBMIT_FIELDS):
        raise ApiError(422, "unknown_field", f"{name}: unknown field (allowed: config, name)", name)
    name = body.get("name")
    if name is not None and (not isinstance(name, str) or not 1 <= len(name.strip()) <= 200):
        raise ApiError(422, "invalid_field", "name: must be a string of 1 to 200 characters", "name")
    if "config" not in body:
        raise ApiError(422, "missing_field", "config: required (an object of training settings)", "config")
    result = jobs.submit(body["config"], name.strip() if name else None)
    job = result.job.to_dict()
    if result.enqueued:
        body, status = {"job": job, "enqueued": True, "message": "Job queued"}, 201
    else:
        message = "Job saved as queued but Redis is unreachable; it will be enqueued when Redis is back"
        body, status = {"job": job, "enqueued": False, "message": message}, 202
    response = jsonify(body)
    response.status_code = status
    response.headers["Location"] = url_for("training.get_job", job_id=job["id"])
    return response


def _limit(raw: str | None) -> int:
    if raw is None:
        return 50
    if not raw.isdigit() or not 1 <= int(raw) <= jobs.MAX_PAGE:
        raise ApiError(400, "invalid_parameter", f"limit: must be an integer 1..{jobs.MAX_PAGE}", "limit")
    return int(raw)


def _status(raw: str | None) -> JobStatus | None:
    if raw is None:
        return None
    try:
        return JobStatus(raw)
    except ValueError:
        allowed = ", ".join(s.value for s in JobStatus)
        raise ApiError(400, "invalid_parameter", f"status: must be one of {allowed}", "status") from None


@bp.get("")
def list_jobs():
    for name in sorted(set(request.args) - LIST_PARAMS):
        raise ApiError(400, "unknown_parameter", f"{name}: unknown parameter (allowed: cursor, limit, status)", name)
    page = jobs.list_jobs(_status(request.args.get("status")), _limit(request.args.get("limit")),
                          request.args.get("cursor"))
    return jsonify({"jobs": [job.to_dict() for job in page.jobs], "next_cursor": page.next_cursor})


@bp.get("/<job_id>")
def get_job(job_id: str):
    return jsonify(jobs.get_job(job_id).to_dict())


@bp.get("/<job_id>/events")
def job_events(job_id: str):
    return jsonify({"events": [event.to_dict() for event in jobs.list_events(job_id)]})


@bp.delete("/<job_id>")
def cancel_job(job_id: str):
    result = jobs.cancel(job_id)
    message = (f"Job {result.job.id} was already cancelled" if result.already_cancelled
               else f"Job {result.job.id} cancelled successfully")
    return jsonify({"success": True, "message": message, "rq_cancelled": result.rq_cancelled,
                    "job": result.job.to_dict(), "cleanup": result.cleanup})
