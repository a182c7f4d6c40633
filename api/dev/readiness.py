"""When ``make run`` is ready: its API answers and the agent it started has published its tasks (as ``GET
/api/hosts`` shows them), so the first job its banner suggests is accepted the moment the banner is printed."""

from __future__ import annotations

import json
import urllib.error
import urllib.request


def _get(url: str, token: str | None = None) -> tuple[int, object]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=2) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (OSError, ValueError):
        return 0, None


def api_answers(base: str) -> bool:
    return _get(f"{base}/api/health")[0] == 200


def published_tasks(base: str, token: str, agent: str) -> list[str] | None:
    """The tasks ``agent`` offers, once it has published them (None before, or while the API does not answer)."""
    status, body = _get(f"{base}/api/hosts", token)
    if status != 200 or not isinstance(body, dict):
        return None
    for host in body.get("hosts", []):
        if host.get("name") == agent and host.get("tasks"):
            return list(host["tasks"])
    return None
