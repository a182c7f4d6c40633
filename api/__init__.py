"""The training-job service. ``create_app`` reads as its table of contents."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask

from api import config as settings
from api.extensions import db, migrate, redis_connection

MIGRATIONS_DIR = str(Path(__file__).resolve().parent.parent / "migrations")


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update(settings.load())
    app.config.update(config or {})
    app.config["SQLALCHEMY_DATABASE_URI"] = sqlalchemy_url(app.config["DATABASE_URL"])
    app.config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", {"pool_pre_ping": True, "connect_args": {"connect_timeout": 3}})
    app.json.sort_keys = False
    configure_logging(app.config["LOG_LEVEL"])

    db.init_app(app)
    migrate.init_app(app, db, directory=MIGRATIONS_DIR)
    redis_connection.init_app(app)

    from api import cli, dashboard, errors, metrics
    from api.routes import health, pages, tasks, training

    errors.register_error_handlers(app)
    app.register_blueprint(training.bp)
    app.register_blueprint(tasks.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(pages.bp)
    dashboard.init_app(app)
    metrics.init_app(app)
    cli.init_app(app)
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
