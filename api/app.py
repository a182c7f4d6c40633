"""``create_app``: the composition root, which wires the parts together; it reads as their table of contents."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask

from api import settings
from api.stores import db, migrate, postgres_connect_args, redis_connection

MIGRATIONS_DIR = str(Path(__file__).resolve().parent.parent / "migrations")
WEB = Path(__file__).resolve().parent / "web"


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    app = Flask(__name__, template_folder=str(WEB / "templates"), static_folder=str(WEB / "static"))
    app.config.update(settings.load())
    app.config.update(config or {})
    app.config["SQLALCHEMY_DATABASE_URI"] = sqlalchemy_url(app.config["DATABASE_URL"])
    app.config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", {"pool_pre_ping": True, "connect_args": postgres_connect_args()})
    app.json.sort_keys = False
    configure_logging(app.config["LOG_LEVEL"])

    db.init_app(app)
    migrate.init_app(app, db, directory=MIGRATIONS_DIR)
    redis_connection.init_app(app)

    from api.ops import commands, webhook_commands
    from api.web import auth, dashboard, errors, host_header, metrics, security
    from api.web.routes import catalogue, docs, health, jobs, pages, webhooks
    from api.web.routes import hosts as host_routes
    from api.web.routes import login as login_routes
    from api.web.routes import sweeps as sweep_routes

    errors.register_error_handlers(app)
    security.init_app(app)  # CSP and nosniff on every answer
    host_header.init_app(app)  # the Host check runs first: a foreign name gets a 400 before anything else
    auth.init_app(app)  # then every request needs a user, except a short public list
    app.register_blueprint(login_routes.bp)
    app.register_blueprint(jobs.bp)
    app.register_blueprint(catalogue.bp)
    app.register_blueprint(host_routes.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(pages.bp)
    app.register_blueprint(docs.bp)
    app.register_blueprint(webhooks.bp)
    app.register_blueprint(sweep_routes.bp)
    dashboard.init_app(app)
    metrics.init_app(app)
    commands.init_app(app)
    webhook_commands.init_app(app)
    return app


def sqlalchemy_url(url: str) -> str:
    """Plain ``postgresql://`` URLs use psycopg2 (SQLAlchemy 2.1 would pick psycopg 3)."""
    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            return "postgresql+psycopg2://" + url[len(scheme):]
    return url


def configure_logging(level: str) -> None:
    """One format for API, worker and reconciler; job lines carry ``job <id>:``."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s")
