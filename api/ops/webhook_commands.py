"""``flask --app api webhooks send``: the webhook sender as a process of its own (the reconciler also runs one,
as a thread; several senders share the work safely)."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

import click
from flask import Flask, current_app
from flask.cli import AppGroup

log = logging.getLogger(__name__)
webhooks_group = AppGroup("webhooks", help="Webhook deliveries.")


@webhooks_group.command("send")
@click.option("--once", is_flag=True, help="Fan out and send what is due once, then exit.")
def send_command(once: bool) -> None:
    """Deliver webhook events (from the outbox the status writer's transactions fill) until stopped."""
    from api.service import webhook_sender

    config = current_app.config
    if once:
        click.echo(f"{webhook_sender.run_once(config)} deliveries tried")
        return
    stop = threading.Event()

    def finish(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, finish)
    signal.signal(signal.SIGINT, finish)
    log.info("webhook sender started")
    webhook_sender.run(config, stop)


def init_app(app: Flask) -> None:
    app.cli.add_command(webhooks_group)
