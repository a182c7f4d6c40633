"""``/api/training``: submit, list, read and cancel training jobs; a job's events, metric history, logs, checkpoints
and artifacts; the recovery actions (force-start, resume, pause, mark-failed); the admin's reconcile pass
(``admin/cleanup``) and health. Each view is an ``api.web.openapi.operation``: its query and body arrive parsed
by the models of ``api.web.schemas``, and what it returns is shaped by them."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import uuid
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, current_app, g, request, send_file, url_for

from api.record.status import JobStatus
from api.record.tables import TrainingJob
from api.service import attempts, history, jobs, queries, reconcile
from api.web import schemas as s
from api.web.auth import admin_required, current_user
from api.web.openapi import BINARY, operation, with_json_text
from api.web.schemas import ApiError
from trainq.checkpoints import position

bp = Blueprint("training", __name__, url_prefix="/api/training")

def request_now() -> datetime:
    """PostgreSQL's clock, read once a request: ages (``heartbeat_age_seconds``, ``stale``) are measured on the clock
    that wrote the heartbeat, not on this host's."""
    if "database_now" not in g:
        g.database_now = queries.database_now()
    return g.database_now


def render(job: TrainingJob, exclude: frozenset[str] = frozenset()) -> dict[str, Any]:
    data = job.to_dict(now=request_now(), stale_after=current_app.config["HEARTBEAT_TIMEOUT"], exclude=exclude)
    data["owner"] = job.owner.name if job.owner else None
    # a paused job resumes from its checkpoint, which may be behind the step it reached: say where
    data["resumes_at"] = position(job.resume_from) if job.resume_from and job.status == JobStatus.PAUSED else None
    return data


def list_page(query: s.ListQuery) -> dict[str, Any]:
    """One page of ``GET /api/training`` (the monitor's first paint uses it too)."""
    where = queries.JobFilter(status=query.status, task=query.task or None,
                           id_prefix=query.id_prefix.lower() if query.id_prefix else None, owner=query.owner or None,
                           name=query.name or None, since=query.since, until=query.until, sort=query.sort,
                           sweep=query.sweep)
    page = queries.list_jobs(where, query.limit, query.cursor)
    runs = attempts.for_list([job.id for job in page.jobs])
    return {"jobs": [{**render(job, exclude=queries.LIST_LEAVES_OUT), **runs[job.id]} for job in page.jobs],
            "next_cursor": page.next_cursor}


@bp.post("")
@operation("Submit a training job", {201: s.Submitted, 202: s.Submitted}, body=s.SubmitRequest, errors=(429,))
def submit_job(body: s.SubmitRequest):
    task, params = body.task_and_params()
    try:
        result = jobs.submit(task, params, body.name.strip() if body.name else None, body.max_attempts,
                             owner=current_user(), cloned_from=str(body.cloned_from) if body.cloned_from else None,
                             resources=body.resources.model_dump(exclude_none=True) if body.resources else None,
                             fail_on_nan=body.fail_on_nan)
    except jobs.CloneSourceNotFound as exc:
        raise ApiError(404, "job_not_found", str(exc), "cloned_from") from None
    job = render(result.job)
    if result.enqueued:
        answer, status = {"job": job, "enqueued": True, "message": "Job queued"}, 201
    else:
        message = "Job saved as queued but Redis is unreachable; it will be enqueued when Redis is back"
        answer, status = {"job": job, "enqueued": False, "message": message}, 202
    if result.warning:
        answer["warning"] = result.warning
    return answer, status, {"Location": url_for("training.get_job", job_id=job["id"])}



@bp.get("")
@operation("List jobs, newest first, a page at a time", {200: s.JobList}, query=s.ListQuery, conditional=True)
def list_jobs(query: s.ListQuery):
    return list_page(query)


@bp.get("/health")
@operation("What the reconciler would fix now, and counts", {200: s.TrainingHealth})
def training_health():
    return reconcile.health()


@bp.post("/admin/cleanup")
@admin_required
@operation("Run a reconcile pass now (admins)", {200: s.CleanupReport}, query=s.CleanupQuery)
def admin_cleanup(query: s.CleanupQuery):
    return reconcile.run_pass_now(query.max_age_minutes)


@bp.get("/<uuid:job_id>")
@operation("A job, with the last of its history and the actions its status allows", {200: s.JobDetail},
           conditional=True)
def get_job(job_id: uuid.UUID):
    tag = history.version_tag(job_id, current_user())  # the row's version: a poll finding nothing new reads no history
    if request.if_none_match.contains_weak(tag):
        response = Response(status=304)
    else:  # the recent history as PostgreSQL wrote it (history.job_and_recent)
        job, recent, length = history.job_and_recent(job_id)
        response = with_json_text(s.JobDetail, {**detail_fields(job, length), "history": []}, history=recent)
    response.set_etag(tag, weak=True)
    response.headers["Cache-Control"] = "no-cache"
    return response


def detail(job_id: uuid.UUID) -> dict[str, Any]:
    """A job as ``GET /api/training/<id>`` shows it (the job page's first paint): its actions, and only the last
    ``INLINE_POINTS`` reports of its history."""
    job, recent, length = history.job_and_recent(job_id)
    return {**detail_fields(job, length), "history": json.loads(recent)}


def detail_fields(job: TrainingJob, length: int) -> dict[str, Any]:
    """The read of a job but its history's entries."""
    return {**render(job, exclude=queries.LIST_LEAVES_OUT),
            "actions": [a.value for a in jobs.allowed_actions(job, current_user())],
            "history_length": length, "history_truncated": history.truncated(length),
            **attempts.summary(job.id, request_now())}


@bp.get("/<uuid:job_id>/events")
@operation("A job's status transitions, oldest first", {200: s.Events}, conditional=True)
def job_events(job_id: uuid.UUID):
    return {"events": [event.to_dict() for event in queries.list_events(job_id)]}


@bp.get("/<uuid:job_id>/history")
@operation("A job's metric history, as JSON or a CSV download", {200: s.History}, query=s.HistoryQuery,
           media=("text/csv",))
def job_history(job_id: uuid.UUID, query: s.HistoryQuery):
    job, columns, entries = queries.metric_history(job_id)
    total = len(entries)
    if query.points is not None:
        entries = history.downsample(entries, query.points)
    elif query.offset or query.limit is not None:
        entries = entries[query.offset:query.offset + query.limit if query.limit is not None else None]
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", job.name).strip("-")[:60] or "job"
    download = {"Content-Disposition": f'attachment; filename="{safe}-{str(job.id)[:8]}-history.{query.format}"'}
    if query.format == "json":
        return {"job_id": str(job.id), "name": job.name, "task": job.task, "columns": columns,
                "history": entries, "history_length": total}, 200, download
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(entries)
    return Response(out.getvalue(), mimetype="text/csv", headers=download)


@bp.get("/<uuid:job_id>/logs")
@operation("A job's log lines after a line number", {200: s.Logs}, query=s.LogsQuery)
def job_logs(job_id: uuid.UUID, query: s.LogsQuery):
    return queries.logs(job_id, query.after, query.limit)


@bp.get("/<uuid:job_id>/checkpoints")
@operation("A job's checkpoints", {200: s.Checkpoints}, conditional=True)
def job_checkpoints(job_id: uuid.UUID):
    return {"checkpoints": queries.checkpoints(job_id)}


@bp.get("/<uuid:job_id>/artifacts")
@operation("The files a job's task saved", {200: s.Artifacts}, conditional=True)
def job_artifacts(job_id: uuid.UUID):
    return {"artifacts": [
        {**artifact.to_dict(), "url": url_for("training.job_artifact", job_id=job_id, name=artifact.name)}
        for artifact in queries.artifacts(job_id)]}


@bp.get("/<uuid:job_id>/artifacts/<name>")
@operation("Download one artifact", {200: BINARY})
def job_artifact(job_id: uuid.UUID, name: str):
    artifact, path = queries.artifact_file(job_id, name)
    response = send_file(path, as_attachment=True, download_name=artifact.name, mimetype="application/octet-stream",
                         etag=artifact.sha256, max_age=0)
    response.headers["Digest"] = f"sha-256={base64.b64encode(bytes.fromhex(artifact.sha256)).decode()}"
    return response


def _restarted(result: jobs.RestartResult) -> dict[str, Any]:
    return {"success": True, "job_id": str(result.job.id), "previous_status": result.previous_status,
            "new_status": result.job.status, "queue_position": result.queue_position,
            "message": result.message, "job": render(result.job)}


_ACTION = {"body": s.EmptyRequest, "body_optional": True, "errors": (409,)}
_RESTART = {**_ACTION, "errors": (409, 429)}  # a restart counts against the owner's queued jobs


@bp.post("/<uuid:job_id>/force-start")
@operation("Start a job again now, as a new attempt", {200: s.Restarted}, **_RESTART)
def force_start(job_id: uuid.UUID, body: s.EmptyRequest):
    return _restarted(jobs.force_start(job_id, current_user()))


@bp.post("/<uuid:job_id>/resume")
@operation("Resume a paused (or failed) job from its newest checkpoint", {200: s.Restarted}, **_RESTART)
def resume(job_id: uuid.UUID, body: s.EmptyRequest):
    return _restarted(jobs.resume(job_id, current_user()))


@bp.post("/<uuid:job_id>/pause")
@operation("Ask a running job to checkpoint and stop", {202: s.ActionResult}, **_ACTION)
def pause(job_id: uuid.UUID, body: s.EmptyRequest):
    job = jobs.pause(job_id, current_user())
    message = (f"Pause requested: job {job.id}'s task is asked to stop; it is paused at its newest checkpoint "
               "(with none, it ends cancelled)")
    return {"success": True, "message": message, "job": render(job)}, 202


@bp.post("/<uuid:job_id>/mark-failed")
@operation("Mark a job failed, with a reason", {200: s.ActionResult}, **{**_ACTION, "body": s.MarkFailedRequest})
def mark_failed(job_id: uuid.UUID, body: s.MarkFailedRequest):
    job = jobs.mark_failed(job_id, body.reason.strip(), current_user())
    return {"success": True, "message": f"Job {job.id} marked failed", "job": render(job)}


@bp.delete("/<uuid:job_id>")
@operation("Cancel a job: its training stops", {200: s.Cancelled}, errors=(409,))
def cancel_job(job_id: uuid.UUID):
    result = jobs.cancel(job_id, current_user())
    message = (f"Job {result.job.id} was already cancelled" if result.already_cancelled
               else f"Job {result.job.id} cancelled successfully")
    return {"success": True, "message": message, "rq_cancelled": result.rq_cancelled,
            "job": render(result.job), "cleanup": result.cleanup}
