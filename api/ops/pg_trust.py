"""The reconciler's guard: a PostgreSQL that admits anyone without a password (a ``trust`` rule in
``pg_hba.conf``) holds every job's record and every user's token hash for whoever connects. The reconciler
refuses to go on with one, naming the rules and what to do."""

from __future__ import annotations

import logging

from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

log = logging.getLogger(__name__)

INSUFFICIENT_PRIVILEGE = "42501"


class TrustRuleError(RuntimeError):
    """The database admits connections without a password; the message names the rules and what to do."""


def trust_rules(engine: Engine) -> list[str] | None:
    """The ``trust`` rules in the server's ``pg_hba.conf`` as it is on disk now (edited but not yet reloaded
    included), one line each; None when this user may not read ``pg_hba_file_rules`` (only superusers and
    members of ``pg_read_all_settings`` may)."""
    try:
        with engine.connect() as conn:
            rows = conn.execute(text(
                "SELECT file_name, line_number, type, database, user_name, address FROM pg_hba_file_rules "
                "WHERE auth_method = 'trust' ORDER BY line_number")).all()
    except DBAPIError as exc:
        if getattr(exc.orig, "pgcode", None) == INSUFFICIENT_PRIVILEGE:
            return None
        raise
    return [f"{file}:{line}: {kind} database {','.join(dbs or [])} user {','.join(users or [])}"
            + (f" address {address}" if address else "") for file, line, kind, dbs, users, address in rows]


def refuse_trust(engine: Engine) -> None:
    """Raise ``TrustRuleError`` if the database has a ``trust`` rule; warn (once per process) if it cannot tell."""
    rules = trust_rules(engine)
    if rules is None:
        if not getattr(refuse_trust, "warned", False):
            refuse_trust.warned = True  # type: ignore[attr-defined]
            log.warning("cannot read pg_hba_file_rules as this database user (it needs pg_read_all_settings): "
                        "whether PostgreSQL admits connections without a password is not checked")
        return
    if rules:
        raise TrustRuleError(
            "PostgreSQL admits connections without a password (trust): " + "; ".join(rules) + ". Anyone who can "
            "connect could read every job and token hash, make themselves an admin and, as superuser, run "
            "programs. The reconciler stops here: change those lines of pg_hba.conf to scram-sha-256 and reload "
            "PostgreSQL (SELECT pg_reload_conf()); with make run's embedded server, someone else edited it: find "
            "out who, remove its data folder (make run prints where) and start again")
