"""What the trainq commands share: the service's text with control characters shown, not sent; the API's
refusals as one line and exit status 1; JSON for scripts; a job named by a unique prefix of its id."""

from __future__ import annotations

import functools
import json
import re
import sys
from collections.abc import Callable
from typing import Any

import click

from trainq.client import Client, ClientError


def handled(command: Callable[..., Any]) -> Callable[..., Any]:
    """The API's message (and field) on stderr and exit status 1 instead of a traceback; Ctrl-C says so."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except ClientError as exc:
            click.echo(f"error: {clean(exc)}", err=True)
            sys.exit(1)

    return run


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def clean(value: Any) -> str:
    """Text from the service, safe for a terminal: control characters (escape sequences) shown, not sent."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(value))


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True))


UUID_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def resolve(api: Client, job_id: str) -> str:
    """A job id from a unique prefix of it, as git takes commit ids."""
    job_id = job_id.strip().lower()
    if UUID_TEXT.fullmatch(job_id):
        return job_id
    if not re.fullmatch(r"[0-9a-f-]{1,36}", job_id):
        raise ClientError(f"{job_id!r} is not a job id (or a prefix of one): ids are hexadecimal")
    matches = api.call("GET", "/api/training", id_prefix=job_id, limit=11)["jobs"]
    if not matches:
        raise ClientError(f"no job id starts with {job_id!r}")
    if len(matches) > 1:
        listed = "\n".join(f"  {j['id']}  {clean(j['name'])}  {j['status']}" for j in matches[:10])
        more = "\n  ..." if len(matches) > 10 else ""
        raise ClientError(f"{job_id!r} is ambiguous; it starts these jobs:\n{listed}{more}")
    return matches[0]["id"]
