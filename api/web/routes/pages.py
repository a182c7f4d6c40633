"""The web monitor: ``/`` (jobs), ``/jobs/<id>`` (one job), ``/compare?ids=`` (several jobs side by side),
``/hosts`` (the live hosts, their devices and who holds them), ``/sweeps`` and ``/sweeps/<id>`` (a sweep's
trials) and ``/webhooks`` (the caller's hooks).
Server-rendered shells with the first data inlined; the pages' JavaScript then polls the same JSON API a script
would. What a status allows comes from the server (each job's ``actions``; the compare page gets the terminal
statuses, after which it stops polling), never from a rule of the JavaScript's own, but one: only a completed
job's (or trial's) values are final, so only they compete for best (``compare.js``, ``sweep.js``).
The submit form is generated in the browser from the params JSON Schema each task's workers published
(``GET /api/tasks``): the page knows no task's fields itself."""

from __future__ import annotations

from flask import Blueprint, render_template, request

from api.record.status import TERMINAL, JobNotFound, JobStatus
from api.scheduler import hosts
from api.service import catalogue, queries, sweeps
from api.web import schemas
from api.web.openapi import read_query
from api.web.routes.jobs import detail, list_page, render
from api.web.routes.sweeps import detail as sweep_detail
from api.web.routes.sweeps import render as sweep_render
from api.web.routes.webhooks import page_data as webhooks_page_data
from api.web.routes.webhooks import trackers_of
from api.web.schemas import ApiError

bp = Blueprint("pages", __name__)

FILTERS = ("status", "task", "name", "owner", "since", "until", "sort", "sweep")  # the list's filters kept in the URL
MAX_COMPARED = 12


@bp.get("/")
def jobs_page():
    args = {key: request.args[key] for key in FILTERS if request.args.get(key)}
    try:
        initial, error = list_page(read_query(schemas.ListQuery, args)), None
    except ApiError as exc:  # a hand-edited URL: show the message and the unfiltered list
        initial, error, args = list_page(schemas.ListQuery()), exc.message, {}
    clone = None  # "Run again" on a job page: the submit form opens filled in with that job's task and params
    if request.args.get("clone"):
        try:
            source = queries.get_job(request.args["clone"])
            clone = {"id": str(source.id), "name": source.name, "task": source.task, "params": source.params,
                     "resources": source.resources}
        except JobNotFound:
            error = f"no job {request.args['clone']} to run again"
    catalog = {"tasks": [spec.to_dict() for spec in catalogue.catalog().values()]}
    task_names = [task["name"] for task in catalog["tasks"]]
    if args.get("task") and args["task"] not in task_names:  # a filter on a task no worker offers (any more)
        task_names.append(args["task"])
    return render_template("jobs.html", initial=initial, catalog=catalog, error=error, clone=clone,
                           filters={key: args.get(key, "") for key in FILTERS},
                           statuses=[s.value for s in JobStatus], task_names=task_names)


@bp.get("/jobs/<job_id>")
def job_page(job_id: str):
    try:
        job = detail(queries.parse_id(job_id))  # its history capped, as the API's read
    except JobNotFound:
        return render_template("not_found.html", job_id=job_id), 404
    spec = catalogue.catalog().get(job["task"])
    task = spec.to_dict() if spec else None
    source = None
    if job["cloned_from"]:
        try:
            source = {"id": job["cloned_from"], "name": queries.get_job(job["cloned_from"]).name}
        except JobNotFound:
            pass
    return render_template("job.html", job=job, task=task, source=source,
                           params=ordered_params(job["params"] or {}, task),
                           trackers=trackers_of(queries.parse_id(job_id)))


@bp.get("/sweeps")
def sweeps_page():
    """Every sweep, newest first."""
    found = sweeps.list_sweeps()
    counts = sweeps.counts([sweep.id for sweep in found])
    return render_template("sweeps.html", sweeps=[sweep_render(sweep, counts.get(sweep.id, {})) for sweep in found])


@bp.get("/sweeps/<sweep_id>")
def sweep_page(sweep_id: str):
    """One sweep: its trials best first, the objective against each searched param, every trial's curve; the page's
    script polls ``/api/sweeps/<id>`` and its curves while it runs."""
    try:
        sweep = sweeps.get(sweep_id)
    except sweeps.SweepNotFound:
        return render_template("not_found.html", job_id=sweep_id), 404
    return render_template("sweep.html", sweep=sweep_detail(sweep),
                           curves={"metric": sweep.objective_metric, "curves": sweeps.curves(sweep)})


@bp.get("/webhooks")
def webhooks_page():
    """The caller's webhooks (an admin's: everyone's) with their newest deliveries; the page's script changes them
    through ``/api/webhooks``."""
    return render_template("webhooks.html", initial=webhooks_page_data())


@bp.get("/hosts")
def hosts_page():
    """Each live host: its GPUs and the job holding each, CPUs and memory (total, reserved), tasks, last seen; the
    page's script polls ``/api/hosts`` for the same data."""
    return render_template("hosts.html", initial={"hosts": hosts.describe()})


@bp.get("/compare")
def compare_page():
    """Several jobs side by side: ``ids`` is their ids, comma-separated (the jobs list's "Compare" links here)."""
    raw = [part.strip() for part in request.args.get("ids", "").split(",") if part.strip()]
    ids = list(dict.fromkeys(raw))  # the same job twice is one
    if not 1 <= len(ids) <= MAX_COMPARED:
        return render_template("compare.html", jobs=[], error=f"choose 1 to {MAX_COMPARED} jobs to compare "
                               "(ids=ID,ID,... in the URL; the jobs list's checkboxes make it)"), 400
    try:
        found = [render(queries.get_job(job_id)) for job_id in ids]
    except JobNotFound as exc:
        return render_template("not_found.html", job_id=str(exc)), 404
    catalog = catalogue.catalog()
    order = [name for job in found if job["task"] in catalog for name in catalog[job["task"]].params_order]
    return render_template("compare.html", jobs=found, params_order=list(dict.fromkeys(order)), error=None,
                           ended=sorted(TERMINAL))


def ordered_params(params: dict, task: dict | None) -> list[tuple[str, object]]:
    """``params`` in the order the task declares them, where its published spec says it (``params_order``),
    else by name: the same order the submit form shows (JSONB keeps no key order, and JSON answers sort keys)."""
    order = list((task or {}).get("params_order") or [])
    return sorted(params.items(), key=lambda item: (order.index(item[0]) if item[0] in order else len(order),
                                                    item[0]))
