"""A worker's next horse, forked while the worker waits for a job (its stand-by): when a job comes, the worker hands
it the job instead of forking then, so a job's start pays neither the fork of a worker that has torch imported nor
the horse's first connections to PostgreSQL and Redis.

The stand-by is forked from the worker as RQ forks a horse (its own process group, dying with the worker); it
gets ready (``prepare``: its own database connections, pooled for the horse) and then blocks on a pipe. The worker
writes it one order, the job's id, its queue and RQ's execution id (the job's payload is read from Redis again and
checked again: nothing in the pipe is code), and from then on the stand-by is the job's horse: RQ's monitoring,
kill and reaping act on its pid as on a horse forked for the job. A stand-by that died meanwhile is reaped and the
worker forks a horse as before. While it waits its process name is ``trainq-standby`` (``NAME``), so it is told
apart from a horse in a process list; it takes the worker's name back with its job."""

from __future__ import annotations

import ctypes
import gc
import json
import logging
import os
import select
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from trainq.process import die_with_parent

log = logging.getLogger(__name__)

NAME = "trainq-standby"
_PR_SET_NAME = 15


def _set_name(name: bytes) -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_NAME, ctypes.c_char_p(name[:15]), 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _own_name() -> bytes:
    try:
        return Path("/proc/self/comm").read_bytes().strip()
    except OSError:
        return b""


class Standby:
    """The worker's stand-by horse (at most one). ``prepare`` runs in it as soon as it is forked, given a function
    that says whether its order has come already (what is only worth doing while it waits can be left out); ``run``
    runs in it with the order the worker hands it, and never returns."""

    def __init__(self, prepare: Callable[[Callable[[], bool]], None],
                 run: Callable[[dict[str, Any]], NoReturn]) -> None:
        self.prepare, self.run = prepare, run
        self.pid: int | None = None
        self._pipe: int | None = None  # the worker's end

    def ensure(self) -> None:
        """In the worker, before it waits for a job: fork a stand-by unless one waits already."""
        if self.pid is not None:
            if not _reap(self.pid, block=False):
                return  # it waits
            self.pid = None  # it ended (reaped: its pid may be another process's now)
        self._drop()
        # the parent's objects out of the collector's sight (as before a horse's fork): a full collection in the
        # horse would otherwise walk, and copy-on-write copy, the whole inherited heap
        gc.freeze()
        parent = os.getpid()
        try:
            read, write = os.pipe()
        except OSError as exc:  # out of descriptors: the next job's horse is forked for it, as without a stand-by
            log.warning("no stand-by horse (%s)", exc)
            return
        try:
            pid = os.fork()
        except OSError as exc:  # out of memory or processes: likewise
            os.close(read)
            os.close(write)
            log.warning("no stand-by horse (%s)", exc)
            return
        if pid == 0:
            code = 1
            try:
                os.close(write)
                self._serve(read, parent)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:  # noqa: BLE001 - the worker sees a horse that died and fails its job
                log.exception("stand-by horse failed")
            finally:
                os._exit(code)
        os.close(read)
        try:  # its own process group from here on, whichever of the two runs first (a kill goes to its group)
            os.setpgid(pid, pid)
        except OSError:  # it has gone already
            pass
        self.pid, self._pipe = pid, write

    def hand(self, order: dict[str, Any]) -> int | None:
        """In the worker: give the job to the stand-by, whose pid it returns; None if there is none alive (the
        worker forks a horse as before)."""
        pid, pipe = self.pid, self._pipe
        self.pid = self._pipe = None
        if pid is None or pipe is None:
            return None
        try:
            os.write(pipe, json.dumps(order).encode())  # under PIPE_BUF: written whole or not at all
        except OSError:  # it died (EPIPE): reap it
            os.close(pipe)
            _reap(pid, block=True)
            return None
        os.close(pipe)  # its end of file: the order is all there is
        return pid

    def close(self) -> None:
        """In the worker, as it stops: its stand-by goes too."""
        self._drop()

    def _drop(self) -> None:
        pid, pipe = self.pid, self._pipe
        self.pid = self._pipe = None
        if pipe is not None:
            os.close(pipe)
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _reap(pid, block=True)

    def _serve(self, read: int, parent: int) -> NoReturn:
        """In the stand-by: be a horse in waiting, then the job's."""
        os.setpgrp()  # as RQ's horse: the worker (and a cancel) kills its group
        die_with_parent()
        if os.getppid() != parent:  # the worker died before the prctl
            os._exit(0)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # RQ's horse signals: Ctrl+C is the worker's
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        name = _own_name()
        _set_name(NAME.encode())
        self.prepare(lambda: bool(select.select([read], [], [], 0)[0]))
        chunks = []
        while chunk := os.read(read, 65536):
            chunks.append(chunk)
        os.close(read)
        if not chunks:  # the worker closed the pipe without an order: it stops
            os._exit(0)
        _set_name(name)
        self.run(json.loads(b"".join(chunks)))


def _reap(pid: int, block: bool) -> bool:
    """Whether ``pid`` has ended (and is reaped now)."""
    try:
        done, _ = os.waitpid(pid, 0 if block else os.WNOHANG)
    except ChildProcessError:
        return True
    return done != 0
