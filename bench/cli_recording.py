"""Not a benchmark: records ``trainq submit ... --follow`` in a real pseudo-terminal against a small real stack
(the bench harness's: gunicorn, one worker) and saves what the terminal showed as pictures for the README:
``docs/cli-follow-running.png`` (mid-run: the live bar and metrics) and ``docs/cli-follow-done.png`` (the end).
The bytes go through a terminal emulator (pyte), so the pictures are the screen as a user saw it, cursor
movements and all. ``make cli-recording``."""

from __future__ import annotations

import io
import os
import pty
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyte
from rich.console import Console
from rich.text import Text

from api.dev.servers import free_port
from bench.harness import REPO, TOKEN_ENV, stack
from bench.monitor_pages import CHROMIUM_ARGS

DOCS = REPO / "docs"
COLUMNS, LINES = 110, 8
COMMAND = ["trainq", "submit", "mlp", "-p", "epochs=30", "-p", "hidden_sizes=[128,64]", "-p", "batch_size=16",
           "--name", "digits-128x64", "--follow"]


def record(env: dict[str, str]) -> list[tuple[float, bytes]]:
    """Run the command on a pseudo-terminal; every chunk it wrote, with when."""
    leader, follower = pty.openpty()
    os.set_blocking(leader, False)
    started = time.monotonic()
    process = subprocess.Popen([sys.executable, "-m", "trainq.cli", *COMMAND[1:]], stdin=follower, stdout=follower,
                               stderr=follower, env=env, cwd=REPO, close_fds=True)
    os.close(follower)
    chunks: list[tuple[float, bytes]] = []
    while True:
        ready, _, _ = select.select([leader], [], [], 0.2)
        if ready:
            try:
                data = os.read(leader, 65536)
            except OSError:  # the command exited and its side of the terminal closed
                break
            if not data:
                break
            chunks.append((time.monotonic() - started, data))
        elif process.poll() is not None:
            break
    process.wait(30)
    os.close(leader)
    return chunks


def screen_at(chunks: list[tuple[float, bytes]], until: float) -> pyte.Screen:
    screen = pyte.Screen(COLUMNS, LINES)
    stream = pyte.ByteStream(screen)
    stream.feed(b"$ " + " ".join(COMMAND).encode() + b"\r\n")
    for at, data in chunks:
        if at > until:
            break
        stream.feed(data)
    return screen


def _colour(name: str) -> str:
    """pyte's name of a colour as rich's: ``default`` none, ``brown`` yellow, 256-colour ones as hex."""
    if name == "default":
        return ""
    if len(name) == 6 and all(c in "0123456789abcdefABCDEF" for c in name):
        return f"#{name}"
    return {"brown": "yellow"}.get(name, name)


def picture(screen: pyte.Screen, path: Path, title: str) -> None:
    """The screen as a PNG: rich writes it as SVG (colours kept), Chromium takes the picture."""
    from playwright.sync_api import sync_playwright

    console = Console(record=True, width=COLUMNS, file=io.StringIO(), force_terminal=True)
    for y in range(LINES):
        line = Text()
        for x in range(COLUMNS):
            char = screen.buffer[y][x]
            style = " ".join(part for part in (
                "bold" if char.bold else "", _colour(char.fg), "on " + _colour(char.bg) if char.bg != "default" else "")
                if part)
            line.append(char.data, style=style or None)
        line.rstrip()
        console.print(line)
    console.print(Text(" "))
    with tempfile.TemporaryDirectory() as folder:
        svg = Path(folder) / "screen.svg"
        console.save_svg(str(svg), title=title)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1100, "height": 300}, device_scale_factor=1)
            page.goto(svg.as_uri())
            page.locator("svg").screenshot(path=str(path))
            browser.close()


def main() -> None:
    with stack() as s:
        port = free_port()
        s.gunicorn(port, workers=2)
        s.worker("gpu-box-1")
        env = {**os.environ, "TRAINQ_URL": f"http://127.0.0.1:{port}", "TRAINQ_TOKEN": os.environ[TOKEN_ENV],
               "COLUMNS": str(COLUMNS), "LINES": str(LINES), "TERM": "xterm-256color",
               "XDG_CONFIG_HOME": tempfile.mkdtemp()}
        chunks = record(env)
    end = chunks[-1][0]
    picture(screen_at(chunks, end * 0.6), DOCS / "cli-follow-running.png", "trainq follow: while it trains")
    picture(screen_at(chunks, end + 1), DOCS / "cli-follow-done.png", "trainq follow: the end (exit code 0)")
    print(f"recorded {len(chunks)} writes over {end:.1f} s; saved docs/cli-follow-running.png, cli-follow-done.png")


if __name__ == "__main__":
    main()
