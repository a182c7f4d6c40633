"""The Host check: a request whose Host header names none of ``ALLOWED_HOSTS`` (any port) is a 400, on
loopback too: DNS rebinding points a foreign name at 127.0.0.1, and this is where it is stopped."""

from __future__ import annotations

from flask import Flask, current_app, request

from api.service.limits import LimitExceeded


def allowed_hosts() -> frozenset[str]:
    return frozenset(_host_name(name) for name in current_app.config["ALLOWED_HOSTS"].split(",") if name.strip())


def _host_name(host: str) -> str:
    """``host`` without its port and IPv6 brackets, lower case: ``[::1]:5000`` -> ``::1``."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.partition(":")[0] if host.count(":") <= 1 else host


def check_host() -> None:
    allowed = allowed_hosts()
    sent = request.headers.get("Host", "")
    if "*" in allowed or (sent and _host_name(sent) in allowed):
        return
    raise LimitExceeded(400, "bad_host", f"Host {sent[:100]!r} is not a name this service answers to; add it to "
                        "ALLOWED_HOSTS if it should be", "Host")


def init_app(app: Flask) -> None:
    app.before_request(check_host)
