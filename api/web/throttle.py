"""Per-address backoff on refused credentials: defence in depth (a token is 256 random bits, so guessing one is
hopeless anyway), and a log of who tries.

Each refused bearer token (unknown, expired, revoked, a disabled user's, or a malformed header) counts against the
caller's address (an IPv6 address by its /64, what one host usually holds) in Redis, so every gunicorn worker
shares the count: one hash per window of ``AUTH_FAILURE_WINDOW`` seconds, expiring after two, holding at most
``AUTH_FAILURE_ADDRESSES`` addresses (so at most two keys, of bounded size, whatever the number of callers). Past
``AUTH_FAILURES`` refusals in a window, a refused token is answered 429 with ``Retry-After`` (the seconds left in
the window) instead of 401; an address the table has no room for is treated as past it. Only refusals count and
only refusals are answered 429: a valid token is checked first and always passes, so no address (a NAT, a proxy)
is locked out of the service by someone else's failures. Each refusal is logged up to the limit, then one line
says the address is being refused; never the token. With Redis unreachable the count is skipped (401 as before).
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time

from flask import current_app, request
from redis.exceptions import RedisError

from api.stores import redis_connection

log = logging.getLogger(__name__)
KEY = "trainq:auth-failures:{window}"
AUTH_FAILURE_ADDRESSES = 10_000
"""Addresses one window's hash holds at most (``create_app({"AUTH_FAILURE_ADDRESSES": n})`` changes it)."""


class TooManyFailures(Exception):
    """Too many refused credentials from this address: 429, ``Retry-After`` seconds."""

    def __init__(self, address: str, retry_after: int):
        super().__init__(f"too many refused credentials from {address}: try again in {retry_after} s "
                         "(with a valid token: one is never refused for this)")
        self.retry_after = retry_after


def address() -> str:
    """The caller's address as counted: IPv4 as is, IPv6 by its /64."""
    raw = request.remote_addr or "unknown"
    try:
        ip = ipaddress.ip_address(raw)
    except ValueError:
        return raw
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def refused(why: str) -> None:
    """Count a refused credential from this request's address and log it; raise ``TooManyFailures`` past the
    limit (the caller answers 401 otherwise)."""
    config = current_app.config
    limit, window = int(config["AUTH_FAILURES"]), int(config["AUTH_FAILURE_WINDOW"])
    room = int(config.get("AUTH_FAILURE_ADDRESSES", AUTH_FAILURE_ADDRESSES))
    who, now = address(), time.time()
    key = KEY.format(window=int(now // window))
    try:
        conn = redis_connection.get()
        pipe = conn.pipeline()
        pipe.hincrby(key, who, 1)
        pipe.expire(key, 2 * window)
        pipe.hlen(key)
        count, _, size = pipe.execute()
        if count == 1 and size > room:  # no room for one more address: not kept, and refused as if past the limit
            conn.hdel(key, who)
            count = limit + 1
    except RedisError as exc:
        log.warning("refused credential from %s: %s (not counted: Redis unreachable: %s)", who, why, exc)
        return
    retry_after = max(1, math.ceil((int(now // window) + 1) * window - now))
    if count <= limit:
        log.warning("refused credential from %s on %s %s: %s (%d of %d in %d s)", who, request.method,
                    request.path, why, count, limit, window)
        return
    if count == limit + 1:
        log.warning("too many refused credentials from %s: answering 429 for %d s", who, retry_after)
    raise TooManyFailures(who, retry_after)
