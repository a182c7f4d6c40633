"""Under root, the embedded PostgreSQL runs as an account made for it alone (``trainq-pg``): ``nobody``, or an
account other processes run as or that owns files elsewhere, is refused unless ``TRAINQ_PG_USER`` names it on
purpose (then used, with a warning); a cluster left by another account is refused with what to do. And the
reconciler refuses to go on while PostgreSQL has a ``trust`` rule."""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from api.dev import pg_account
from api.dev.servers import EmbeddedServerError, PostgresServer
from tests.support import REPO

ROOT = os.geteuid() == 0
root_only = pytest.mark.skipif(not ROOT, reason="the service account is only used when running as root")


@pytest.fixture
def throwaway_account():
    """A system account of the test's own, deleted afterwards."""
    name = f"tq-t-{uuid.uuid4().hex[:8]}"
    subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                    "--shell", "/usr/sbin/nologin", name], check=True, capture_output=True)
    yield pwd.getpwnam(name)
    subprocess.run(["userdel", name], capture_output=True)


@root_only
def test_as_root_postgres_runs_as_a_system_account_of_its_own(postgres_server):
    account = postgres_server.account
    assert account.pw_name == "trainq-pg"
    assert account.pw_shell in ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false")
    assert 0 < account.pw_uid < 1000 and not os.path.exists(account.pw_dir)
    assert pg_account.why_shared(account) is None  # its clusters' processes and shared memory are trainq's


@root_only
def test_nobody_is_refused_unless_named_on_purpose_then_used_with_a_warning(monkeypatch, caplog):
    monkeypatch.delenv("TRAINQ_PG_USER", raising=False)
    monkeypatch.setattr(pg_account, "DEFAULT_ACCOUNT", "nobody")
    with pytest.raises(EmbeddedServerError, match="nobody that PostgreSQL would run as is not trainq's alone "
                                                  r"\(nobody is what many daemons run as\).*TRAINQ_PG_USER"):
        pg_account.service_account()
    monkeypatch.setenv("TRAINQ_PG_USER", "nobody")
    with caplog.at_level(logging.WARNING, logger="trainq.local"):
        assert pg_account.service_account().pw_name == "nobody"
    assert "TRAINQ_PG_USER=nobody is a shared account" in caplog.text


@root_only
def test_an_account_that_other_processes_run_as_or_that_owns_files_elsewhere_is_refused(
        throwaway_account, monkeypatch, caplog):
    monkeypatch.delenv("TRAINQ_PG_USER", raising=False)
    monkeypatch.setattr(pg_account, "DEFAULT_ACCOUNT", throwaway_account.pw_name)
    assert pg_account.service_account() == throwaway_account  # unused: fine
    sleeper = subprocess.Popen(["sleep", "300"], user=throwaway_account.pw_uid, group=throwaway_account.pw_gid)
    try:
        with pytest.raises(EmbeddedServerError, match=rf"process {sleeper.pid} \(.*sleep\) runs as it"):
            pg_account.service_account()
        monkeypatch.setenv("TRAINQ_PG_USER", throwaway_account.pw_name)  # on purpose: used, with a warning
        with caplog.at_level(logging.WARNING, logger="trainq.local"):
            assert pg_account.service_account() == throwaway_account
        assert f"process {sleeper.pid}" in caplog.text
    finally:
        sleeper.kill()
        sleeper.wait()
    monkeypatch.delenv("TRAINQ_PG_USER")
    fd, planted = tempfile.mkstemp(prefix="tq-owned-", dir="/tmp")
    try:
        os.fchown(fd, throwaway_account.pw_uid, throwaway_account.pw_gid)
        with pytest.raises(EmbeddedServerError, match=f"it owns {planted}"):
            pg_account.service_account()
    finally:
        os.close(fd)
        os.unlink(planted)


@root_only
def test_a_cluster_another_account_made_is_refused_with_what_to_do(tmp_path, monkeypatch):
    pg_home = Path(tempfile.gettempdir()) / f"trainq-test-pghome-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("TRAINQ_PG_HOME", str(pg_home))
    try:
        server = PostgresServer(tmp_path / "postgres")
        home = server._root_home()
        (home / "pgdata").mkdir(mode=0o700)  # as an older trainq left it: nobody's
        os.chown(home / "pgdata", 65534, 65534)
        with pytest.raises(EmbeddedServerError, match=r"pgdata belongs to nobody, not to trainq-pg.*remove .*"
                                                      r"TRAINQ_PG_USER=nobody to keep it"):
            server.start()
        assert server.process is None
    finally:
        shutil.rmtree(pg_home, ignore_errors=True)


def test_the_reconciler_refuses_to_go_on_with_a_trust_rule(settings, tmp_path):
    server = PostgresServer(tmp_path / "postgres", ephemeral=True).start()
    try:
        with open(server.home / "pgdata" / "pg_hba.conf", "a") as hba:  # what a local account could add
            hba.write("host all all 127.0.0.1/32 trust\n")
        env = {**os.environ, **settings, "DATABASE_URL": server.url()}
        try:
            result = subprocess.run([sys.executable, "-m", "flask", "--app", "api", "reconciler"], env=env,
                                    cwd=REPO, capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"the reconciler went on:\n{(exc.stderr or b'')[-1500:]!r}") from None
        assert result.returncode == 1, result.stderr
        assert "PostgreSQL admits connections without a password (trust): " in result.stderr
        assert "pg_hba.conf:" in result.stderr and "address 127.0.0.1" in result.stderr
        assert "Traceback" not in result.stderr
    finally:
        server.remove()
