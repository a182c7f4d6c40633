"""A real HTTP receiver for webhook tests, on 127.0.0.1 only: it records every POST, checks its signature with
``trainq.webhooks.verify`` (as a user's receiver would), and answers what the test says. ``hold`` makes it keep
the next request waiting until released (a sender killed mid-delivery)."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from trainq.webhooks import DELIVERY_HEADER, SIGNATURE_HEADER, SignatureError, verify


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    verified: bool
    error: str | None

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def key(self) -> str:
        return self.headers.get(DELIVERY_HEADER, "")


@dataclass
class Receiver:
    secret: str = ""
    status: int = 200
    received: list[Received] = field(default_factory=list)
    acted_on: set[str] = field(default_factory=set)  # idempotency keys acted on: each event acted on once
    hold_next: threading.Event | None = None
    holding: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    verify(receiver.secret, self.headers.get(SIGNATURE_HEADER), body)
                    ok, error = True, None
                except SignatureError as exc:
                    ok, error = False, str(exc)
                item = Received(dict(self.headers.items()), body, ok, error)
                with receiver.lock:
                    receiver.received.append(item)
                    hold, receiver.hold_next = receiver.hold_next, None
                if hold is not None:
                    receiver.holding.set()
                    hold.wait(60)
                    return  # no answer at all: the sender was killed meanwhile
                status = receiver.status if ok else 401
                if ok and 200 <= status < 300:
                    with receiver.lock:
                        receiver.acted_on.add(item.key)
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
