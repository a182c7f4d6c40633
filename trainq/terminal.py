"""What the trainq commands write to a terminal: the service's text with control characters shown, not sent;
the API's refusals as one line and exit status 1; JSON for scripts."""

from __future__ import annotations

import functools
import json
import re
import sys
from collections.abc import Callable
from typing import Any

import click

from trainq.client import ClientError


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
