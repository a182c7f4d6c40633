"""``trainq webhooks ...`` and ``trainq tensorboard ID...``: the integrations' commands (README, Integrations).
Added to ``trainq.cli``'s group; they use only the API client."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import click

from trainq.client import Client, ClientError
from trainq.terminal import clean, emit_json, handled, resolve

EVENTS = ("completed", "failed", "cancelled", "paused", "preempted", "sweep_finished")
def _events(text: str) -> list[str]:
    chosen = [e.strip() for e in text.split(",") if e.strip()]
    unknown = [e for e in chosen if e not in EVENTS]
    if unknown or not chosen:
        raise click.BadParameter(f"choose from {', '.join(EVENTS)} (comma-separated)", param_hint="--on")
    return chosen


@click.group("webhooks")
def webhooks_group() -> None:
    """Webhooks: a signed POST when a job or a sweep ends (your own; an admin's hooks may hear everyone's)."""


@webhooks_group.command("add")
@click.argument("url")
@click.option("--on", "events", default="failed,completed", show_default=True,
              help=f"Events, comma-separated: {', '.join(EVENTS)} (sweep_finished: a sweep's end; preempted "
                   "does not fire yet).")
@click.option("--task", help="Only jobs and sweeps of this task.")
@click.option("--owner", help='Only this user\'s jobs and sweeps ("me"; admins: any user; default: yours, or for '
                              "an admin everyone's).")
@click.option("--slack", is_flag=True, help="Send Slack (or Mattermost) incoming-webhook messages.")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
@handled
def webhooks_add(url: str, events: str, task: str | None, owner: str | None, slack: bool, as_json: bool) -> None:
    """Register URL; prints the secret that signs its deliveries, once."""
    where = {k: v for k, v in {"task": task, "owner": owner}.items() if v}
    created = Client.from_environment().call("POST", "/api/webhooks", {
        "url": url, "events": _events(events), "filter": where, "format": "slack" if slack else "json"})
    if as_json:
        emit_json(created)
        return
    hook = created["webhook"]
    click.echo(f"webhook {hook['id']}: {clean(hook['url'])} on {', '.join(hook['events'])}")
    click.echo(f"secret (shown once; verify X-Trainq-Signature with it): {created['secret']}")


@webhooks_group.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
@handled
def webhooks_ls(as_json: bool) -> None:
    """Your webhooks (an admin's: everyone's)."""
    hooks = Client.from_environment().call("GET", "/api/webhooks")["webhooks"]
    if as_json:
        emit_json(hooks)
        return
    for hook in hooks:
        state = "enabled" if hook["enabled"] else f"disabled: {hook['disabled_reason']}"
        click.echo(f"{hook['id']}\t{clean(hook['url'])}\t{','.join(hook['events'])}\t{hook['owner']}\t"
                   f"{hook['format']}\t{clean(state)}")


@webhooks_group.command("rm")
@click.argument("hook_id", type=int)
@handled
def webhooks_rm(hook_id: int) -> None:
    """Delete a webhook and its deliveries."""
    click.echo(Client.from_environment().call("DELETE", f"/api/webhooks/{hook_id}")["message"])


@webhooks_group.command("enable")
@click.argument("hook_id", type=int)
@handled
def webhooks_enable(hook_id: int) -> None:
    """Enable a webhook (its failures forgotten)."""
    Client.from_environment().call("PATCH", f"/api/webhooks/{hook_id}", {"enabled": True})
    click.echo(f"webhook {hook_id} enabled")


@webhooks_group.command("disable")
@click.argument("hook_id", type=int)
@handled
def webhooks_disable(hook_id: int) -> None:
    """Disable a webhook (its deliveries wait)."""
    Client.from_environment().call("PATCH", f"/api/webhooks/{hook_id}", {"enabled": False})
    click.echo(f"webhook {hook_id} disabled")


@webhooks_group.command("deliveries")
@click.argument("hook_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
@handled
def webhooks_deliveries(hook_id: int, as_json: bool) -> None:
    """A webhook's deliveries, newest first: status, tries, last code and error."""
    found = Client.from_environment().call("GET", f"/api/webhooks/{hook_id}/deliveries")["deliveries"]
    if as_json:
        emit_json(found)
        return
    for d in found:
        about = (d["job_id"] or d.get("sweep_id") or "-")[:8]  # the job, or the sweep whose end it is
        click.echo(f"{d['id']}\t{d['event']}\t{about}\t{d['status']}\t{d['attempts']} tries\t"
                   f"{d['last_status_code'] or '-'}\t{clean(d['last_error'] or '')}")


@webhooks_group.command("send-again")
@click.argument("hook_id", type=int)
@click.argument("delivery_id")
@handled
def webhooks_send_again(hook_id: int, delivery_id: str) -> None:
    """Send a delivery again (the same idempotency key, fresh tries)."""
    Client.from_environment().call("POST", f"/api/webhooks/{hook_id}/deliveries/{delivery_id}/send-again", {})
    click.echo(f"delivery {delivery_id} queued again")


@click.command("tensorboard")
@click.argument("job_ids", nargs=-1, required=True)
@click.option("--port", type=int, default=6006, show_default=True)
@click.option("--print", "only_print", is_flag=True, help="Print the tensorboard command instead of running it.")
@handled
def tensorboard_command(job_ids: tuple[str, ...], port: int, only_print: bool) -> None:
    """Show one job's TensorBoard, or several side by side (their folders must be on this machine, as on the
    service's host or shared storage; else it prints where they are)."""
    api = Client.from_environment()
    spec, missing = [], []
    for given in job_ids:
        job_id = resolve(api, given)
        trackers = api.call("GET", f"/api/training/{job_id}/trackers")
        folder = trackers.get("tensorboard_dir")
        if not folder:
            raise ClientError(f"job {job_id} has no TensorBoard files (not run yet, or TENSORBOARD is off)")
        if not Path(folder).is_dir():
            missing.append(folder)
        spec.append(f"{job_id[:8]}:{folder}")
    command = ["tensorboard", "--logdir_spec", ",".join(spec), "--port", str(port)]
    if only_print or missing or not shutil.which("tensorboard"):
        if missing:
            click.echo(f"not on this machine: {', '.join(missing)}; run this where they are:", err=True)
        click.echo(" ".join(command))
        return
    os.execvp(command[0], command)
