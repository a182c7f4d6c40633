"""``/api/hosts``: the live hosts, what each has and who holds what."""

from __future__ import annotations

from flask import Blueprint

from api.scheduler import hosts
from api.web import schemas
from api.web.openapi import operation

bp = Blueprint("hosts", __name__, url_prefix="/api/hosts")


@bp.get("")
@operation("The live hosts: GPUs (and the job holding each), CPUs and memory (total, reserved), tasks, last seen",
           {200: schemas.HostList}, conditional=True)
def list_hosts():
    return {"hosts": hosts.describe()}
