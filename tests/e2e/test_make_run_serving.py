"""``make run`` serves the API with gunicorn, not Werkzeug's development server: 400 connections that send
nothing neither hold it up (a normal request is answered within 1 s) nor stay open for ever; and, its stdout
not being a terminal, it prints where the admin's token is, never the token."""

from __future__ import annotations

import select
import socket
import time
import urllib.request

from tests.e2e.test_make_run_safety import MakeRun, pg_home, private_top  # noqa: F401 (fixtures)
from tests.support import wait_for

IDLE = 400


def test_make_run_serves_with_gunicorn_and_idle_connections_starve_nothing(private_top, pg_home):  # noqa: F811
    project = private_top / "clone"
    project.mkdir()
    run = MakeRun(project, pg_home)
    run.start()
    idle: list[socket.socket] = []
    try:
        run.wait_up()
        token = (project / "var" / "admin.token").read_text().strip()
        base = f"http://127.0.0.1:{run.port}"

        def health() -> tuple[float, str]:
            request = urllib.request.Request(f"{base}/api/health", headers={"Authorization": f"Bearer {token}"})
            started = time.monotonic()
            with urllib.request.urlopen(request, timeout=10) as response:
                assert response.status == 200
                return time.monotonic() - started, response.headers.get("Server", "")

        assert "gunicorn" in health()[1]
        for _ in range(IDLE):  # connected, and silent: as a slow or hostile client leaves them
            idle.append(socket.create_connection(("127.0.0.1", run.port), timeout=10))
        seconds, _ = health()
        assert seconds < 1.0, f"a request behind {IDLE} idle connections took {seconds:.2f}s"

        def all_closed_by_the_server() -> bool:
            readable, _, _ = select.select(idle, [], [], 0.5)
            for sock in readable:
                try:
                    data = sock.recv(1)
                except OSError:
                    data = b""
                assert data == b"", data
                idle.remove(sock)
                sock.close()
            return not idle

        wait_for(all_closed_by_the_server, 60, f"the server to close {IDLE} idle connections")
        assert health()[0] < 1.0
    finally:
        for sock in idle:
            sock.close()
        assert run.stop() == 0, run.read()
    output = run.read()
    assert token not in output  # stdout is a file here: no login link with the token
    assert f"log in with the admin's token, kept in {project / 'var' / 'admin.token'}" in output, output
    assert "WARNING: This is a development server" not in output
