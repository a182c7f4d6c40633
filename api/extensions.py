"""Extensions created once and bound to an app with ``init_app``."""

from __future__ import annotations

from flask import Flask, current_app
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)
migrate = Migrate()


class RedisConnection:
    """One Redis client per app; RQ needs raw bytes, so no ``decode_responses``."""

    def init_app(self, app: Flask) -> None:
        timeout = app.config["REDIS_TIMEOUT"]
        app.extensions["redis"] = Redis.from_url(
            app.config["REDIS_URL"], socket_timeout=timeout, socket_connect_timeout=timeout
        )

    @staticmethod
    def get() -> Redis:
        return current_app.extensions["redis"]


redis_connection = RedisConnection()


def unreachable() -> dict[str, Exception]:
    """The dependencies this process cannot reach right now, with why (``database``, ``redis``)."""
    errors: dict[str, Exception] = {}
    try:
        db.session.execute(text("SELECT 1"))
        db.session.commit()
    except SQLAlchemyError as exc:
        db.session.rollback()
        errors["database"] = exc
    try:
        RedisConnection.get().ping()
    except RedisError as exc:
        errors["redis"] = exc
    return errors
