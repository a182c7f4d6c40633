"""``make run``'s embedded servers take the ports they had at the last start when those are free, so
``var/local.env`` (and a hand-started worker that sourced it) stays valid across restarts; a port taken
meanwhile is replaced by a free one, and ``var/local.env`` says so."""

from __future__ import annotations

import shutil
import socket
import tempfile
import uuid
from pathlib import Path

import pytest

from api.dev.servers import keep_port, previous_port
from api.dev.supervisor import start_servers


def _start(var: Path) -> tuple[dict[str, str], str]:
    servers: list = []
    try:
        env = start_servers(var, servers)
        return env, (var / "local.env").read_text()
    finally:
        for server in reversed(servers):
            server.stop()


def test_a_restart_reuses_the_servers_ports_while_they_are_free(tmp_path, monkeypatch):
    pg_home = Path(tempfile.gettempdir()) / f"trainq-test-pghome-{uuid.uuid4().hex[:8]}"  # used as root
    for name in ("REDIS_URL", "DATABASE_URL", "CHECKPOINT_DIR", "ARTIFACT_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TRAINQ_PG_HOME", str(pg_home))
    var = tmp_path / "var"
    try:
        first, first_env = _start(var)
        again, again_env = _start(var)
        assert again_env == first_env  # same ports, same passwords: a sourced local.env still works

        redis_port = int(first["REDIS_URL"].rsplit(":", 1)[1].split("/")[0])
        with socket.socket() as squatter:  # someone else took Redis's port meanwhile
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            squatter.bind(("127.0.0.1", redis_port))
            squatter.listen()
            moved, moved_env = _start(var)
        assert moved["REDIS_URL"] != first["REDIS_URL"] and moved["DATABASE_URL"] == first["DATABASE_URL"]
        assert moved["REDIS_URL"] in moved_env
        assert previous_port(var / "ports.json", "redis") == int(moved["REDIS_URL"].rsplit(":", 1)[1].split("/")[0])
    finally:
        shutil.rmtree(pg_home, ignore_errors=True)


@pytest.mark.parametrize("content", ["", "not json", "[1, 2]", '{"redis": "6379"}', '{"redis": 80}'])
def test_an_unusable_ports_file_means_a_new_port(tmp_path, content):
    ports = tmp_path / "ports.json"
    ports.write_text(content)
    ports.chmod(0o600)
    assert previous_port(ports, "redis") is None
    keep_port(ports, "redis", 40000)
    assert previous_port(ports, "redis") in (40000, None)  # None only if something holds 40000 right now
    assert previous_port(tmp_path / "missing.json", "redis") is None
