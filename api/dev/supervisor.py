"""``make run`` in one process: embedded Redis/PostgreSQL when no URLs are given (``api.dev.servers``), then the
API (under gunicorn: ``api.dev.serving``), a worker and the reconciler as supervised children (a child that dies
is restarted), all stopped cleanly on Ctrl-C or SIGTERM."""

from __future__ import annotations

import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from api.dev import readiness
from api.dev.logs import LOG_FILES, Echo, open_log
from api.dev.servers import (
    EmbeddedServerError,
    PostgresServer,
    RedisServer,
    keep_port,
    mask,
    own_folder,
    previous_port,
    read_secret,
    write_private,
)

log = logging.getLogger("trainq.local")


class Child:
    """A supervised child process; restarted when it dies unless we are shutting down. Its stdout and stderr go
    to ``log_path`` (``var/log/``) when given. ``make_args`` gives its command line at each start."""

    def __init__(self, name: str, make_args: Callable[[], list[str]], env: dict[str, str],
                 log_path: Path | None = None) -> None:
        self.name, self.make_args, self.env, self.log_path = name, make_args, env, log_path
        self.process: subprocess.Popen | None = None
        self.restarts = 0

    def start(self) -> None:
        fd = open_log(self.log_path) if self.log_path else None
        try:
            self.process = subprocess.Popen(self.make_args(), env=self.env, start_new_session=True,
                                            stdin=subprocess.DEVNULL, stdout=fd, stderr=fd)
        finally:
            if fd is not None:
                os.close(fd)
        log.info("started %s (pid %s)%s", self.name, self.process.pid,
                 f"; its output in {self.log_path}" if self.log_path else "")

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
    # its own lines at INFO (starts and stops); the libraries it imports only from WARNING on
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s [make run] %(message)s")
    log.setLevel(logging.INFO)
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
    ports = var_dir / "ports.json"  # each server's port at the last start, taken again when free
    if not env.get("REDIS_URL"):
        redis = RedisServer(var_dir / "redis", port=previous_port(ports, "redis"),
                            password=read_secret(var_dir / "redis.password"))
        servers.append(redis.start())
        keep_port(ports, "redis", redis.port)
        env["REDIS_URL"] = redis.url
        log.info("embedded Redis at %s (its log in %s)", mask(redis.url), redis.data_dir)
    if not env.get("DATABASE_URL"):
        postgres = PostgresServer(var_dir / "postgres", port=previous_port(ports, "postgres"), fsync=True,
                                  password=read_secret(var_dir / "postgres.password"))
        servers.append(postgres.start())
        keep_port(ports, "postgres", postgres.port)
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
    """What ``make run`` prints once it is ready (``readiness``). The login link carries the admin's token: it goes
    only to a terminal, never to a file or pipe that stdout was redirected to (a log someone else may read); there,
    where the token file is instead."""
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
        f"  Dashboard:  {base}/rq\n  Servers:    var/local.env (source it to run more workers)\n"
        f"  Logs:       var/log/ (access log, job output, every process's lines; `make logs` follows them)\n\n"
        f"  Submit a first job:\n    curl -sS -X POST {base}/api/training -H 'Content-Type: application/json' \\\n"
        f"      -H \"Authorization: Bearer $(cat var/admin.token)\" \\\n"
        f"      -d '{{\"name\": \"first\", \"task\": \"mlp\", \"params\": {{\"epochs\": 20}}}}'\n\n"
        f"  Tasks on offer: {base}/api/tasks\n"
        "  Edited a task? `make reload` restarts only the worker, which imports it again.\n\n"
        "  Ctrl-C stops everything.\n"
    )


def ready_line(tasks: list[str], again: bool) -> str:
    """The line that says ``make run`` is ready, first (after the banner) or again (after a reload or a restart)."""
    what = "worker ready again" if again else "ready"
    return f"{what}: the API answers and the worker offers {', '.join(tasks)}"


def agent_name() -> str:
    """A new name for each agent make run starts: its readiness is that agent's own published tasks."""
    return f"local-{secrets.token_hex(3)}"


def say_starting(env: dict[str, str], agent: str) -> None:
    """Before the agent's process even starts: it is starting (the agent renews this until it has published),
    so a submit of a task it may offer is "retry in a few seconds", not "unknown task"."""
    from redis import Redis
    from redis.exceptions import RedisError

    from api.queue import STARTING_TTL, starting_key

    try:
        Redis.from_url(env["REDIS_URL"], socket_timeout=2, socket_connect_timeout=2).set(
            starting_key(agent), "make run", ex=STARTING_TTL)
    except RedisError as exc:
        log.warning("could not say in Redis that the worker is starting (%s)", exc.__class__.__name__)


def _run_logged(args: list[str], env: dict[str, str], log_path: Path) -> None:
    """Run a setup command (migrations), its output to ``log_path``; on failure, its last lines to the terminal."""
    start = log_path.stat().st_size if log_path.exists() else 0
    fd = open_log(log_path)
    try:
        code = subprocess.run(args, env=env, stdin=subprocess.DEVNULL, stdout=fd, stderr=fd).returncode
    finally:
        os.close(fd)
    if code:
        with open(log_path, "rb") as file:
            file.seek(start)
            tail = file.read().decode(errors="replace").strip().splitlines()[-15:]
        raise subprocess.CalledProcessError(code, args, "\n".join(tail))


def has_terminal() -> bool:
    """Whether this process still has its controlling terminal: a SIGHUP is a request to reload the worker, unless
    it comes because the terminal make run ran in was closed."""
    try:
        fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    except OSError:
        return False
    try:
        os.tcgetpgrp(fd)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


WAIT_WARNING = 120  # s: past this without being ready, make run says what it waits for and where to look


def supervise(env: dict[str, str], var_dir: Path = Path("var")) -> int:
    from api.dev.serving import gunicorn_command  # gunicorn, not Werkzeug's development server

    port = env.get("PORT", "5000")
    host = env.get("HOST", "127.0.0.1")
    token_file = var_dir / "admin.token"
    logs = own_folder(var_dir / "log", "make run's logs")
    log_paths = {name: logs / file for name, file in LOG_FILES.items()}
    children: list[Child] = []
    stopping = reload = False
    agent = agent_name()
    echo = Echo({name: path for name, path in log_paths.items() if name != "access"})

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    had_terminal = has_terminal()

    def request_reload(signum: int, _frame: object) -> None:
        nonlocal reload, stopping
        if had_terminal and not has_terminal():  # the terminal closed (a hang-up): stop, as before
            stopping = True
        else:
            reload = True

    def new_agent() -> None:
        """A new name for the next worker, said to be starting before anything else happens (a reload's submits
        of a task it adds are "retry soon" from now on)."""
        nonlocal agent
        agent = agent_name()
        say_starting(env, agent)

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGHUP, request_reload)
    try:
        try:
            _run_logged(_flask("db", "upgrade"), env, log_paths["api"])
        except subprocess.CalledProcessError as exc:
            log.error("the database migration failed (exit %s); its last lines, from %s:\n%s", exc.returncode,
                      log_paths["api"], exc.output)
            return 1
        subprocess.run(_flask("users", "local-admin", str(token_file)), env=env, check=True)
        token = read_secret(token_file)
        os.close(open_log(log_paths["access"]))  # made ours (0600, never a link) before gunicorn appends to it
        write_private(var_dir / "make-run.pid", f"{os.getpid()}\n")  # `make reload` signals it
        worker = Child("worker", lambda: _flask("worker", "--name", agent), env, log_paths["worker"])
        children = [
            Child("api", lambda: gunicorn_command("api.wsgi:app", host, port,
                                                  access_log=str(log_paths["access"])), env, log_paths["api"]),
            worker,
            Child("reconciler", lambda: _flask("reconciler"), env, log_paths["reconciler"]),
        ]
        echo.start()
        new_agent()
        for child in children:
            child.start()
        connect = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        base = f"http://{f'[{connect}]' if ':' in connect else connect}:{port}"
        probe_as = readiness.host_header(env.get("ALLOWED_HOSTS", ""), port)
        log.info("waiting for the API to answer and the worker to publish its tasks (`make logs` shows their logs)")
        ready, announced, waiting_since, warned = False, False, time.monotonic(), False
        while not stopping:
            if reload:
                reload, ready, waiting_since, warned = False, False, time.monotonic(), False
                log.info("SIGHUP: restarting the worker (it imports its task modules again); a job it runs now is "
                         "stopped as a lost worker's is")
                new_agent()
                worker.stop()
                worker.start()
            for child in children:
                if child.process and child.process.poll() is not None and not stopping:
                    child.restarts += 1
                    log.warning("%s exited with %s; restarting (restart #%d; its log: %s)", child.name,
                                child.process.returncode, child.restarts, child.log_path)
                    time.sleep(min(child.restarts, 5))
                    if child is worker:
                        new_agent()
                        ready, waiting_since, warned = False, time.monotonic(), False
                    child.start()
            if not ready and readiness.api_answers(base, probe_as):
                tasks = readiness.published_tasks(base, token, agent, probe_as)
                if tasks:
                    ready = True
                    if not announced:
                        print(banner(base, token, token_file, sys.stdout.isatty()), flush=True)
                    print(ready_line(tasks, again=announced), flush=True)
                    announced = True
            if not ready and not warned and time.monotonic() - waiting_since > WAIT_WARNING:
                warned = True
                log.warning("not ready after %d s: still waiting for the API and the worker (its log: %s)",
                            WAIT_WARNING, log_paths["worker"])
            time.sleep(0.5)
    finally:
        log.info("stopping")
        for child in reversed(children):
            child.stop()
        if echo.is_alive():
            echo.stop()
        (var_dir / "make-run.pid").unlink(missing_ok=True)
    return 0
