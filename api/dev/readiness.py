"""When ``make run`` is ready: its API answers and the agent it started has published its tasks (as ``GET
/api/hosts`` shows them), so the first job its banner suggests is accepted the moment the banner is printed."""

from __future__ import annotations

import json
import urllib.error
import urllib.request


def host_header(allowed_hosts: str, port: str | int) -> str | None:
    """The ``Host`` to send when ``ALLOWED_HOSTS`` leaves out 127.0.0.1 (make run behind a proxy that names it):
    the first name it allows; None (the URL's own) otherwise."""
    names = [name.strip() for name in allowed_hosts.split(",") if name.strip()]
    if not names or "*" in names or "127.0.0.1" in names:
        return None
    return f"[{names[0]}]:{port}" if ":" in names[0] else f"{names[0]}:{port}"


def _get(url: str, token: str | None = None, host: str | None = None) -> tuple[int, object]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if host:
        headers["Host"] = host
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=2) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (OSError, ValueError):
        return 0, None


def api_answers(base: str, host: str | None = None) -> bool:
    return _get(f"{base}/api/health", host=host)[0] == 200


def published_tasks(base: str, token: str, agent: str, host: str | None = None) -> list[str] | None:
    """The tasks ``agent`` offers, once it has published them and its workers take jobs (a live worker for each:
    a submit then gets no "no live worker offers it" warning); None before, or while the API does not answer."""
    status, body = _get(f"{base}/api/hosts", token, host)
    if status != 200 or not isinstance(body, dict):
        return None
    tasks = next((list(host["tasks"]) for host in body.get("hosts", []) if host.get("name") == agent), None)
    if not tasks:
        return None
    status, body = _get(f"{base}/api/tasks", token, host)
    if status != 200 or not isinstance(body, dict):
        return None
    live = {task.get("name"): task.get("workers") or 0 for task in body.get("tasks", [])}
    return tasks if all(live.get(name, 0) >= 1 for name in tasks) else None
