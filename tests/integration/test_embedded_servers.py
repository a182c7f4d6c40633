"""The embedded servers admit only this project, their secrets stay private, and nothing is ever written or
chowned through a link."""

from __future__ import annotations

import os
import stat

import psycopg2
import pytest
import redis as redis_py

from api.dev.servers import EmbeddedServerError, PostgresServer, mask, read_secret, write_private

ROOT = os.geteuid() == 0


def test_redis_refuses_a_client_without_the_password(redis_server):
    with pytest.raises(redis_py.exceptions.AuthenticationError):
        redis_py.Redis(port=redis_server.port, socket_timeout=2).ping()
    with pytest.raises(redis_py.exceptions.AuthenticationError):
        redis_py.Redis(port=redis_server.port, password="guess", socket_timeout=2).ping()
    assert redis_server.client().ping()


def test_postgres_refuses_a_client_without_the_password(postgres_server):
    for url in (f"postgresql://postgres@127.0.0.1:{postgres_server.port}/postgres",
                f"postgresql://postgres:guess@127.0.0.1:{postgres_server.port}/postgres"):
        with pytest.raises(psycopg2.OperationalError, match="password"):
            psycopg2.connect(url, connect_timeout=3)
    with psycopg2.connect(postgres_server.url(), connect_timeout=3) as conn, conn.cursor() as cur:
        cur.execute("SELECT auth_method FROM pg_hba_file_rules")
        assert {method for (method,) in cur.fetchall()} == {"scram-sha-256"}
    conn.close()


def test_postgres_socket_folder_only_its_account_can_enter(postgres_server):
    sockets = postgres_server.home / "socket"
    st = sockets.lstat()
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700
    assert st.st_uid == (postgres_server.account.pw_uid if postgres_server.account else os.geteuid())


@pytest.mark.skipif(not ROOT, reason="as an ordinary user PostgreSQL runs as that user; the root layout needs root")
def test_as_root_postgres_runs_unprivileged_outside_the_project(postgres_server):
    assert postgres_server.account.pw_uid != 0
    pgdata = (postgres_server.home / "pgdata").lstat()
    assert pgdata.st_uid == postgres_server.account.pw_uid and stat.S_IMODE(pgdata.st_mode) == 0o700
    home = postgres_server.home.lstat()
    assert home.st_uid == 0 and stat.S_IMODE(home.st_mode) == 0o755
    assert not postgres_server.home.is_relative_to(postgres_server.data_dir)
    import psutil

    assert psutil.Process(postgres_server.process.pid).uids().real == postgres_server.account.pw_uid


def test_mask_hides_the_password_in_urls():
    assert mask("redis://:s3cret@127.0.0.1:6379/0") == "redis://:***@127.0.0.1:6379/0"
    assert mask("postgresql://postgres:s3cret@127.0.0.1:5432/trainq") == "postgresql://postgres:***@127.0.0.1:5432/trainq"
    assert mask("postgresql://postgres@127.0.0.1:5432/trainq") == "postgresql://postgres@127.0.0.1:5432/trainq"


def test_a_secret_is_generated_once_with_mode_0600(tmp_path):
    path = tmp_path / "redis.password"
    first = read_secret(path)
    assert len(first) >= 43 and read_secret(path) == first  # 32 random bytes, URL-safe
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_secret_file_others_can_read_is_refused(tmp_path):
    path = tmp_path / "postgres.password"
    path.write_text("x\n")
    path.chmod(0o644)
    with pytest.raises(EmbeddedServerError, match="chmod 600"):
        read_secret(path)


def test_secrets_and_private_files_are_never_written_or_read_through_a_link(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    victim.chmod(0o640)
    before = victim.stat()
    for name in ("redis.password", "local.env"):
        (tmp_path / name).symlink_to(victim)
    with pytest.raises(EmbeddedServerError, match="symbolic link"):
        read_secret(tmp_path / "redis.password")
    with pytest.raises(EmbeddedServerError, match="symbolic link"):
        write_private(tmp_path / "local.env", "REDIS_URL=redis://:x@127.0.0.1:1/0\n")
    after = victim.stat()
    assert victim.read_text() == "precious\n"
    assert (after.st_mode, after.st_uid, after.st_gid) == (before.st_mode, before.st_uid, before.st_gid)


def test_a_data_folder_that_is_a_link_is_refused_with_what_to_do(tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir()
    (tmp_path / "postgres").symlink_to(target)
    with pytest.raises(EmbeddedServerError, match="not a link"):
        PostgresServer(tmp_path / "postgres").start()
    assert list(target.iterdir()) == []


@pytest.mark.skipif(not ROOT, reason="the service account is only used when running as root")
def test_a_missing_service_account_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAINQ_PG_USER", "no-such-account-here")
    with pytest.raises(EmbeddedServerError, match="TRAINQ_PG_USER.*DATABASE_URL"):
        PostgresServer(tmp_path / "postgres", ephemeral=True).start()


@pytest.mark.skipif(not ROOT, reason="TRAINQ_PG_HOME is only used when running as root")
def test_a_pg_home_the_account_cannot_reach_is_refused_and_left_as_it_is(tmp_path, monkeypatch):
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    private.chmod(0o700)
    monkeypatch.setenv("TRAINQ_PG_HOME", str(private / "trainq"))
    with pytest.raises(EmbeddedServerError, match="cannot enter .*TRAINQ_PG_HOME"):
        PostgresServer(tmp_path / "postgres").start()
    assert stat.S_IMODE(private.stat().st_mode) == 0o700


def test_redis_commands_that_move_files_or_load_code_are_off_even_with_the_password(redis_server):
    client = redis_server.client(socket_timeout=2)
    for command in (("CONFIG", "SET", "dir", "/"), ("MODULE", "LIST"), ("DEBUG", "SLEEP", "0"),
                    ("REPLICAOF", "127.0.0.1", "1")):
        with pytest.raises(redis_py.exceptions.ResponseError, match="unknown command"):
            client.execute_command(*command)
    assert client.set("still", "works") and client.get("still") == b"works"
