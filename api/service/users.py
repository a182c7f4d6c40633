"""Users and their hashed bearer tokens (made by the operator's commands, checked on every request), and who may
act on a job: any user reads every job; only its owner or an admin changes it.

Tokens are ``tq_`` + 32 random bytes (URL-safe base64). Only their SHA-256 is stored: a token is as random
as a key, so a slow password hash would add nothing. Lookups go by hash, and the hash is compared again
in constant time. ``last_used_at`` is written at most once a minute per token.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import timedelta

from sqlalchemy import select, update

from api.record.status import utcnow
from api.record.tables import ApiToken, TrainingJob, User
from api.stores import db

TOKEN_PREFIX = "tq_"
TOKEN_BYTES = 32
LAST_USED_EVERY = timedelta(seconds=60)
SCOPES = ("all", "metrics")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")


class Forbidden(Exception):
    """A known user who may not do this: 403. ``code`` says which rule refused."""

    def __init__(self, message: str, code: str = "forbidden") -> None:
        super().__init__(message)
        self.message, self.code = message, code


class UserError(ValueError):
    """A management command that cannot be done as asked (unknown user, name taken, ...)."""



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
    touch(token)
    return token, None


def touch(token: ApiToken) -> None:
    """Record use, at most once a minute (one conditional UPDATE), so reads cost no write."""
    now = utcnow()
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_EVERY:
        db.session.execute(update(ApiToken).where(ApiToken.id == token.id).values(last_used_at=now))
        db.session.commit()


def can_act_on(user: User | None, job: TrainingJob) -> bool:
    """Its owner or an admin may act on a job. ``user`` None: an in-process caller (the CLI, the reconciler), for
    which nothing is checked here (every web request has a user: ``api.web.auth``)."""
    return user is None or user.is_admin or job.owner_id == user.id


def check_owner(user: User | None, job: TrainingJob) -> None:
    if can_act_on(user, job):
        return
    owner = job.owner.name if job.owner else "another user"
    raise Forbidden(f"job {job.id} belongs to {owner}: only its owner or an admin may change it", "not_owner")
