"""``make run`` in one process: embedded Redis/PostgreSQL when no URLs are given (``api.dev.servers``), then the
API (under gunicorn: ``api.dev.serving``), a worker and the reconciler as supervised children (a child that dies
is restarted), all stopped cleanly on Ctrl-C or SIGTERM."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from api.dev.servers import (
    EmbeddedServerError,
    PostgresServer,
    RedisServer,
    mask,
    own_folder,
    read_secret,
    write_private,
)

log = logging.getLogger("trainq.local")


class Child:
    """A supervised child process; restarted when it dies unless we are shutting down."""

    def __init__(self, name: str, args: list[str], env: dict[str, str]) -> None:
        self.name, self.args, self.env = name, args, env
        self.process: subprocess.Popen | None = None
        self.restarts = 0

    def start(self) -> None:
        self.process = subprocess.Popen(self.args, env=self.env, start_new_session=True)
        log.info("started %s (pid %s)", self.name, self.process.pid)

    def stop(self, timeout: float = 10.0) -> None:
        if not self.process or self.process.poll() is not None:
            return
        # RQ: the first SIGTERM is a warm shutdown (finish the job), the second a cold one (kill the horse).
        for _ in range(2):
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(1.0)
                return
            except subprocess.TimeoutExpired:
                pass
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def _flask(*args: str) -> list[str]:
    return [sys.executable, "-m", "flask", "--app", "api", *args]


def run(var_dir: Path = Path("var")) -> int:
    """Start everything, print where it is, supervise until Ctrl-C / SIGTERM, then stop it all."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s [make run] %(message)s")
    servers: list[RedisServer | PostgresServer] = []
    try:
        return supervise(start_servers(var_dir.absolute(), servers), var_dir.absolute())
    except EmbeddedServerError as exc:
        log.error("%s", exc)  # says why and what to do: no traceback
        return 1
    finally:
        for server in reversed(servers):
            server.stop()


LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def allowed_hosts_for(host: str) -> str:
    """make run's ``ALLOWED_HOSTS``: the loopback names, and the address it binds when that is a name or an
    address of its own (``0.0.0.0`` binds everything but names nothing: set ALLOWED_HOSTS for those names)."""
    extra = [] if host in (*LOOPBACK_NAMES, "0.0.0.0", "::") else [host]
    return ",".join([*LOOPBACK_NAMES, *extra])


def start_servers(var_dir: Path, servers: list[RedisServer | PostgresServer]) -> dict[str, str]:
    """The embedded servers that no URL replaces, their passwords kept in ``var/`` (mode 0600); the
    environment the children get. ``var/local.env`` (0600) has the URLs for other commands."""
    env = dict(os.environ)
    own_folder(var_dir, "make run's folder")
    if not env.get("REDIS_URL"):
        redis = RedisServer(var_dir / "redis", password=read_secret(var_dir / "redis.password"))
        servers.append(redis.start())
        env["REDIS_URL"] = redis.url
        log.info("embedded Redis at %s (its log in %s)", mask(redis.url), redis.data_dir)
    if not env.get("DATABASE_URL"):
        postgres = PostgresServer(var_dir / "postgres", fsync=True, password=read_secret(var_dir / "postgres.password"))
        servers.append(postgres.start())
        env["DATABASE_URL"] = postgres.create_database("trainq")
        who = f", running as {postgres.account.pw_name}" if postgres.account else ""
        log.info("embedded PostgreSQL at %s (data in %s%s; its log in %s)", mask(env["DATABASE_URL"]),
                 postgres.home / "pgdata", who, postgres.log_path)
    env.setdefault("CHECKPOINT_DIR", str(var_dir / "checkpoints"))
    env.setdefault("ARTIFACT_DIR", str(var_dir / "artifacts"))
    if not env.get("ALLOWED_HOSTS"):
        env["ALLOWED_HOSTS"] = allowed_hosts_for(env.get("HOST", "127.0.0.1"))
    write_private(var_dir / "local.env", "".join(
        f"{k}={env[k]}\n" for k in ("REDIS_URL", "DATABASE_URL", "CHECKPOINT_DIR", "ARTIFACT_DIR")))
    return env


def login_url(base: str, token: str) -> str:
    """The monitor's login link, Jupyter style. The token rides in the #fragment: browsers never send it, so
    it reaches no access log; the login page's script posts it."""
    return f"{base}/login#token={token}"


def banner(base: str, token: str, token_file: Path, tty: bool) -> str:
    """What ``make run`` prints at start. The login link carries the admin's token: it goes only to a terminal,
    never to a file or pipe that stdout was redirected to (a log someone else may read); there, where the token
    file is instead."""
    if tty:
        monitor = (f"{login_url(base, token)}\n              (logs you in as the admin; the token is in "
                   f"{token_file}, mode 0600)")
    else:
        monitor = (f"{base}/login\n              (log in with the admin's token, kept in {token_file}, mode 0600; "
                   "stdout is not a terminal, so no login link with the token is printed)")
    return (
        f"\n  Monitor:    {monitor}\n"
        f"  API:        {base}/api/training (send Authorization: Bearer <token>)\n"
        f"  Health:     {base}/api/health\n"
        f"  Dashboard:  {base}/rq\n  Servers:    var/local.env (source it to run more workers)\n\n"
        f"  Submit a first job:\n    curl -s -X POST {base}/api/training -H 'Content-Type: application/json' \\\n"
        f"      -H \"Authorization: Bearer $(cat var/admin.token)\" \\\n"
        f"      -d '{{\"name\": \"first\", \"task\": \"mlp\", \"params\": {{\"epochs\": 20}}}}'\n\n"
        f"  Tasks on offer: {base}/api/tasks\n\n"
        "  Ctrl-C stops everything.\n"
    )


def supervise(env: dict[str, str], var_dir: Path = Path("var")) -> int:
    from api.dev.serving import gunicorn_command  # gunicorn, not Werkzeug's development server

    port = env.get("PORT", "5000")
    host = env.get("HOST", "127.0.0.1")
    token_file = var_dir / "admin.token"
    children: list[Child] = []
    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        subprocess.run(_flask("db", "upgrade"), env=env, check=True)
        subprocess.run(_flask("users", "local-admin", str(token_file)), env=env, check=True)
        token = read_secret(token_file)
        children = [
            Child("api", gunicorn_command("api.wsgi:app", host, port), env),
            Child("worker", _flask("worker"), env),
            Child("reconciler", _flask("reconciler"), env),
        ]
        for child in children:
            child.start()
        base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
        print(banner(base, token, token_file, sys.stdout.isatty()), flush=True)
        while not stopping:
            for child in children:
                if child.process and child.process.poll() is not None and not stopping:
                    child.restarts += 1
                    log.warning("%s exited with %s; restarting (restart #%d)", child.name,
                                child.process.returncode, child.restarts)
                    time.sleep(min(child.restarts, 5))
                    child.start()
            time.sleep(0.5)
    finally:
        log.info("stopping")
        for child in reversed(children):
            child.stop()
    return 0
