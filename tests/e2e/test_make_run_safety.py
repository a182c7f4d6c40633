"""``make run`` from a clone in a private folder (mode 700, as a home or ``mktemp -d`` is) and in a 755 one:
its embedded servers start and admit only this project, no folder outside the project changes mode or
owner, no secret is printed, and links planted in the folders it owns are never followed."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import psycopg2
import pytest
import redis as redis_py

from api.dev.servers import free_port
from tests.integration.test_startup import _get
from tests.support import REPO, wait_for

ROOT = os.geteuid() == 0
SECRET_FILES = ("local.env", "redis.password", "postgres.password", "admin.token")


def _modes(paths: list[Path]) -> dict[str, tuple[int, int, int]]:
    return {str(p): (st.st_mode, st.st_uid, st.st_gid) for p in paths for st in [p.lstat()]}


def _watched(*paths: Path) -> list[Path]:
    """Every folder from each of ``paths`` up to /."""
    return sorted({q for p in paths for q in (p, *p.parents)})


@pytest.fixture
def pg_home() -> Iterator[Path]:
    """A TRAINQ_PG_HOME of the test's own (used when root), removed afterwards."""
    path = Path(tempfile.gettempdir()) / f"trainq-test-pghome-{uuid.uuid4().hex[:8]}"
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def private_top() -> Iterator[Path]:
    top = Path(tempfile.mkdtemp(prefix="trainq-clone-"))  # mode 700, as mktemp -d makes it
    yield top
    shutil.rmtree(top, ignore_errors=True)


class MakeRun:
    """``python -m api.dev`` (what ``make run`` runs after installing) in ``project``."""

    def __init__(self, project: Path, pg_home: Path) -> None:
        self.project, self.port, self.output = project, free_port(), project.parent / "make-run.out"
        env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL", "CHECKPOINT_DIR")}
        self.env = {**env, "PORT": str(self.port), "TRAINQ_PG_HOME": str(pg_home)}

    def start(self) -> subprocess.Popen:
        with open(self.output, "ab") as out:
            self.process = subprocess.Popen([sys.executable, "-m", "api.dev"], cwd=self.project, env=self.env,
                                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        return self.process

    def wait_up(self) -> None:
        def up() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"make run exited with {self.process.returncode}:\n{self.read()}")
            try:
                token = (self.project / "var" / "admin.token").read_text().strip()
                return _get(f"http://127.0.0.1:{self.port}/api/health", token)["workers"] >= 1  # its agent's
            except OSError:
                return False

        wait_for(up, 180, "make run's API with its agent's workers")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            raise

    def read(self) -> str:
        return self.output.read_text(errors="replace")


def _readme_quick_start_submits(run: MakeRun) -> None:
    """The README's first curl, as written (its token read from var/admin.token), on this run's port."""
    readme = (REPO / "README.md").read_text()
    command = re.search(r"```sh\n(curl -sS -X POST http://127\.0\.0\.1:5000/api/training .*?)```", readme,
                        re.S).group(1)
    assert "$(cat var/admin.token)" in command
    result = subprocess.run(["bash", "-c", command.replace(":5000/", f":{run.port}/")], cwd=run.project,
                            capture_output=True, text=True, timeout=30)
    body = json.loads(result.stdout)
    assert body["job"]["name"] == "first" and body["job"]["owner"] == "admin", body


def _start_and_check(run: MakeRun) -> dict[str, str]:
    """Start, check the secrets and that the servers refuse strangers, stop; the secrets it kept."""
    var = run.project / "var"
    run.start()
    try:
        run.wait_up()
        for name in SECRET_FILES:
            st = (var / name).lstat()
            assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.geteuid()
        urls = dict(line.split("=", 1) for line in (var / "local.env").read_text().splitlines())
        redis_url, db_url = urlparse(urls["REDIS_URL"]), urlparse(urls["DATABASE_URL"])
        with pytest.raises(redis_py.exceptions.AuthenticationError):
            redis_py.Redis(port=redis_url.port, socket_timeout=3).ping()
        assert redis_py.Redis.from_url(urls["REDIS_URL"], socket_timeout=3).ping()
        with pytest.raises(psycopg2.OperationalError, match="password"):
            psycopg2.connect(f"postgresql://postgres@127.0.0.1:{db_url.port}/trainq", connect_timeout=3)
        psycopg2.connect(urls["DATABASE_URL"], connect_timeout=3).close()
        _readme_quick_start_submits(run)
    finally:
        assert run.stop() == 0, run.read()
    output = run.read()
    kept = {name: (var / name).read_text().strip()
            for name in ("redis.password", "postgres.password", "admin.token")}
    for name in ("redis.password", "postgres.password", "admin.token"):
        assert kept[name] not in output  # stdout is a file here: the login link goes only to a terminal
    assert f"http://127.0.0.1:{run.port}/login\n" in output and f"kept in {var / 'admin.token'}" in output
    assert "redis://:***@127.0.0.1" in output and "postgresql://postgres:***@127.0.0.1" in output
    return kept


def test_make_run_in_a_755_folder(private_top, pg_home):
    private_top.chmod(0o755)
    project = private_top / "clone"
    project.mkdir()
    watched = _watched(project, pg_home.parent)
    before = _modes(watched)
    _start_and_check(MakeRun(project, pg_home))
    assert _modes(watched) == before


def test_make_run_in_a_private_folder_follows_no_link_and_changes_no_mode(private_top, pg_home):
    assert stat.S_IMODE(private_top.stat().st_mode) == 0o700
    project = private_top / "clone"
    project.mkdir()
    watched = _watched(project, pg_home.parent)
    before = _modes(watched)
    run = MakeRun(project, pg_home)
    first = _start_and_check(run)
    assert _modes(watched) == before

    var = project / "var"
    owned = [var, var / "redis", var / "postgres"]
    if ROOT:  # PostgreSQL runs as an unprivileged account, in a folder of its own outside the project
        [home] = pg_home.glob("pg-*")
        pgdata = (home / "pgdata").lstat()
        assert pgdata.st_uid != 0 and stat.S_IMODE(pgdata.st_mode) == 0o700
        assert "running as trainq-pg" in run.read()
        # every folder the service made and chowned or chmodded: planted links must never be followed
        owned += [home, home / "pgdata", home / "socket", home / "pginstall",
                  *[Path(root) for root, _, _ in os.walk(home / "pginstall")]]
        (home / "pginstall" / ".copied-from").write_text("stale\n")  # the next start copies the binaries again
    else:
        owned += [var / "postgres" / "pgdata", var / "postgres" / "socket"]
    victims = Path(tempfile.mkdtemp(prefix="trainq-victim-"))
    try:
        victim = victims / "precious"
        victim.write_text("precious\n")
        victim.chmod(0o600)
        for i, folder in enumerate(owned):
            (folder / f"planted-{i}").symlink_to(victim)
        victim_before = victim.lstat()

        assert _start_and_check(run) == first  # the same secrets, the same cluster
        assert _modes(watched) == before

        # links where the service writes its own files: refused, with what to do, and no traceback
        (var / "postgres" / "postgres.log").unlink()
        (var / "postgres" / "postgres.log").symlink_to(victim)
        run.output.unlink()
        run.start()
        assert run.process.wait(120) == 1
        output = run.read()
        assert "postgres.log is a symbolic link; remove it" in output and "Traceback" not in output, output

        victim_after = victim.lstat()
        assert victim.read_text() == "precious\n"
        assert (victim_after.st_mode, victim_after.st_uid, victim_after.st_gid) == \
            (victim_before.st_mode, victim_before.st_uid, victim_before.st_gid)
        assert sorted(p.name for p in victims.iterdir()) == ["precious"]
    finally:
        shutil.rmtree(victims, ignore_errors=True)
    assert _modes(watched) == before
