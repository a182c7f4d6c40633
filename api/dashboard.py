"""rq-dashboard mounted at ``/rq`` on the app's Redis.

It has no authentication of its own: put ``/rq`` behind your proxy's auth in production.
"""

from __future__ import annotations

from functools import partial

from flask import Flask


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
    app.config.setdefault("RQ_DASHBOARD_REDIS_URL", app.config["REDIS_URL"])
    web.setup_rq_connection(app)
    app.register_blueprint(rq_dashboard.blueprint, url_prefix="/rq")
