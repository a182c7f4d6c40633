"""Signing of trainq's webhook deliveries, for receivers: ``verify(secret, header, body)``.

Every delivery carries ``X-Trainq-Signature: t=<unix time>,v1=<hex>``, where ``v1`` is
HMAC-SHA256(secret, ``"<t>." + body``) (as Stripe signs), and ``X-Trainq-Delivery: <uuid>``, the idempotency key
that every retry and every "send again" of that delivery repeats: a receiver that keeps the keys it has acted on
acts on each event once. Pure Python: a receiver needs nothing else of trainq.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-Trainq-Signature"
DELIVERY_HEADER = "X-Trainq-Delivery"
EVENT_HEADER = "X-Trainq-Event"
TOLERANCE = 300  # seconds: an older signature is a replay


class SignatureError(ValueError):
    pass


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The ``X-Trainq-Signature`` value for ``body`` at ``timestamp`` (now if None)."""
    t = int(time.time()) if timestamp is None else int(timestamp)
    digest = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def verify(secret: str, header: str | None, body: bytes, tolerance: float = TOLERANCE,
           now: float | None = None) -> int:
    """Check a delivery's signature header against its raw body; return its timestamp. Raises
    ``SignatureError`` when the header is missing or malformed, no ``v1`` matches, or it is older (or newer) than
    ``tolerance`` seconds (a replay)."""
    if not header:
        raise SignatureError(f"no {SIGNATURE_HEADER} header")
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        parts.setdefault(key, []).append(value)
    try:
        t = int(parts["t"][0])
    except (KeyError, ValueError):
        raise SignatureError("the signature header has no timestamp (t=)") from None
    expected = sign(secret, body, t).split("v1=", 1)[1]
    if not any(hmac.compare_digest(expected, candidate) for candidate in parts.get("v1", [])):
        raise SignatureError("no v1 signature matches the body")
    if abs((time.time() if now is None else now) - t) > tolerance:
        raise SignatureError(f"the signature's timestamp is more than {tolerance:.0f} s away: a replay")
    return t
