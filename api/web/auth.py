"""Who is asking, and what they may do: users, hashed bearer tokens, the monitor's session login, CSRF, and the
checks every request passes.

- Every request needs a user (``Authorization: Bearer <token>``, or the monitor's session cookie made by
  logging in with a token), except the endpoints in ``PUBLIC_ENDPOINTS``. The check runs before every
  request (``authenticate_request``), so a new route is closed until someone adds it to that list.
- A state-changing request made with the session cookie must carry the session's CSRF token
  (``X-CSRF-Token`` header, or a ``csrf_token`` form field); one with a bearer token needs none (no browser
  adds that header by itself).
- Any user reads every job; only its owner or an admin changes it (``check_owner``). Admins alone reach
  /rq, /metrics and the cleanup endpoint (``admin_required``); a token with scope ``metrics`` reads /metrics
  and nothing else (what Prometheus sends).

Tokens are ``tq_`` + 32 random bytes (URL-safe base64). Only their SHA-256 is stored: a token is as random
as a key, so a slow password hash would add nothing. Lookups go by hash, and the hash is compared again
in constant time. ``last_used_at`` is written at most once a minute per token.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable
from datetime import timedelta
from functools import wraps
from typing import TYPE_CHECKING, Any, TypeVar

from flask import Flask, g, has_request_context, redirect, request, session, url_for
from flask.sessions import SecureCookieSessionInterface
from sqlalchemy import select, update

from api.record.status import utcnow
from api.record.tables import ApiToken, User
from api.stores import db

if TYPE_CHECKING:
    from api.record.tables import TrainingJob

TOKEN_PREFIX = "tq_"
TOKEN_BYTES = 32
LAST_USED_EVERY = timedelta(seconds=60)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "X-CSRF-Token"
SCOPES = ("all", "metrics")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")

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


class Forbidden(Exception):
    """A known user who may not do this: 403. ``code`` says which rule refused."""

    def __init__(self, message: str, code: str = "forbidden") -> None:
        super().__init__(message)
        self.message, self.code = message, code


class UserError(ValueError):
    """A management command that cannot be done as asked (unknown user, name taken, ...)."""


# ---------------------------------------------------------------- users and tokens


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def create_user(name: str, admin: bool = False, max_queued_jobs: int | None = None,
                job_disk_limit_mb: int | None = None) -> User:
    if not NAME.fullmatch(name):
        raise UserError(f"{name!r}: a user name is 1 to 64 letters, digits, '_', '.', '@' or '-'")
    if db.session.scalar(select(User).where(User.name == name)) is not None:
        raise UserError(f"there is already a user named {name}")
    user = User(name=name, is_admin=admin, disabled=False, max_queued_jobs=max_queued_jobs,
                job_disk_limit_mb=job_disk_limit_mb, created_at=utcnow())
    db.session.add(user)
    db.session.commit()
    return user


def find_user(name: str) -> User:
    user = db.session.scalar(select(User).where(User.name == name))
    if user is None:
        raise UserError(f"no user named {name}")
    return user


def list_users() -> list[User]:
    return list(db.session.scalars(select(User).order_by(User.id)))


def first_admin() -> User | None:
    return db.session.scalar(select(User).where(User.is_admin, ~User.disabled).order_by(User.id).limit(1))


def set_disabled(name: str, disabled: bool) -> User:
    """Disabled, the user's tokens and sessions stop working at once (enabled again, those neither revoked nor
    expired work again); their jobs stay, and stay theirs."""
    user = find_user(name)
    user.disabled = disabled
    db.session.commit()
    return user


def create_token(user: User, name: str = "token", expires_in_days: float | None = None,
                 scope: str = "all") -> tuple[ApiToken, str]:
    """A new token for ``user``: the row (hash only) and the token itself, which is never stored."""
    if scope not in SCOPES:
        raise UserError(f"scope must be one of {', '.join(SCOPES)}")
    if expires_in_days is not None and expires_in_days <= 0:
        raise UserError("--expires-in must be a positive number of days")
    raw = TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
    now = utcnow()
    token = ApiToken(user_id=user.id, name=name[:100], token_hash=hash_token(raw), scope=scope, created_at=now,
                     expires_at=now + timedelta(days=expires_in_days) if expires_in_days is not None else None)
    db.session.add(token)
    db.session.commit()
    return token, raw


def list_tokens(user: User) -> list[ApiToken]:
    return list(db.session.scalars(select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.id)))


def revoke_token(token_id: int) -> ApiToken:
    token = db.session.get(ApiToken, token_id)
    if token is None:
        raise UserError(f"no token with id {token_id}")
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        db.session.commit()
    return token


def refusal(token: ApiToken | None) -> str | None:
    """Why ``token`` cannot be used now, or None when it can."""
    if token is None:
        return "unknown token"
    if token.revoked_at is not None:
        return "the token was revoked"
    if token.expires_at is not None and token.expires_at <= utcnow():
        return "the token has expired"
    if token.user.disabled:
        return f"user {token.user.name} is disabled"
    return None


def check_token(raw: str) -> tuple[ApiToken | None, str | None]:
    """The token ``raw`` names if it may be used now, else (None, why)."""
    digest = hash_token(raw)
    token = db.session.scalar(select(ApiToken).where(ApiToken.token_hash == digest)) if len(raw) <= 256 else None
    if token is not None and not hmac.compare_digest(token.token_hash, digest):
        token = None
    why = refusal(token)
    if why:
        return None, why
    assert token is not None
    _touch(token)
    return token, None


def _touch(token: ApiToken) -> None:
    """Record use, at most once a minute (one conditional UPDATE), so reads cost no write."""
    now = utcnow()
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_EVERY:
        db.session.execute(update(ApiToken).where(ApiToken.id == token.id).values(last_used_at=now))
        db.session.commit()


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
            token, why = check_token(raw.strip())
            if token is not None:
                g.user, g.token, g.via = token.user, token, "bearer"
    elif "token_id" in session:
        token = db.session.get(ApiToken, session["token_id"])
        if refusal(token) is None and token is not None and token.scope == "all" and not _logged_out(token):
            _touch(token)
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


def can_act_on(job: TrainingJob) -> bool:
    """Outside a request (the CLI, the reconciler, in-process callers) nothing is checked here."""
    if not has_request_context():
        return True
    user = g.get("user")
    return user is not None and (user.is_admin or job.owner_id == user.id)


def check_owner(job: TrainingJob) -> None:
    if can_act_on(job):
        return
    if g.get("user") is None:
        raise Unauthorized("authentication required")
    owner = job.owner.name if job.owner else "another user"
    raise Forbidden(f"job {job.id} belongs to {owner}: only its owner or an admin may change it", "not_owner")


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
