"""A SIGHUP asks ``make run`` to restart its worker (``make reload``), unless it comes because the terminal
``make run`` ran in was closed: then ``has_terminal()`` is false, and ``make run`` stops as it always did."""

from __future__ import annotations

import fcntl
import os
import pty
import subprocess
import sys
import termios

from tests.support import REPO, wait_for

CHILD = r"""
import signal, sys, time
from api.dev.supervisor import has_terminal
out = open(sys.argv[1], "w")
out.write(f"start {has_terminal()}\n"); out.flush()
signal.signal(signal.SIGHUP, lambda *_: (out.write(f"hup {has_terminal()}\n"), out.flush()))
time.sleep(30)
"""


def test_a_hang_up_is_told_from_a_reload(tmp_path):
    seen = tmp_path / "seen"
    master, slave = pty.openpty()

    def own_terminal() -> None:  # a session of its own whose controlling terminal is the pty, as a shell's job's
        os.setsid()
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)

    child = subprocess.Popen([sys.executable, "-c", CHILD, str(seen)], cwd=REPO, stdin=slave, stdout=slave,
                             stderr=slave, preexec_fn=own_terminal)
    os.close(slave)
    try:
        wait_for(lambda: seen.exists() and "start" in seen.read_text(), 60, "the child to start")
        child.send_signal(1)  # `make reload`: the terminal is still there
        wait_for(lambda: "hup" in seen.read_text(), 30, "the child's first SIGHUP")
        os.close(master)  # the terminal window closes: the kernel hangs up its session
        wait_for(lambda: seen.read_text().count("hup") == 2, 30, "the hang-up")
        assert seen.read_text().splitlines() == ["start True", "hup True", "hup False"]
    finally:
        child.kill()
        child.wait(10)
