"""A small HTTP client for a trainq service's JSON API (the ``trainq`` command uses it). Standard library only.

Where it connects: ``TRAINQ_URL`` and ``TRAINQ_TOKEN`` if set, else what ``trainq login`` saved in the user's
config folder (``$XDG_CONFIG_HOME/trainq/config.json``, else ``~/.config/trainq/config.json``, mode 0600).
"""

from __future__ import annotations

import http.client
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

TIMEOUT = 30.0


class ClientError(Exception):
    """What went wrong, said for a person: the API's message (and field), or why the service was not reached."""

    def __init__(self, message: str, status: int | None = None, field: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.message, self.status, self.field, self.code = message, status, field, code

    def __str__(self) -> str:
        return f"{self.message} (field: {self.field})" if self.field and self.field not in self.message \
            else self.message


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "trainq" / "config.json"


def save_login(url: str, token: str) -> Path:
    """Keep ``url`` and ``token`` for later commands, readable by this user only."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as file:
        os.fchmod(file.fileno(), 0o600)  # an older file may have had wider modes
        json.dump({"url": url, "token": token}, file)
    return path


def saved_login() -> dict[str, str]:
    try:
        return json.loads(config_path().read_text())
    except (OSError, ValueError):
        return {}


@dataclass
class Client:
    url: str
    token: str | None = None

    @classmethod
    def from_environment(cls) -> Client:
        saved = saved_login()
        url = os.environ.get("TRAINQ_URL") or saved.get("url")
        if not url:
            raise ClientError("no service to talk to: run `trainq login URL`, or set TRAINQ_URL (and TRAINQ_TOKEN)")
        return cls(url.rstrip("/"), os.environ.get("TRAINQ_TOKEN") or saved.get("token"))

    def _open(self, method: str, path: str, body: Any = None, query: dict[str, Any] | None = None) -> Any:
        url = self.url + path
        params = {k: v for k, v in (query or {}).items() if v is not None}
        if params:
            url += "?" + urllib.parse.urlencode(params)
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            request = urllib.request.Request(url, data=data, method=method, headers=headers)
            return _OPENER.open(request, timeout=TIMEOUT)
        except urllib.error.HTTPError as err:
            raise _api_error(err) from None
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise ClientError(f"cannot reach the trainq service at {self.url}: {reason}") from None
        except (ValueError, http.client.HTTPException) as err:  # not a URL at all
            raise ClientError(f"{self.url!r} is not a service URL ({err}); write it as http://HOST:PORT") from None

    def call(self, method: str, path: str, body: Any = None, **query: Any) -> Any:
        """One API call; its JSON answer, or ``ClientError`` with the API's message and field."""
        with self._open(method, path, body, query) as response:
            raw = response.read()
        try:
            return json.loads(raw) if raw else {}
        except ValueError:
            raise ClientError(f"{self.url}{path} did not answer JSON: is {self.url} a trainq service?") from None

    def download(self, path: str, out: BinaryIO) -> int:
        with self._open("GET", path) as response:
            size = 0
            while chunk := response.read(1 << 20):
                out.write(chunk)
                size += len(chunk)
        return size


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Never follow a redirect: urllib would send the token along to wherever it points."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> None:
        raise ClientError(f"the service at {req.full_url} redirected to {newurl}: not followed (your token would go "
                          "with it); if that is the service's address, log in to it instead")


_OPENER = urllib.request.build_opener(_NoRedirects)


def _api_error(err: urllib.error.HTTPError) -> ClientError:
    try:
        body = json.loads(err.read() or b"{}")
    except ValueError:
        body = {}
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        message = error.get("message") or str(err)
        if err.code == 401:
            message += " (run `trainq login URL` with a valid token, or set TRAINQ_TOKEN)"
        return ClientError(message, err.code, error.get("field"), error.get("code"))
    return ClientError(f"HTTP {err.code} from {err.url}: {err.reason}", err.code)
