"""Who is asking: the checks every request passes (a bearer token), and the request's user for the service's
functions (users, tokens and who may act on a job: ``api.service.users``).

- Every request needs a user (``Authorization: Bearer <token>``), except the endpoints in ``PUBLIC_ENDPOINTS``.
  The check runs before every request (``authenticate_request``), so a new route is closed until someone adds it
  to that list. There is no cookie and no other credential a browser adds by itself, so no CSRF check either:
  browsers send cookies to every port of a host, so a session cookie would reach any server another local account
  runs on another port of 127.0.0.1 (issue 21, item 2).
- The monitor keeps its token in ``sessionStorage`` (per origin, port included) and adds the header itself. A page
  (``PAGES``) asked for without an ``Authorization`` header, as a browser's navigation is, answers a shell with no
  data (``shell.html``) whose script fetches the same URL with the header and shows what comes back.
- A bearer token that is refused counts against the caller's address (``api.web.throttle``): past a few, the
  answer is a 429 with ``Retry-After``; a valid token is never refused for it.
- Any user reads every job; only its owner or an admin changes it (``api.service.users.check_owner``).
  Admins alone reach /rq, /metrics and the cleanup endpoint (``admin_required``); a token with scope ``metrics``
  reads /metrics and nothing else (what Prometheus sends).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import Flask, g, has_request_context, render_template, request

from api.record.tables import User
from api.service import users
from api.service.users import Forbidden
from api.web import throttle

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PUBLIC_ENDPOINTS = frozenset({
    "health.health",  # a minimal liveness answer; details only with a user
    "auth.login",  # the login page (the token never reaches the server but in an Authorization header)
    "static",  # the monitor's CSS and JS
    "rq_dashboard.static",  # rq-dashboard's CSS and JS
})
"""Endpoints that answer without a user. Everything else needs one: keep this list short."""

PAGES = frozenset({"docs.docs_page", "rq_dashboard.queues_overview", "rq_dashboard.workers_overview",
                   "rq_dashboard.jobs_overview", "rq_dashboard.job_view"})
"""HTML pages besides the monitor's own (blueprint ``pages``): without an Authorization header, a shell."""

SCOPED_ENDPOINTS: dict[str, frozenset[str]] = {"metrics": frozenset({"metrics.metrics"})}
"""What a token of a narrower scope than ``all`` may reach."""


class Unauthorized(Exception):
    """No user, or a token that is unknown, expired, revoked or a disabled user's: 401."""


# ---------------------------------------------------------------- every request


def is_page() -> bool:
    return request.blueprint == "pages" or request.endpoint in PAGES


def authenticate_request() -> Any:
    """Set ``g.user`` and ``g.token``; answer a page's shell to a navigation; refuse what needs a user."""
    g.user, g.token, g.via = None, None, None
    why = None
    header = request.headers.get("Authorization")
    if header is None and request.method in SAFE_METHODS and is_page():
        return shell()
    if header is not None:
        scheme, _, raw = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not raw.strip():
            why = "the Authorization header must be 'Bearer <token>'"
        else:
            token, why = users.check_token(raw.strip())
            if token is not None:
                g.user, g.token, g.via = token.user, token, "bearer"
        if why:
            throttle.refused(why)  # a 429 once this address has failed too often
    if request.endpoint in PUBLIC_ENDPOINTS:
        if g.token is not None and g.token.scope != "all":  # a scoped token reads only its scope: anonymous here
            g.user = g.token = g.via = None
        return None
    if why:
        raise Unauthorized(why)
    if g.user is None:
        raise Unauthorized("authentication required: send 'Authorization: Bearer <token>' "
                           "(an admin makes one with: flask --app api tokens create USER)")
    allowed = SCOPED_ENDPOINTS.get(g.token.scope)
    if allowed is not None and request.endpoint not in allowed:
        raise Forbidden(f"this token's scope is {g.token.scope!r}: it may only read /metrics", "token_scope")
    return None


def shell() -> str:
    """A page without its data: its script reads the token from sessionStorage and fetches this URL with it."""
    return render_template("shell.html")


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


def init_app(app: Flask) -> None:
    app.before_request(authenticate_request)

    @app.after_request
    def _vary(response: Any) -> Any:  # a page answers a shell or itself, by the Authorization header
        if is_page():
            response.headers["Vary"] = "Authorization"
            response.headers["Cache-Control"] = "no-store"
        return response

    @app.context_processor
    def _identity() -> dict[str, Any]:
        return {"current_user": g.get("user")}
