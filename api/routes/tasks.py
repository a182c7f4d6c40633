"""``/api/tasks``: the tasks workers offer, each with its params schema and how many live workers offer it."""

from __future__ import annotations

from flask import Blueprint

from api import tasks
from api.routes.training import conditional_json

bp = Blueprint("tasks", __name__, url_prefix="/api/tasks")


@bp.get("")
def list_tasks():
    return conditional_json({"tasks": [spec.to_dict() for spec in tasks.catalog().values()]})
