"""Another host for the tests: a network namespace joined to this one by a veth pair, whose link the test cuts
and restores, and worker processes in it that also have a pid namespace and a host name of their own.

Traffic stays between this host's loopback servers (which also listen on the pair's host-side address) and the
namespaces made here: each pair gets a /30 of 10.213.0.0/16 that no interface of this machine uses, the
namespace has no route but its own /30, and this host gets a ``prohibit`` route for that /30 (metric 65535:
used only if the pair's own route is gone), so nothing meant for the namespace ever goes out another
interface. A cut takes the namespace's end of the pair down: packets either way are dropped, no connection is
reset, and both ends' processes live on. Everything made here is removed by ``remove()`` (the fixtures call it
in a finalizer, also when a test fails), and a namespace's processes die with it (``unshare --kill-child``).
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from tests.support import REPO, WorkerProcess, start_flask, wait_for

_pairs = itertools.count()


def unavailable() -> str | None:
    """Why network namespaces cannot be used here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root (the tests run as root where they can)"
    for tool in ("ip", "unshare", "hostname"):
        if not shutil.which(tool):
            return f"{tool} is not installed"
    probe = f"tq{os.getpid()}probe"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode:
        return f"ip netns add failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=10)


def _subnet_in_use(prefix: str) -> bool:
    shown = _ip("-o", "addr", "show").stdout + _ip("route", "show", "table", "all").stdout
    return f"{prefix}." in shown


@dataclass
class Host:
    """A network namespace with one veth pair to this host: ``host_ip`` here, ``ip`` there."""

    name: str
    host_ip: str
    ip: str
    subnet: str
    processes: list[WorkerProcess] = field(default_factory=list)

    @classmethod
    def create(cls) -> Host:
        n = next(_pairs)
        name = f"tq{os.getpid() % 100000}n{n}"
        for third in itertools.chain(range((os.getpid() + n * 7) % 250, 250), range(0, 250)):
            prefix = f"10.213.{third}"
            if not _subnet_in_use(prefix):
                break
        else:
            raise RuntimeError("no free /30 in 10.213.0.0/16")
        host = cls(name, f"{prefix}.1", f"{prefix}.2", f"{prefix}.0/30")
        try:
            _ip("netns", "add", name)
            _ip("link", "add", f"{name}h", "type", "veth", "peer", "name", f"{name}p")
            _ip("link", "set", f"{name}p", "netns", name)
            _ip("addr", "add", f"{host.host_ip}/30", "dev", f"{name}h")
            _ip("link", "set", f"{name}h", "up")
            _ip("route", "add", "prohibit", host.subnet, "metric", "65535")
            _ip("-n", name, "addr", "add", f"{host.ip}/30", "dev", f"{name}p")
            _ip("-n", name, "link", "set", "lo", "up")
            _ip("-n", name, "link", "set", f"{name}p", "up")
        except BaseException:
            host.remove()
            raise
        return host

    def cut(self) -> None:
        """The network goes away: the namespace's end of the pair is down (nothing is reset; all sides live on)."""
        _ip("-n", self.name, "link", "set", f"{self.name}p", "down")

    def heal(self) -> None:
        _ip("-n", self.name, "link", "set", f"{self.name}p", "up")

    def url(self, url: str) -> str:
        """A server URL on 127.0.0.1 as the namespace reaches it: the pair's host-side address."""
        return url.replace("@127.0.0.1:", f"@{self.host_ip}:")

    def start_worker(self, env: dict[str, str], name: str, log_dir: Path, redis_conn: Any) -> WorkerProcess:
        """``flask --app api worker`` in the namespace, in a pid namespace of its own (as pid 2, its shell is pid
        1) with the host name ``name``; waits until RQ lists it."""
        env = {**env, "DATABASE_URL": self.url(env["DATABASE_URL"]), "REDIS_URL": self.url(env["REDIS_URL"])}
        prefix = ("ip", "netns", "exec", self.name, "unshare", "--pid", "--uts", "--mount-proc", "--fork",
                  "--kill-child", "sh", "-c", 'hostname "$0" && "$@"', name)
        worker = start_flask(env, name, log_dir, "worker", "--name", name, prefix=prefix)
        self.processes.append(worker)

        def ready() -> bool:
            if worker.process.poll() is not None:
                raise AssertionError(f"worker {name} exited with {worker.process.returncode}:\n{worker.log()}")
            return bool(redis_conn.exists(f"rq:worker:{name}") or redis_conn.exists(f"rq:worker:{name}-0"))  # or a pool

        wait_for(ready, 60, f"worker {name} in namespace {self.name} to register with RQ")
        return worker

    def worker_pid(self, worker: WorkerProcess) -> int:
        """This host's pid of the worker itself (under unshare and the namespace's shell)."""
        shell = psutil.Process(worker.pid).children()[0]
        return shell.children()[0].pid

    def remove(self) -> None:
        for worker in self.processes:
            worker.kill()  # unshare --kill-child: the namespace's pid 1, and so all in it, die too
        _ip("netns", "del", self.name, check=False)  # its end of the pair goes with it, and so the pair
        _ip("link", "del", f"{self.name}h", check=False)
        _ip("route", "del", "prohibit", self.subnet, "metric", "65535", check=False)


def leftovers() -> list[str]:
    """Namespaces and links of this test process still there."""
    mine = f"tq{os.getpid() % 100000}n"
    names = _ip("netns", "list").stdout + _ip("-o", "link", "show").stdout
    return sorted({word.split("@")[0].rstrip(":") for word in names.split() if word.startswith(mine)})


__all__ = ["Host", "REPO", "leftovers", "unavailable"]
