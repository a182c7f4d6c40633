"""No ambient credential leaves for another loopback port (issue 21, item 2). Browsers do not scope cookies by
port, so a cookie session would go to any server another local account runs on 127.0.0.1. The monitor keeps its
token in sessionStorage (per origin, port included) and sends it only in an ``Authorization`` header its own
scripts add: a second server that the logged-in admin's browser visits (a page, an image, a fetch with
``credentials: "include"``) receives no Cookie and no token, and the monitor and /rq still work."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from playwright.sync_api import Page, expect

from api.queue import fetch
from tests.support import LONG, submit

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

BAIT = b"""<!doctype html><title>elsewhere</title><img src="/pixel.png">
<script>fetch("/steal", {method: "POST", credentials: "include", body: "x"}).then(() => { document.title = "done"; });
</script>"""


@pytest.fixture
def other_server() -> Iterator[tuple[str, list[dict]]]:
    """A server of another local account's on another port of 127.0.0.1; records every request it receives."""
    seen: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def _record(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            seen.append({"path": self.path, "headers": dict(self.headers.items()),
                         "body": self.rfile.read(length).decode(errors="replace")})
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Access-Control-Allow-Origin", "*")
            self.end_headers()
            self.wfile.write(BAIT)

        do_GET = do_POST = _record

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


def test_another_loopback_port_never_receives_a_credential(page: Page, other_server, client, admin_token,
                                                           placeholder_host):
    url, seen = other_server
    job_id = submit(client, LONG, name="kept")
    for path in ("/", f"/jobs/{job_id}", "/rq/", "/rq/0/view/workers"):  # every kind of page, logged in
        page.goto(path)
        page.wait_for_load_state("networkidle")
    page.goto(f"{url}/anything")
    expect(page).to_have_title("done")  # its page, its image and its fetch all came
    assert {entry["path"] for entry in seen} >= {"/anything", "/pixel.png", "/steal"}
    for entry in seen:
        headers = {name.lower(): value for name, value in entry["headers"].items()}
        assert "cookie" not in headers, entry
        assert "authorization" not in headers, entry
        assert admin_token not in repr(entry), entry

    page.goto("/")  # back on the monitor: still logged in, and it works
    expect(page.locator("#current-user")).to_contain_text("admin")
    expect(page.locator("#job-rows")).to_contain_text("kept")
    page.goto(f"/jobs/{job_id}")
    expect(page.locator("#job-title")).to_have_text("kept")
    page.goto(f"/rq/0/view/jobs/{fetch(job_id).origin}/queued/8/asc/1")  # the queue of the host it was placed on
    expect(page.locator("body")).to_contain_text(job_id)  # rq-dashboard's own script fetched its data
