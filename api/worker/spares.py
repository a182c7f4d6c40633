"""Database connections a worker opens while it waits, for its next horse only: a horse's first two connections
(its attempt's lease session and its ``db.session``) are ready at the fork instead of each costing a new
PostgreSQL backend and its scram-sha-256 exchange while the job waits to start.

Never shared across the fork: the worker never uses a spare itself, and right after the fork it lets go of its
copy of each socket without a word to the server (``forget``: the descriptor is pointed at ``/dev/null`` first,
so libpq's goodbye goes nowhere); from then on only the horse holds them, and PostgreSQL ends their sessions
(and frees the locks taken in them) when the horse's process goes, exactly as for a connection it opened itself.
In the horse the engine's pool is new and empty (``dispose(close=False)``); its first connections are the spares
(``do_connect``), then new ones as before. A spare the server closed meanwhile (a restart, an idle timeout: its
socket has something to read) is dropped and the next one, or a new connection, is used instead."""

from __future__ import annotations

import logging
import os
import select
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

log = logging.getLogger(__name__)


def _stale(raw: Any) -> bool:
    """The server closed it or said something unasked (a FATAL on shutdown): an idle session sends nothing."""
    try:
        return bool(raw.closed) or bool(select.select([raw.fileno()], [], [], 0)[0])
    except (OSError, ValueError):
        return True


# a worker's copies of spares it could not silence after a fork (never seen): closing them would end the horse's
# sessions, so they stay open (and referenced, or the collector would close them) until the worker exits
_never_closed: list[Any] = []


class Spares:
    def __init__(self, engine: Engine, count: int = 2) -> None:
        self.engine, self.count = engine, count
        self.ready: list[Any] = []  # DBAPI connections
        self._owner: int | None = None  # the horse's pid once handed over

    def fill(self) -> None:
        """In the worker, while it has no job: open spares until there are ``count`` (PostgreSQL down: fewer, and
        the horse connects by itself as before)."""
        kept = []
        for raw in self.ready:
            if _stale(raw):
                self._close(raw)
            else:
                kept.append(raw)
        self.ready = kept
        while len(self.ready) < self.count:
            try:  # a pool of its own, never the worker's: the spare is new, used by no one yet
                proxied = self.engine.pool.recreate().connect()
                proxied.detach()
                self.ready.append(proxied.dbapi_connection)
            except (SQLAlchemyError, OSError) as exc:
                log.debug("no spare database connection (%s)", exc.__class__.__name__)
                return

    def forget(self) -> None:
        """In the worker, right after the fork: the horse has them now. Close this process's copies without telling
        the server (that would end the horse's sessions); one that cannot be silenced is kept open, never closed."""
        handed, self.ready = self.ready, []
        if not handed:
            return
        try:
            devnull = os.open(os.devnull, os.O_RDWR)
        except OSError:
            _never_closed.extend(handed)
            return
        try:
            for raw in handed:
                try:
                    os.dup2(devnull, raw.fileno())  # libpq's Terminate message is written to /dev/null
                except Exception:  # noqa: BLE001 - closing it now would end the horse's session
                    _never_closed.append(raw)
                    continue
                self._close(raw)
        finally:
            os.close(devnull)

    def hand_over(self) -> None:
        """In the horse, right after the fork (and ``engine.dispose(close=False)``): its engine's next new
        connections are the spares; a process the horse forks (a DataLoader worker) gets none of them."""
        self._owner = os.getpid()
        event.listen(self.engine, "do_connect", self._give)

    def _give(self, _dialect: Any, _record: Any, _cargs: Any, _cparams: Any) -> Any:
        if os.getpid() != self._owner:
            return None
        while True:
            try:
                raw = self.ready.pop(0)  # atomic: the horse's threads may connect at once
            except IndexError:
                return None  # a new connection, as without spares
            if not _stale(raw):
                return raw
            self._close(raw)

    def close(self) -> None:
        """The worker stops: its spares end like any connection."""
        for raw in self.ready:
            self._close(raw)
        self.ready = []

    @staticmethod
    def _close(raw: Any) -> None:
        try:
            raw.close()
        except Exception:  # noqa: BLE001 - a broken connection may fail to close too
            pass
