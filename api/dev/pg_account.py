"""The account the embedded PostgreSQL runs as under a root ``make run``: one made for it alone.

Whoever runs as the account that owns a cluster's files can edit its ``pg_hba.conf``, signal the server to
reload it, connect as superuser and run programs (``COPY ... TO PROGRAM``), and make themselves a trainq admin.
``nobody`` is what many daemons run as, so ``make run`` creates ``trainq-pg`` (``useradd --system``, no login
shell, no home) and refuses an account that other processes run as or that owns files elsewhere, unless
``TRAINQ_PG_USER`` names it on purpose, which is then used with a warning.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import subprocess
import time
from pathlib import Path

from api.dev.errors import EmbeddedServerError

log = logging.getLogger("trainq.local")

PG_ACCOUNT_ENV = "TRAINQ_PG_USER"
DEFAULT_ACCOUNT = "trainq-pg"
SHARED_NAMES = ("nobody", "nfsnobody", "daemon")
NOBODY_UID = 65534
SHARED_FOLDERS = ("/tmp", "/var/tmp", "/dev/shm", "/run", "/var/mail", "/var/spool/cron/crontabs")


def _error(message: str) -> Exception:
    return EmbeddedServerError(message)


def _ours(exe: str) -> bool:
    """A process of a trainq cluster: a PostgreSQL binary from the copy in a trainq home (``.../pginstall/``)."""
    return "/pginstall/" in exe and os.path.basename(exe.removesuffix(" (deleted)")) in ("postgres", "initdb")


def _exe(pid: str) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""


def why_shared(account: pwd.struct_passwd) -> str | None:
    """Why ``account`` is not trainq's alone (the first reason found), or None. Looks at what can be seen cheaply:
    its name, the processes running as it (other than trainq's clusters), its home folder, and what it owns at
    the top of the folders every account writes in (temporary folders, mail, crontabs)."""
    if account.pw_name in SHARED_NAMES or account.pw_uid == NOBODY_UID:
        return f"{account.pw_name} is what many daemons run as"
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/status") as status:
                fields = dict(line.split(":", 1) for line in status if ":" in line)
            if str(account.pw_uid) not in fields["Uid"].split():
                continue
            exe = os.readlink(f"/proc/{entry.name}/exe")
        except (OSError, KeyError, ValueError):
            continue
        if not _ours(exe) and not _ours(_exe(fields.get("PPid", "").strip())):  # initdb's shell is its own
            return f"process {entry.name} ({exe}) runs as it"
    home = Path(account.pw_dir or "/nonexistent")
    try:
        if home != Path("/") and home.lstat().st_uid == account.pw_uid:
            return f"it owns the folder {home}"
    except OSError:
        pass
    for folder in SHARED_FOLDERS:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            if folder == "/dev/shm" and entry.name.startswith("PostgreSQL."):
                continue  # a running cluster's dynamic shared memory
            try:
                if entry.stat(follow_symlinks=False).st_uid == account.pw_uid:
                    return f"it owns {entry.path}"
            except OSError:
                continue
    return None


def _create(name: str) -> pwd.struct_passwd:
    useradd = shutil.which("useradd") or next((p for p in ("/usr/sbin/useradd", "/sbin/useradd") if os.path.exists(p)),
                                              None)
    if not useradd:
        raise _error(f"PostgreSQL refuses to run as root, and there is neither an account {name!r} for it nor "
                     f"useradd to create one: create a system account for PostgreSQL alone (e.g. `adduser --system "
                     f"{name}`), or set DATABASE_URL to a PostgreSQL server of your own")
    shell = next((s for s in ("/usr/sbin/nologin", "/sbin/nologin") if os.path.exists(s)), "/bin/false")
    result = None
    for _ in range(10):  # another make run may be creating it right now (/etc/passwd is locked meanwhile)
        try:
            return pwd.getpwnam(name)
        except KeyError:
            pass
        result = subprocess.run(
            [useradd, "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
             "--shell", shell, "--comment", "trainq's embedded PostgreSQL", name],
            capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if result.returncode == 0:
            log.info("created the system account %s for the embedded PostgreSQL (no login shell, no home)", name)
            return pwd.getpwnam(name)
        time.sleep(0.5)
    try:
        return pwd.getpwnam(name)
    except KeyError:
        why = (result.stderr or result.stdout).strip() if result else ""
        raise _error(f"could not create the account {name} for PostgreSQL (useradd: {why}): create it yourself "
                     f"(`useradd --system --user-group --shell {shell} {name}`), or set DATABASE_URL") from None


def service_account() -> pwd.struct_passwd:
    """The account PostgreSQL runs as when we are root: ``TRAINQ_PG_USER`` as named (a warning if it is shared),
    else ``trainq-pg``, created if missing and refused if something else uses it."""
    chosen = os.environ.get(PG_ACCOUNT_ENV)
    if chosen:
        try:
            account = pwd.getpwnam(chosen)
        except KeyError:
            raise _error(f"{PG_ACCOUNT_ENV}={chosen}: there is no such account. Unset {PG_ACCOUNT_ENV} (make run "
                         f"creates {DEFAULT_ACCOUNT}), name an existing unprivileged account, or set DATABASE_URL "
                         "to a PostgreSQL server of your own") from None
    else:
        account = _create(DEFAULT_ACCOUNT)
    if account.pw_uid == 0:
        raise _error(f"{PG_ACCOUNT_ENV}={account.pw_name} is root; PostgreSQL needs an unprivileged account")
    shared = why_shared(account)
    if shared and chosen:
        log.warning("%s=%s is a shared account (%s): whatever runs as it can rewrite PostgreSQL's pg_hba.conf and "
                    "reach every job's data as superuser. Unset %s to have make run create %s for PostgreSQL "
                    "alone", PG_ACCOUNT_ENV, chosen, shared, PG_ACCOUNT_ENV, DEFAULT_ACCOUNT)
    elif shared:
        raise _error(f"the account {account.pw_name} that PostgreSQL would run as is not trainq's alone ({shared}): "
                     "whatever runs as it could rewrite PostgreSQL's pg_hba.conf and reach every job's data. Remove "
                     f"what else uses it, or set {PG_ACCOUNT_ENV} to an account made for PostgreSQL alone (setting "
                     "it to a shared one is allowed, with a warning), or set DATABASE_URL")
    return account
