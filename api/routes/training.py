"""``/api/training``: submit, list, read, cancel training jobs."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request, send_file, url_for

from api import jobs
from api.auth import admin_required
from api.errors import ApiError
from api.models import TrainingJob
from api.status import JobStatus, utcnow
from api.tasks import TaskRejected

bp = Blueprint("training", __name__, url_prefix="/api/training")

SUBMIT_FIELDS = {"task", "params", "name", "max_attempts", "config", "cloned_from"}
LEGACY_TASK = "mlp"  # {"config": {...}} is kept as an alias for {"task": "mlp", "params": {...}}
_DIGITS = re.compile(r"[0-9]{1,10}")  # not str.isdigit(): that accepts "²", which int() rejects
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
LIST_PARAMS = {"status", "limit", "cursor", "task", "id_prefix", "owner", "name", "since", "until", "sort"}
_METRIC_NAME = re.compile(r"-?[A-Za-z0-9_.:/][A-Za-z0-9_.:/-]{0,99}")  # -name: highest first
_ID_DASHES = (8, 13, 18, 23)  # where a job id's text has its dashes


def render(job: TrainingJob, exclude: frozenset[str] = frozenset()) -> dict[str, Any]:
    data = job.to_dict(now=utcnow(), stale_after=current_app.config["HEARTBEAT_TIMEOUT"], exclude=exclude)
    data["owner"] = job.owner.name if job.owner else None
    return data


def render_with_actions(job: TrainingJob) -> dict[str, Any]:
    """One job as ``GET /api/training/<id>`` shows it: with the actions its status allows now."""
    return {**render(job), "actions": [action.value for action in jobs.allowed_actions(job)]}


def list_page(args: Mapping[str, str]) -> dict[str, Any]:
    """One page of ``GET /api/training``, from its query parameters (the monitor's first paint uses it too)."""
    for name in sorted(set(args) - LIST_PARAMS):
        raise ApiError(400, "unknown_parameter",
                       f"{name}: unknown parameter (allowed: {', '.join(sorted(LIST_PARAMS))})", name)
    _check_query(args)
    sort = args.get("sort") or None
    if sort is not None and not _METRIC_NAME.fullmatch(sort):
        raise ApiError(400, "invalid_parameter", "sort: a metric's name (lowest first), or -name (highest first)",
                       "sort")
    where = jobs.JobFilter(status=_status(args.get("status")), task=args.get("task") or None,
                           id_prefix=_id_prefix(args.get("id_prefix")), owner=args.get("owner") or None,
                           name=_text(args.get("name"), "name"), since=_when(args.get("since"), "since"),
                           until=_when(args.get("until"), "until", end_of_day=True), sort=sort)
    page = jobs.list_jobs(where, _number(args.get("limit"), "limit", 50, 1, jobs.MAX_PAGE), args.get("cursor"))
    return {"jobs": [render(job, exclude=jobs.LIST_LEAVES_OUT) for job in page.jobs], "next_cursor": page.next_cursor}


def _text(raw: str | None, name: str) -> str | None:
    if raw and len(raw) > 200:
        raise ApiError(400, "invalid_parameter", f"{name}: at most 200 characters", name)
    return raw or None


def _when(raw: str | None, name: str, end_of_day: bool = False) -> datetime | None:
    """An ISO date or date-time (UTC unless it says); a plain date ``until`` takes in that whole day."""
    if not raw:
        return None
    try:
        if _DATE.fullmatch(raw):
            day = datetime.fromisoformat(raw).replace(tzinfo=UTC)
            return day + timedelta(days=1) if end_of_day else day
        when = datetime.fromisoformat(raw)  # Python 3.11 reads a trailing Z too
    except (ValueError, OverflowError):  # OverflowError: the day after 9999-12-31
        raise ApiError(400, "invalid_parameter", f"{name}: must be an ISO date (2026-11-26) or date-time "
                       "(2026-11-26T08:00:00Z)", name) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _id_prefix(raw: str | None) -> str | None:
    if not raw:
        return None
    prefix = raw.lower()
    if len(prefix) > 36 or not all((c == "-") if i in _ID_DASHES else c in "0123456789abcdef"
                                   for i, c in enumerate(prefix)):
        raise ApiError(400, "invalid_parameter", "id_prefix: must be the start of a job id (hexadecimal, with "
                       "dashes where the id has them)", "id_prefix")
    return prefix


def _without_ages(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_ages(v) for k, v in value.items() if k != "heartbeat_age_seconds"}
    if isinstance(value, list):
        return [_without_ages(v) for v in value]
    return value


def conditional_json(payload: dict[str, Any]) -> Response:
    """JSON with a weak ETag, so a poll that finds nothing changed gets an empty 304 (If-None-Match).
    The tag leaves out ``heartbeat_age_seconds``, which grows every instant: a client counts it on from
    its last full answer, and ``stale`` (in the tag) says when it matters."""
    canonical = json.dumps(_without_ages(payload), sort_keys=True, separators=(",", ":"), default=str)
    response = jsonify(payload)
    response.set_etag(hashlib.blake2b(canonical.encode(), digest_size=12).hexdigest(), weak=True)
    response.headers["Cache-Control"] = "no-cache"
    return response.make_conditional(request)


def json_body(optional: bool = False) -> dict[str, Any]:
    """The request's JSON object; state-changing calls accept nothing else (415), so no HTML form can.
    With ``optional``, an empty body without a content type is an empty object."""
    if optional and not request.get_data(cache=True) and (not request.content_type or request.is_json):
        return {}
    if not request.is_json:
        raise ApiError(415, "unsupported_media_type", "send the body as JSON with Content-Type: application/json")
    try:
        data = json.loads(request.get_data(cache=True), parse_constant=_no_constant)
    except RecursionError:
        raise ApiError(400, "malformed_json", "the body is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ApiError(400, "malformed_json", f"the body is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_body", "the body must be a JSON object")
    _check_text(data, "")
    return data


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_BAD_TEXT = re.compile("[\x00\ud800-\udfff]")  # PostgreSQL stores neither a NUL nor a lone UTF-16 surrogate


def _check_text(value: Any, path: str, depth: int = 0) -> None:
    """No string in the body (keys included) may hold a NUL or a lone surrogate: a 400 naming where."""
    if depth > 64:
        raise ApiError(400, "malformed_json", "the body is nested too deeply (over 64 levels)", path or None)
    if isinstance(value, str):
        if _BAD_TEXT.search(value):
            raise ApiError(400, "invalid_text", f"{path or 'body'}: a string holds a NUL character or a lone "
                           "UTF-16 surrogate", path or None)
    elif isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            _check_text(key, where, depth + 1)
            _check_text(item, where, depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_text(item, f"{path}.{index}" if path else str(index), depth + 1)


def _check_query(args: Mapping[str, str]) -> None:
    for name, value in args.items():
        if _BAD_TEXT.search(value) or any(ch < " " for ch in value):
            raise ApiError(400, "invalid_parameter", f"{name}: holds a control character", name)


@bp.post("")
def submit_job():
    body = json_body()
    for name in sorted(set(body) - SUBMIT_FIELDS):
        raise ApiError(422, "unknown_field",
                       f"{name}: unknown field (allowed: task, params, name, max_attempts, cloned_from)", name)
    name = body.get("name")
    if name is not None and (not isinstance(name, str) or not 1 <= len(name.strip()) <= 200):
        raise ApiError(422, "invalid_field", "name: must be a string of 1 to 200 characters", "name")
    if name is not None and _CONTROL.search(name):
        raise ApiError(422, "invalid_field", "name: no control characters (tabs, newlines, escapes)", "name")
    if "config" in body:
        if "task" in body or "params" in body:
            raise ApiError(422, "invalid_field", "config: the old form of params; send task and params, not config",
                           "config")
        task, params = LEGACY_TASK, body["config"]
    elif "task" not in body:
        raise ApiError(422, "missing_field", "task: required (GET /api/tasks lists the tasks)", "task")
    else:
        task, params = body["task"], body.get("params")
    max_attempts = body.get("max_attempts")
    if max_attempts is not None and (type(max_attempts) is not int or not 1 <= max_attempts <= 100):
        raise ApiError(422, "invalid_field", "max_attempts: must be an integer 1..100", "max_attempts")
    cloned_from = body.get("cloned_from")
    if cloned_from is not None and not isinstance(cloned_from, str):
        raise ApiError(422, "invalid_field", "cloned_from: must be a job id (a string)", "cloned_from")
    try:
        result = jobs.submit(task, params, name.strip() if name else None, max_attempts, cloned_from=cloned_from)
    except jobs.CloneSourceNotFound as exc:
        raise ApiError(422, "invalid_field", str(exc), "cloned_from") from None
    except TaskRejected as exc:
        if "config" in body and exc.field.startswith("params"):  # answer in the words of the old form
            raise TaskRejected(exc.code, "config" + exc.message[len("params"):], "config" + exc.field[len("params"):]) \
                from None
        raise
    job = render(result.job)
    if result.enqueued:
        body, status = {"job": job, "enqueued": True, "message": "Job queued"}, 201
    else:
        message = "Job saved as queued but Redis is unreachable; it will be enqueued when Redis is back"
        body, status = {"job": job, "enqueued": False, "message": message}, 202
    if result.warning:
        body["warning"] = result.warning
    response = jsonify(body)
    response.status_code = status
    response.headers["Location"] = url_for("training.get_job", job_id=job["id"])
    return response


def _number(raw: str | None, name: str, default: int, lo: int, hi: int) -> int:
    if raw is None:
        return default
    if not _DIGITS.fullmatch(raw) or not lo <= int(raw) <= hi:
        raise ApiError(400, "invalid_parameter", f"{name}: must be an integer {lo}..{hi}", name)
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
    return conditional_json(list_page(request.args))


@bp.get("/health")
def training_health():
    return jsonify(jobs.training_health())


@bp.post("/admin/cleanup")
@admin_required
def admin_cleanup():
    json_body(optional=True)
    max_age = request.args.get("max_age_minutes")
    return jsonify(jobs.run_cleanup(_number(max_age, "max_age_minutes", 0, 1, 525_600) if max_age else None))


@bp.get("/<job_id>")
def get_job(job_id: str):
    return conditional_json(render_with_actions(jobs.get_job(job_id)))


@bp.get("/<job_id>/events")
def job_events(job_id: str):
    return conditional_json({"events": [event.to_dict() for event in jobs.list_events(job_id)]})


@bp.get("/<job_id>/history")
def job_history(job_id: str):
    """The job's metric history: JSON (default) or, with ``format=csv``, a CSV download, one row per report."""
    fmt = request.args.get("format", "json")
    if fmt not in ("json", "csv"):
        raise ApiError(400, "invalid_parameter", "format: must be json or csv", "format")
    job, columns, entries = jobs.metric_history(job_id)
    if fmt == "json":
        response = jsonify({"job_id": str(job.id), "name": job.name, "task": job.task, "columns": columns,
                            "history": entries})
    else:
        out = io.StringIO()
        writer = csv.DictWriter(out, columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(entries)
        response = Response(out.getvalue(), mimetype="text/csv")
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", job.name).strip("-")[:60] or "job"
    response.headers["Content-Disposition"] = f'attachment; filename="{safe}-{str(job.id)[:8]}-history.{fmt}"'
    return response


@bp.get("/<job_id>/logs")
def job_logs(job_id: str):
    after = _number(request.args.get("after"), "after", 0, 0, 10**9)
    limit = _number(request.args.get("limit"), "limit", 500, 1, 5000)
    return jsonify(jobs.logs(job_id, after, limit))


@bp.get("/<job_id>/checkpoints")
def job_checkpoints(job_id: str):
    return conditional_json({"checkpoints": jobs.checkpoints(job_id)})


@bp.get("/<job_id>/artifacts")
def job_artifacts(job_id: str):
    return conditional_json({"artifacts": [
        {**artifact.to_dict(), "url": url_for("training.job_artifact", job_id=job_id, name=artifact.name)}
        for artifact in jobs.artifacts(job_id)]})


@bp.get("/<job_id>/artifacts/<name>")
def job_artifact(job_id: str, name: str):
    artifact, path = jobs.artifact_file(job_id, name)
    response = send_file(path, as_attachment=True, download_name=artifact.name, mimetype="application/octet-stream",
                         etag=artifact.sha256, max_age=0)
    response.headers["Digest"] = f"sha-256={base64.b64encode(bytes.fromhex(artifact.sha256)).decode()}"
    return response


def _restarted(result: jobs.RestartResult):
    return jsonify({"success": True, "job_id": str(result.job.id), "previous_status": result.previous_status,
                    "new_status": result.job.status, "queue_position": result.queue_position,
                    "message": result.message, "job": render(result.job)})


@bp.post("/<job_id>/force-start")
def force_start(job_id: str):
    json_body(optional=True)
    return _restarted(jobs.force_start(job_id))


@bp.post("/<job_id>/resume")
def resume(job_id: str):
    json_body(optional=True)
    return _restarted(jobs.resume(job_id))


@bp.post("/<job_id>/pause")
def pause(job_id: str):
    json_body(optional=True)
    job = jobs.pause(job_id)
    message = (f"Pause requested: job {job.id}'s task is asked to stop; it is paused at its newest checkpoint "
               "(with none, it ends cancelled)")
    return jsonify({"success": True, "message": message, "job": render(job)}), 202


@bp.post("/<job_id>/mark-failed")
def mark_failed(job_id: str):
    body = json_body(optional=True)
    for name in sorted(set(body) - {"reason"}):
        raise ApiError(422, "unknown_field", f"{name}: unknown field (allowed: reason)", name)
    reason = body.get("reason", "no reason given")
    if not isinstance(reason, str) or not 1 <= len(reason.strip()) <= 500:
        raise ApiError(422, "invalid_field", "reason: must be a string of 1 to 500 characters", "reason")
    job = jobs.mark_failed(job_id, reason.strip())
    return jsonify({"success": True, "message": f"Job {job.id} marked failed", "job": render(job)})


@bp.delete("/<job_id>")
def cancel_job(job_id: str):
    result = jobs.cancel(job_id)
    message = (f"Job {result.job.id} was already cancelled" if result.already_cancelled
               else f"Job {result.job.id} cancelled successfully")
    return jsonify({"success": True, "message": message, "rq_cancelled": result.rq_cancelled,
                    "job": render(result.job), "cleanup": result.cleanup})
