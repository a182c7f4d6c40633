"""The web monitor: ``/`` (jobs) and ``/jobs/<id>`` (one job). Server-rendered shells with the first data
inlined; the pages' JavaScript then polls the same JSON API a script would, and holds no status logic.
The submit form is generated in the browser from the params JSON Schema each task's workers published
(``GET /api/tasks``): the page knows no task's fields itself."""

from __future__ import annotations

from flask import Blueprint, render_template, request

from api import jobs, schemas, tasks
from api.openapi import check_query
from api.routes.training import list_page, render_with_actions
from api.schemas import ApiError
from api.status import JobNotFound, JobStatus

bp = Blueprint("pages", __name__)


@bp.get("/")
def jobs_page():
    args = {key: request.args[key] for key in ("status", "task") if request.args.get(key)}
    try:
        check_query(args)
        initial, error = list_page(schemas.parse(schemas.ListQuery, args, query=True)), None
    except ApiError as exc:  # a hand-edited URL: show the message and the unfiltered list
        initial, error, args = list_page(schemas.ListQuery()), exc.message, {}
    catalog = {"tasks": [spec.to_dict() for spec in tasks.catalog().values()]}
    task_names = [task["name"] for task in catalog["tasks"]]
    if args.get("task") and args["task"] not in task_names:  # a filter on a task no worker offers (any more)
        task_names.append(args["task"])
    return render_template("jobs.html", initial=initial, catalog=catalog, error=error,
                           status=args.get("status", ""), task=args.get("task", ""),
                           statuses=[s.value for s in JobStatus], task_names=task_names)


@bp.get("/jobs/<job_id>")
def job_page(job_id: str):
    try:
        job = jobs.get_job(job_id)
    except JobNotFound:
        return render_template("not_found.html", job_id=job_id), 404
    spec = tasks.catalog().get(job.task)
    task = spec.to_dict() if spec else None
    return render_template("job.html", job=render_with_actions(job), task=task,
                           params=ordered_params(job.params or {}, task))


def ordered_params(params: dict, task: dict | None) -> list[tuple[str, object]]:
    """``params`` in the order the task declares them, where its published spec says it (``params_order``),
    else by name: the same order the submit form shows (JSONB keeps no key order, and JSON answers sort keys)."""
    order = list((task or {}).get("params_order") or [])
    return sorted(params.items(), key=lambda item: (order.index(item[0]) if item[0] in order else len(order),
                                                    item[0]))
