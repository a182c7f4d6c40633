"""rq-dashboard mounted at ``/rq`` on the app's Redis.

It has no authentication of its own: put ``/rq`` behind your proxy's auth in production.
"""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    import rq_dashboard
    from rq_dashboard.web import config, setup_rq_connection

    from api.queue import SERIALIZER

    config.serializer = SERIALIZER  # never unpickle what someone put in Redis
    app.config.setdefault("RQ_DASHBOARD_REDIS_URL", app.config["REDIS_URL"])
    setup_rq_connection(app)
    app.register_blueprint(rq_dashboard.blueprint, url_prefix="/rq")
