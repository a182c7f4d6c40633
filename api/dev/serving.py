"""How ``make run`` serves the API: gunicorn (never Werkzeug's development server), with threads, timeouts and a
bounded number of connections, so idle or slow clients cannot starve real requests.

gunicorn's gthread worker hands each new connection to a thread, which waits up to 5 s for its first bytes: 400
connections that send nothing hold every thread for minutes. ``IdleSafeThreadWorker`` parks a new connection in
the worker's poller instead, as gthread already does with kept-alive ones, so only a connection with a request
to read takes a thread; one that sends nothing for ``KEEPALIVE`` seconds is closed. A client that stalls in the
middle of a request, or stops reading its answer, is cut off after ``STALL_TIMEOUT`` seconds (the socket's
kernel timeouts), so it holds a thread no longer than that.
"""

from __future__ import annotations

import errno
import selectors
import socket
import struct
import sys
import time
from functools import partial
from typing import Any

from gunicorn.workers.gthread import TConn, ThreadWorker

WORKERS = 2  # processes
THREADS = 8  # requests each process serves at once
WORKER_CONNECTIONS = 500  # connections each process holds open, idle ones included; past it, the kernel's backlog
TIMEOUT = 30  # s: a worker process whose main loop stops answering is killed and replaced
KEEPALIVE = 5  # s: a connection that sends nothing (before its first request, or between two) is closed
STALL_TIMEOUT = 30  # s: a send or receive in the middle of a request that makes no progress ends the connection
GRACEFUL_TIMEOUT = 5  # s: on stop, requests in flight get this long


class IdleSafeThreadWorker(ThreadWorker):
    """gunicorn's gthread worker whose new connections wait for their first bytes in the poller, not a thread."""

    def accept(self, listener: socket.socket) -> None:
        try:
            client, address = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        stall = struct.pack("ll", STALL_TIMEOUT, 0)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, stall)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, stall)
        conn = TConn(self.cfg, client, address, listener.getsockname())  # non-blocking until a thread takes it
        conn.timeout = time.monotonic() + self.cfg.keepalive
        self.pending_conns.append(conn)  # closed by murder_pending() once its timeout passes
        self.poller.register(client, selectors.EVENT_READ, partial(self.on_pending_socket_readable, conn))


def bind_address(host: str, port: str | int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def gunicorn_command(app: str, host: str, port: str | int, *extra: Any, access_log: str = "-") -> list[str]:
    """The command line that serves ``app`` (``module:variable``) on ``host``:``port``, as ``make run`` does;
    its access log to ``access_log`` (``-``: stdout)."""
    return [sys.executable, "-m", "gunicorn", "--worker-class", f"{__name__}.IdleSafeThreadWorker",
            "--workers", str(WORKERS), "--threads", str(THREADS), "--worker-connections", str(WORKER_CONNECTIONS),
            "--timeout", str(TIMEOUT), "--keep-alive", str(KEEPALIVE), "--graceful-timeout", str(GRACEFUL_TIMEOUT),
            "--bind", bind_address(host, port), "--access-logfile", access_log, *map(str, extra), app]
