"""Extensions created once and bound to an app with ``init_app``."""

from __future__ import annotations

import socket
from typing import Any

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


# TCP keepalives on every connection to PostgreSQL and Redis, on both ends: a peer whose host died or dropped off
# the network is probed after 5 s of silence and given up after 3 unanswered probes 2 s apart, or once data it
# was sent stays unacknowledged for 10 s (tcp_user_timeout). Without them a lost peer's connection, and a
# PostgreSQL session's advisory locks with it, lives until TCP's own defaults give up: two hours for an idle one.
# A stopped (SIGSTOP) process's kernel still answers the probes: it stays connected.
KEEPALIVE_IDLE_S, KEEPALIVE_INTERVAL_S, KEEPALIVE_COUNT, USER_TIMEOUT_MS = 5, 2, 3, 10_000
# the server's side of a PostgreSQL session (any user may set these), the same numbers
SERVER_KEEPALIVES = {"tcp_keepalives_idle": KEEPALIVE_IDLE_S, "tcp_keepalives_interval": KEEPALIVE_INTERVAL_S,
                     "tcp_keepalives_count": KEEPALIVE_COUNT, "tcp_user_timeout": USER_TIMEOUT_MS}


def postgres_connect_args() -> dict[str, Any]:
    """libpq's connection parameters for both ends' keepalives: the client's own, and the server's (``options``)."""
    return {"connect_timeout": 3, "keepalives": 1, "keepalives_idle": KEEPALIVE_IDLE_S,
            "keepalives_interval": KEEPALIVE_INTERVAL_S, "keepalives_count": KEEPALIVE_COUNT,
            "tcp_user_timeout": USER_TIMEOUT_MS,
            "options": " ".join(f"-c {name}={value}" for name, value in SERVER_KEEPALIVES.items())}


def redis_client(url: str, timeout: float | None) -> Redis:
    """A Redis client with keepalives on its sockets; RQ needs raw bytes, so no ``decode_responses``."""
    return Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout, socket_keepalive=True,
                          socket_keepalive_options={socket.TCP_KEEPIDLE: KEEPALIVE_IDLE_S,
                                                    socket.TCP_KEEPINTVL: KEEPALIVE_INTERVAL_S,
                                                    socket.TCP_KEEPCNT: KEEPALIVE_COUNT,
                                                    socket.TCP_USER_TIMEOUT: USER_TIMEOUT_MS})


class RedisConnection:
    """One Redis client per app."""

    def init_app(self, app: Flask) -> None:
        app.extensions["redis"] = redis_client(app.config["REDIS_URL"], app.config["REDIS_TIMEOUT"])

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
