"""Who is asking: the checks every request passes (bearer token or the monitor's session login, CSRF), and
the request's user for the service's functions (users, tokens and who may act on a job: ``api.service.users``).

- Every request needs a user (``Authorization: Bearer <token>``, or the monitor's session cookie made by
  logging in with a token), except the endpoints in ``PUBLIC_ENDPOINTS``. The check runs before every
  request (``authenticate_request``), so a new route is closed until someone adds it to that list.
- A state-changing request made with the session cookie must carry the session's CSRF token
  (``X-CSRF-Token`` header, or a ``csrf_token`` form field); one with a bearer token needs none (no browser
  adds that header by itself).
- Any user reads every job; only its owner or an admin changes it (``api.service.users.check_owner``).
  Admins alone reach /rq, /metrics and the cleanup endpoint (``admin_required``); a token with scope ``metrics``
  reads /metrics and nothing else (what Prometheus sends).
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable
from datetime import timedelta
from functools import wraps
from typing import Any, TypeVar

from flask import Flask, g, has_request_context, redirect, request, session, url_for
from flask.sessions import SecureCookieSessionInterface

from api.record.status import utcnow
from api.record.tables import ApiToken, User
from api.service import users
from api.service.users import Forbidden
from api.stores import db

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "X-CSRF-Token"
PUBLIC_ENDPOINTS = frozenset({
    "health.health",  # a minimal liveness answer; details only with a user
    "auth.login",  # the login page and its form
    "static",  # the monitor's CSS and JS
})
"""Endpoints that answer without a user. Everything else needs one: keep this list short."""

CSRF_WITHOUT_SESSION = frozenset({"auth.login"})
"""Anonymous forms that still carry the CSRF token of the page that showed them (no login CSRF)."""

SCOPED_ENDPOINTS: dict[str, frozenset[str]] = {"metrics": frozenset({"metrics.metrics"})}
"""What a token of a narrower scope than ``all`` may reach."""


class Unauthorized(Exception):
    """No user, or a token that is unknown, expired, revoked or a disabled user's: 401."""


# ---------------------------------------------------------------- every request


def authenticate_request() -> Any:
    """Set ``g.user`` and ``g.token`` (``g.via``: "bearer" or "session"); check CSRF; refuse what needs a user."""
    g.user, g.token, g.via = None, None, None
    why = None
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, raw = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not raw.strip():
            why = "the Authorization header must be 'Bearer <token>'"
        else:
            token, why = users.check_token(raw.strip())
            if token is not None:
                g.user, g.token, g.via = token.user, token, "bearer"
    elif "token_id" in session:
        token = db.session.get(ApiToken, session["token_id"])
        if users.refusal(token) is None and token is not None and token.scope == "all" and not _logged_out(token):
            users.touch(token)
            g.user, g.token, g.via = token.user, token, "session"
        else:  # revoked, expired or disabled since the login: the session ends
            session.pop("token_id", None)
    if request.method not in SAFE_METHODS and g.via != "bearer" and (
            g.via == "session" or request.endpoint in CSRF_WITHOUT_SESSION):
        check_csrf()
    if request.endpoint in PUBLIC_ENDPOINTS:
        if g.token is not None and g.token.scope != "all":  # a scoped token reads only its scope: anonymous here
            g.user = g.token = g.via = None
        return None
    if why:
        raise Unauthorized(why)
    if g.user is None:
        if request.blueprint == "pages" and request.method in SAFE_METHODS:
            return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
        raise Unauthorized("authentication required: send 'Authorization: Bearer <token>' "
                           "(an admin makes one with: flask --app api tokens create USER)")
    allowed = SCOPED_ENDPOINTS.get(g.token.scope)
    if allowed is not None and request.endpoint not in allowed:
        raise Forbidden(f"this token's scope is {g.token.scope!r}: it may only read /metrics", "token_scope")
    return None


def csrf_token() -> str:
    """The session's CSRF token (made on first use); pages put it in a meta tag, forms in a hidden field."""
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


def check_csrf() -> None:
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        sent = request.form.get("csrf_token")
    expected = session.get("csrf")
    if not sent or not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise Forbidden(f"CSRF check failed: a state-changing request made with the session cookie must send "
                        f"the page's CSRF token in the {CSRF_HEADER} header (or use a bearer token)", "csrf_failed")


def login(token: ApiToken) -> None:
    """Start a monitor session for ``token``'s user: a fresh session (and CSRF token), bound to the token, so
    revoking the token, or disabling the user, ends it."""
    session.clear()
    session.permanent = True
    session["token_id"] = token.id
    session["since"] = time.time()
    session["csrf"] = secrets.token_urlsafe(32)


def _logged_out(token: ApiToken) -> bool:
    ended = token.sessions_ended_at
    return ended is not None and session.get("since", 0.0) <= ended.timestamp()


def logout() -> None:
    """End this session and every other monitor session made with its token before now (a copy of the cookie
    included): the cookie lives in the browser, so the server remembers when its token logged out."""
    token = g.get("token")
    if token is not None and g.get("via") == "session":
        token.sessions_ended_at = utcnow()
        db.session.commit()
    session.clear()


# ---------------------------------------------------------------- who may do what


V = TypeVar("V", bound=Callable[..., Any])


def require_admin() -> None:
    if g.get("user") is None:
        raise Unauthorized("authentication required")
    if not g.user.is_admin:
        raise Forbidden(f"only an admin may do this; {g.user.name} is not one", "admin_only")


def admin_required(view: V) -> V:
    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        require_admin()
        return view(*args, **kwargs)

    return wrapped  # type: ignore[return-value]


def current_user() -> User | None:
    return g.get("user") if has_request_context() else None


def current_user_id() -> int | None:
    user = current_user()
    return user.id if user is not None else None


class SessionInterface(SecureCookieSessionInterface):
    """Flask's signed cookie session, its cookie marked Secure whenever the request came over HTTPS."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(app.config["SESSION_COOKIE_SECURE"]) or (has_request_context() and request.is_secure)


def init_app(app: Flask) -> None:
    app.session_interface = SessionInterface()
    app.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax",
                      SESSION_COOKIE_NAME="trainq_session",
                      PERMANENT_SESSION_LIFETIME=timedelta(days=app.config["SESSION_DAYS"]))
    app.before_request(authenticate_request)

    @app.context_processor
    def _identity() -> dict[str, Any]:
        return {"current_user": g.get("user"), "csrf_token": csrf_token}
