"""``/api/tasks``: the tasks workers offer, each with its params schema and how many live workers offer it."""

from __future__ import annotations

from flask import Blueprint

from api.service import catalogue
from api.web import schemas
from api.web.openapi import operation

bp = Blueprint("tasks", __name__, url_prefix="/api/tasks")


@bp.get("")
@operation("The tasks workers offer, with their params schemas", {200: schemas.TaskList}, conditional=True)
def list_tasks():
    return {"tasks": [spec.to_dict() for spec in catalogue.catalog().values()]}
