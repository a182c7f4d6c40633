"""The web monitor: ``/`` (jobs) and ``/jobs/<id>`` (one job). Server-rendered shells with the first data
inlined; the pages' JavaScript then polls the same JSON API a script would, and holds no status logic."""

from __future__ import annotations

from flask import Blueprint, render_template, request

from api import jobs
from api.errors import ApiError
from api.routes.training import list_page, render_with_actions
from api.status import JobNotFound, JobStatus
from training.config import DATASETS, MODELS, TrainingConfig

bp = Blueprint("pages", __name__)


@bp.get("/")
def jobs_page():
    args = {"status": request.args["status"]} if request.args.get("status") else {}
    try:
        initial, error = list_page(args), None
    except ApiError as exc:  # a hand-edited URL: show the message and the unfiltered list
        initial, error, args = list_page({}), exc.message, {}
    return render_template("jobs.html", initial=initial, error=error, status=args.get("status", ""),
                           statuses=[s.value for s in JobStatus], defaults=TrainingConfig(),
                           datasets=DATASETS, models=MODELS)


@bp.get("/jobs/<job_id>")
def job_page(job_id: str):
    try:
        job = jobs.get_job(job_id)
    except JobNotFound:
        return render_template("not_found.html", job_id=job_id), 404
    return render_template("job.html", job=render_with_actions(job))
