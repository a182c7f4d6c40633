"""Where ``make run``'s children write (``var/log/``), and what of it reaches the terminal: only warnings, errors
and tracebacks (with their following lines), so the banner stays readable; ``make logs`` follows the rest."""

from __future__ import annotations

import os
import re
import sys
import threading
from pathlib import Path
from typing import TextIO

from api.dev.servers import open_own_file

# each child's stdout and stderr, and gunicorn's access log; `make logs` follows these (Makefile's LOGS)
LOG_FILES = {"api": "api.log", "worker": "worker.log", "reconciler": "reconciler.log", "access": "access.log"}

NOTABLE = re.compile(r"\b(WARNING|ERROR|CRITICAL|FATAL)\b|^Traceback \(most recent call last\)")
# the first line of a log record, as the service (2026-12-02 07:00:00,000), RQ (07:00:00) and gunicorn
# ([2026-12-02 07:00:00 +0000]) start them: a line that is not one continues the record before it
RECORD_START = re.compile(r"^(\d{4}-\d{2}-\d{2}[ T]\d|\d{2}:\d{2}:\d{2} |\[\d{4}-\d{2}-\d{2} )")


def open_log(path: Path) -> int:
    """A descriptor appending to ``path`` (created 0600, never through a link), for a child's stdout and stderr."""
    return open_own_file(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)


class Echo(threading.Thread):
    """Follows log files from their current end and copies their notable lines (``NOTABLE``, and the lines of
    the same record after one: a traceback) to ``out``, each prefixed with the file's name."""

    def __init__(self, files: dict[str, Path], out: TextIO | None = None, interval: float = 0.3) -> None:
        super().__init__(name="make-run-log-echo", daemon=True)
        self.files, self.out, self.interval = files, out or sys.stderr, interval
        self.offsets = {name: _size(path) for name, path in files.items()}
        self.partial = dict.fromkeys(files, b"")
        self.in_record = dict.fromkeys(files, False)
        self._stopped = threading.Event()

    def run(self) -> None:
        while not self._stopped.wait(self.interval):
            self.pass_once()

    def stop(self) -> None:
        self._stopped.set()
        self.join(5)
        self.pass_once()  # what was written last

    def pass_once(self) -> None:
        for name, path in self.files.items():
            for line in self._new_lines(name, path):
                if NOTABLE.search(line):
                    self.in_record[name] = True
                elif not (self.in_record[name] and line.strip() and not RECORD_START.match(line)):
                    self.in_record[name] = False
                    continue
                self.out.write(f"[{name}] {line}\n")
        self.out.flush()

    def _new_lines(self, name: str, path: Path) -> list[str]:
        size = _size(path)
        if size < self.offsets[name]:  # replaced or truncated: from its start
            self.offsets[name], self.partial[name] = 0, b""
        if size == self.offsets[name]:
            return []
        try:
            with open(path, "rb") as file:
                file.seek(self.offsets[name])
                data = file.read(size - self.offsets[name])
        except OSError:
            return []
        self.offsets[name] += len(data)
        *lines, self.partial[name] = (self.partial[name] + data).split(b"\n")
        return [line.decode(errors="replace").rstrip("\r") for line in lines]


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
