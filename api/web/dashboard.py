"""rq-dashboard mounted at ``/rq`` on the app's Redis, for admins only.

rq-dashboard 0.9 has no authentication of its own, and its requeue-all runs on a plain GET. Here every /rq
route but its static files needs an admin's bearer token (``auth``'s checks run first): its pages come through
the monitor's shell (``auth.shell``) and its jQuery calls send the tab's token (``static/rq_auth.js``, added by
``templates/rq_dashboard/base.html``). Its state-changing routes (delete, requeue, requeue-all, empty, compact)
answer only POST: a GET to one of them is a 405 JSON answer saying so.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from flask import Flask, Response, request
from rq.worker import Worker

from api.web import auth, dashboard_input

ACTIONS = frozenset({"delete_job_view", "requeue_job_view", "requeue_all", "empty_queue", "compact_queue"})
"""rq-dashboard's view functions that change Redis."""


class DashboardWorker(Worker):
    """The workers rq-dashboard lists: their current jobs are read as ``ServiceJob`` (JSON, never pickle)."""

    @classmethod
    def all(cls, *args: Any, **kwargs: Any) -> list[Any]:
        from api.queue import SERIALIZER, ServiceJob

        return super().all(*args, **{**kwargs, "job_class": ServiceJob, "serializer": SERIALIZER})

    def get_current_job(self) -> Any:
        from rq.exceptions import DeserializationError, NoSuchJobError

        try:
            job = super().get_current_job()
            if job is not None:
                _ = job.func_name  # its payload, read now (JSON): the page shows the call
            return job
        except (DeserializationError, NoSuchJobError):  # not ours (or gone): listed without it
            return None


def _removed_by(view: str, args: dict[str, Any]) -> tuple[list[str], str] | None:
    """The RQ jobs a delete or an empty is about to remove (read before it runs), and what to call it. Every list
    rq-dashboard shows can be emptied: the queue itself and each of its registries."""
    from rq import Queue
    from rq.registry import (
        CanceledJobRegistry,
        DeferredJobRegistry,
        FailedJobRegistry,
        FinishedJobRegistry,
        ScheduledJobRegistry,
        StartedJobRegistry,
    )

    from api.stores import redis_connection

    conn = redis_connection.get()
    if view == "delete_job_view":
        return [args["job_id"]], "deleted"
    if view == "empty_queue":
        registries = {"failed": FailedJobRegistry, "deferred": DeferredJobRegistry, "started": StartedJobRegistry,
                      "finished": FinishedJobRegistry, "canceled": CanceledJobRegistry,
                      "scheduled": ScheduledJobRegistry}
        name, registry = args["queue_name"], args["registry_name"]
        if registry == "queued":
            return Queue(name, connection=conn).get_job_ids(), "deleted (queue emptied)"
        if registry in registries:
            return registries[registry](name, connection=conn).get_job_ids(cleanup=False), \
                f"deleted ({registry} jobs emptied)"
    return None


def _not_requeueable(job_id: str) -> str | None:
    """Why RQ would refuse to requeue ``job_id`` (only a job in its queue's failed registry can be), or None."""
    from rq.registry import FailedJobRegistry

    from api.stores import redis_connection

    conn = redis_connection.get()
    status, origin = conn.hmget(f"rq:job:{job_id}", "status", "origin")
    if origin is None:
        return f"RQ has no job {job_id}"
    if conn.zscore(FailedJobRegistry(origin.decode(), connection=conn).key, job_id) is None:
        return f"RQ job {job_id} is {(status or b'?').decode()}, not failed: only a failed job can be requeued"
    return None


def _requeued_by(view: str, args: dict[str, Any]) -> list[str]:
    """The failed RQ jobs a requeue is about: one (``requeue_job_view``), or all of a queue's (``requeue_all``)."""
    from rq.registry import FailedJobRegistry

    from api.stores import redis_connection

    if view == "requeue_job_view":
        return [args["job_id"]]
    return FailedJobRegistry(args["queue_name"], connection=redis_connection.get()).get_job_ids(cleanup=False)


def _queue_exists(name: str) -> bool:
    from rq import Queue

    from api.stores import redis_connection

    return bool(redis_connection.get().exists(Queue.redis_queue_namespace_prefix + name))


def _honor(response: Response) -> Response:
    """After a delete or an empty in rq-dashboard: what the admin meant is done to the end. Removed jobs are gone
    from every list (stopping a job moved it from where the admin saw it: a waiting one to the canceled list, a
    running one to the failed list, where rq-dashboard's empty of the list it emptied misses it)."""
    from flask import g

    removed = g.pop("dashboard_removed", None)
    if response.status_code == 200 and removed:
        from api import queue

        queue.delete(removed)
    return response


def _guard() -> Response | None:
    if request.endpoint in auth.PUBLIC_ENDPOINTS:
        return None
    auth.require_admin()
    if (refused := dashboard_input.refusal(request.endpoint, request.view_args or {})) is not None:
        return refused  # type: ignore[return-value]
    if request.endpoint and request.endpoint.split(".")[-1] in ACTIONS and request.method != "POST":
        from api.web.errors import error_response

        response, status = error_response(405, "method_not_allowed",
                                          "rq-dashboard's actions run only from a POST; a GET changes nothing")
        response.headers["Allow"] = "POST"
        return response, status  # type: ignore[return-value]
    view = (request.endpoint or "").split(".")[-1]
    if view == "compact_queue" and not _queue_exists((request.view_args or {}).get("queue_name", "")):
        from flask import jsonify

        return jsonify(status="OK")  # nothing to compact (RQ's compact fails on an empty queue: RENAME of no key)
    if view == "requeue_job_view" and (why := _not_requeueable((request.view_args or {}).get("job_id", ""))):
        from api.web.errors import error_response

        return error_response(409, "conflict", f"{why}; nothing changed")  # type: ignore[return-value]
    if request.method == "POST" and view in ("delete_job_view", "empty_queue"):
        from flask import g

        from api.service import dashboard_sync

        # Before RQ deletes them: the rows end cancelled and their work is stopped first, so no reconciler pass
        # finds a job gone from a row that still says queued or running, and no worker writes a deleted job back
        # (a horse that returned after its job was deleted would put it in the finished list).
        if removed := _removed_by(view, request.view_args or {}):
            dashboard_sync.removed_in_dashboard(*removed, auth.current_user())
            g.dashboard_removed = removed[0]
    if request.method == "POST" and view in ("requeue_job_view", "requeue_all"):
        return _requeue(_requeued_by(view, request.view_args or {}), single=view == "requeue_job_view")
    return None


def _requeue(rq_job_ids: list[str], single: bool) -> Response:
    """What a requeue in rq-dashboard means, done instead of RQ's requeue (which would run the old attempt again,
    for the row to refuse): each failed or cancelled row restarts on a new attempt. A restart the service refuses
    changes nothing, and the answer says why (for one job, as a 409 or 429 naming the reason)."""
    from flask import jsonify

    from api.service import dashboard_sync
    from api.web.errors import error_response

    restarted, refused = dashboard_sync.requeued_in_dashboard(rq_job_ids, auth.current_user())
    if single and refused:
        why = next(iter(refused.values()))
        status = 429 if "limit" in why else 409
        return error_response(status, "requeue_refused", f"not requeued: {why}; nothing changed")  # type: ignore
    return jsonify(status="OK", restarted=restarted, refused=refused)


def init_app(app: Flask) -> None:
    import rq_dashboard
    from rq import requeue_job
    from rq_dashboard import web

    from api.queue import SERIALIZER, ServiceJob

    # Never unpickle what someone put in Redis: rq-dashboard 0.9 honours its serializer setting in its lists,
    # but its job page, delete and requeue fetch jobs with RQ's default (pickle) serializer, by these names.
    web.config.serializer = SERIALIZER
    web.Job = ServiceJob
    web.requeue_job = partial(requeue_job, serializer=SERIALIZER)
    web.Worker = DashboardWorker  # its workers list reads each worker's current job (pickle, by default)
    app.config.setdefault("RQ_DASHBOARD_REDIS_URL", app.config["REDIS_URL"])
    web.setup_rq_connection(app)
    blueprint = rq_dashboard.blueprint
    if _guard not in blueprint.before_request_funcs.get(None, []):  # one blueprint object for every app
        # first, before rq-dashboard's own (which answers a bad instance number with a 500)
        blueprint.before_request_funcs.setdefault(None, []).insert(0, _guard)
        blueprint.after_request(dashboard_input.escape_json)
        blueprint.after_request(_honor)
    app.register_blueprint(blueprint, url_prefix="/rq")
