"""``trainq sweep TASK --space ...``, ``trainq sweeps``, ``trainq sweep show ID``, ``trainq sweep stop ID``: a
search over a task's params (README, Sweeps). Added to ``trainq.cli``'s group; they use only the API client."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from trainq.client import Client, ClientError
from trainq.terminal import clean, emit_json, handled

console = Console(highlight=False)
POLL_SECONDS = 1.0
FOLLOW_EXIT = {"completed": 0, "failed": 1, "stopped": 2}
KINDS = {
    "uniform": ("float", False), "float": ("float", False), "loguniform": ("float", True), "logfloat": ("float", True),
    "int": ("int", False), "logint": ("int", True),
}
SPACE_HELP = ("NAME=KIND:ARGS, repeatable: lr=loguniform:1e-4:0.3, x=uniform:0:1[:STEP], hidden=int:16:256[:STEP], "
              "n=logint:1:1024, opt=choice:sgd,adam")


def _value(text: str) -> Any:
    """A value as JSON reads it (16, 0.1, true, null, [1,2]), else the text itself (sgd)."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _number(text: str, kind: str, where: str) -> float | int:
    try:
        return int(text) if kind == "int" else float(text)
    except ValueError:
        raise click.BadParameter(f"{where}: {text!r} is not {'a whole number' if kind == 'int' else 'a number'}",
                                 param_hint="--space") from None


def parse_space(texts: tuple[str, ...]) -> dict[str, Any]:
    """``--space`` options as the API's space: {name: {type, low, high, step, log} | {type: choice, choices}}."""
    space: dict[str, Any] = {}
    for text in texts:
        name, sep, rest = text.partition("=")
        kind, _, args = rest.partition(":")
        name = name.strip()
        if not sep or not name or not args:
            raise click.BadParameter(f"{text!r}: write {SPACE_HELP}", param_hint="--space")
        if kind == "choice":
            space[name] = {"type": "choice", "choices": [_value(v.strip()) for v in args.split(",")]}
            continue
        if kind not in KINDS:
            raise click.BadParameter(f"{text!r}: the kind is one of {', '.join([*KINDS, 'choice'])}",
                                     param_hint="--space")
        typ, log = KINDS[kind]
        parts = args.split(":")
        if len(parts) not in (2, 3):
            raise click.BadParameter(f"{text!r}: {kind}:LOW:HIGH[:STEP]", param_hint="--space")
        spec: dict[str, Any] = {"type": typ, "low": _number(parts[0], typ, name), "high": _number(parts[1], typ, name)}
        if log:
            spec["log"] = True
        if len(parts) == 3:
            spec["step"] = _number(parts[2], typ, name)
        space[name] = spec
    return space


def parse_objective(text: str | None) -> dict[str, str] | None:
    if text is None:
        return None
    metric, _, mode = text.partition(":")
    if not metric or mode not in ("", "min", "max"):
        raise click.BadParameter("METRIC[:min|max], e.g. val_loss:min", param_hint="--objective")
    return {"metric": metric, "mode": mode or "min"}


class _SweepGroup(click.Group):
    """``trainq sweep TASK ...`` starts a sweep; ``trainq sweep show|stop ID`` act on one."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["start", *args]
        return super().parse_args(ctx, args)


def _client() -> Client:
    return Client.from_environment()


def resolve_sweep(api: Client, sweep_id: str) -> str:
    """A sweep id from a unique prefix of it."""
    sweep_id = sweep_id.strip().lower()
    matches = [s["id"] for s in api.call("GET", "/api/sweeps")["sweeps"] if s["id"].startswith(sweep_id)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise ClientError(f"no sweep id starts with {sweep_id!r}")
    raise ClientError(f"{sweep_id!r} is ambiguous: {', '.join(m[:13] for m in matches[:10])}")


def _table(*columns: str) -> Table:
    made = Table(box=None, padding=(0, 2), header_style="dim")
    for column in columns:
        made.add_column(column)
    return made


def _num(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else "" if value is None else str(value)


def _params_text(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={_num(v)}" for k, v in params.items())


def _trials_done(sweep: dict[str, Any]) -> int:
    counts = sweep.get("trial_counts") or {}
    return sum(n for status, n in counts.items() if status in ("completed", "failed", "cancelled", "pruned"))


@click.group("sweep", cls=_SweepGroup)
def sweep_group() -> None:
    """A sweep: trainq sweep TASK --space ... starts one; trainq sweep show|stop ID."""


@sweep_group.command("start")
@click.argument("task")
@click.option("--space", "space", multiple=True, required=True, metavar="NAME=KIND:ARGS", help=SPACE_HELP + ".")
@click.option("-p", "--param", "params", multiple=True, metavar="NAME=VALUE",
              help="A fixed param, every trial's (JSON or text: -p epochs=5 -p dataset=digits); repeatable.")
@click.option("--objective", metavar="METRIC[:min|max]", help="What to optimise (default: the task's primary metric).")
@click.option("--trials", type=click.IntRange(1), default=20, show_default=True, help="Trials in all.")
@click.option("--parallel", type=click.IntRange(1, 256), default=1, show_default=True, help="Trials at once.")
@click.option("--sampler", type=click.Choice(["tpe", "random", "grid"]), default="tpe", show_default=True)
@click.option("--pruner", type=click.Choice(["none", "median", "asha"]), default="none", show_default=True)
@click.option("--seed", type=click.IntRange(0, 2**31 - 1), help="The sampler's seed.")
@click.option("--name", help="The sweep's name (its trials are NAME #n).")
@click.option("--gpus", type=click.IntRange(0, 64), help="Whole GPUs each trial needs.")
@click.option("--cpus", type=click.IntRange(1, 1024), help="CPU cores each trial needs.")
@click.option("--follow", "-f", is_flag=True, help="Then follow it until it ends (exit 0 completed, 1 failed, "
              "2 stopped).")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
@handled
def sweep_start(task: str, space: tuple[str, ...], params: tuple[str, ...], objective: str | None, trials: int,
                parallel: int, sampler: str, pruner: str, seed: int | None, name: str | None, gpus: int | None,
                cpus: int | None, follow: bool, as_json: bool) -> None:
    """Start a sweep over TASK's params."""
    fixed = {}
    for text in params:
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{text!r}: write NAME=VALUE", param_hint="--param")
        fixed[key.strip()] = _value(value)
    body: dict[str, Any] = {"task": task, "space": parse_space(space), "params": fixed, "max_trials": trials,
                            "parallel": parallel, "sampler": sampler, "pruner": pruner}
    for key, value in (("objective", parse_objective(objective)), ("seed", seed), ("name", name)):
        if value is not None:
            body[key] = value
    resources = {k: v for k, v in (("gpus", gpus), ("cpus", cpus)) if v is not None}
    if resources:
        body["resources"] = resources
    api = _client()
    answer = api.call("POST", "/api/sweeps", body)
    sweep = answer["sweep"]
    if as_json and not follow:
        emit_json(answer)
        return
    if not as_json:
        objective_text = f"{sweep['objective']['metric']} ({sweep['objective']['mode']})"
        click.echo(f"sweep {sweep['id']} ({clean(sweep['name'])}): up to {sweep['max_trials']} trials of "
                   f"{clean(sweep['task'])}, {sweep['parallel']} at once, optimising {clean(objective_text)}")
    if follow:
        code = follow_sweep(api, sweep["id"], quiet=as_json)
        if as_json:
            emit_json(api.call("GET", f"/api/sweeps/{sweep['id']}"))
        sys.exit(code)


def follow_sweep(api: Client, sweep_id: str, quiet: bool = False) -> int:
    """Print each trial as it starts and ends, then the best trial; the exit code by the sweep's end."""
    seen: dict[int, str] = {}
    try:
        while True:
            sweep = api.call("GET", f"/api/sweeps/{sweep_id}")
            metric = sweep["objective"]["metric"]
            for trial in sweep["trials"]:
                if seen.get(trial["number"]) == trial["status"] or trial["status"] == "queued":
                    continue
                seen[trial["number"]] = trial["status"]
                if not quiet:
                    value = f"  {metric} {_num(trial['objective'])}" if trial["objective"] is not None else ""
                    why = f"  ({clean(trial['status_reason'])})" if trial["status"] in ("failed", "pruned") else ""
                    click.echo(f"trial {trial['number']:>3} {trial['status']:<9} {clean(_params_text(trial['params']))}"
                               f"{value}{why}")
            if sweep["state"] != "running":
                if not quiet:
                    click.echo(f"sweep {sweep['state']}: {clean(sweep['stop_reason'] or '')}")
                    best = sweep.get("best")
                    if best:
                        click.echo(f"best: trial {best['number']}  {metric} {_num(best['objective'])}  "
                                   f"{clean(_params_text(best['params']))}  (job {best['job_id']})")
                return FOLLOW_EXIT.get(sweep["state"], 1)
            time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        click.echo(f"\nstopped watching; sweep {sweep_id} goes on. To stop it: trainq sweep stop {sweep_id[:8]}",
                   err=True)
        sys.exit(130)


@sweep_group.command("show")
@click.argument("sweep_id")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
@handled
def sweep_show(sweep_id: str, as_json: bool) -> None:
    """A sweep and its trials, best first."""
    api = _client()
    sweep = api.call("GET", f"/api/sweeps/{resolve_sweep(api, sweep_id)}")
    if as_json:
        emit_json(sweep)
        return
    objective = sweep["objective"]
    click.echo(f"sweep {sweep['id']}  {clean(sweep['name'])}  task {clean(sweep['task'])}  {sweep['state']}"
               f"{'  (' + clean(sweep['stop_reason']) + ')' if sweep['stop_reason'] else ''}")
    click.echo(f"objective {clean(objective['metric'])} ({objective['mode']}), sampler {sweep['sampler']}, pruner "
               f"{sweep['pruner']}, {_trials_done(sweep)}/{sweep['max_trials']} trials ended, {sweep['parallel']} "
               "at once")
    best = (sweep.get("best") or {}).get("number")
    sign = 1 if objective["mode"] == "min" else -1
    order = sorted(sweep["trials"], key=lambda t: (t["objective"] is None, sign * (t["objective"] or 0), t["number"]))
    listed = _table("", "trial", "status", escape(clean(objective["metric"])), "params", "job", "note")
    for trial in order:
        note = trial["status_reason"] if trial["status"] in ("failed", "pruned") else ""
        listed.add_row("*" if trial["number"] == best else "", str(trial["number"]), trial["status"],
                       _num(trial["objective"]), escape(clean(_params_text(trial["params"]))), trial["job_id"][:8],
                       escape(clean(note or ""))[:80])
    console.print(listed)


@sweep_group.command("stop")
@click.argument("sweep_id")
@handled
def sweep_stop(sweep_id: str) -> None:
    """Stop a sweep: no new trial starts, its running trials are cancelled."""
    api = _client()
    answer = api.call("DELETE", f"/api/sweeps/{resolve_sweep(api, sweep_id)}")
    click.echo(clean(answer["message"]))


@click.command("sweeps")
@click.option("--mine", is_flag=True, help="Only your own sweeps.")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
@handled
def sweeps_command(mine: bool, as_json: bool) -> None:
    """List sweeps, newest first."""
    api = _client()
    owner = None
    if mine:
        me = api.call("GET", "/api/me")
        owner = me.get("user", me).get("name")
    sweeps = api.call("GET", "/api/sweeps", owner=owner)["sweeps"]
    if as_json:
        emit_json(sweeps)
        return
    listed = _table("id", "name", "task", "state", "trials", "objective", "owner", "created")
    for sweep in sweeps:
        listed.add_row(sweep["id"][:8], escape(clean(sweep["name"])), escape(clean(sweep["task"])), sweep["state"],
                       f"{_trials_done(sweep)}/{sweep['max_trials']}",
                       escape(clean(f"{sweep['objective']['metric']} ({sweep['objective']['mode']})")),
                       escape(clean(sweep.get("owner") or "")), (sweep.get("created_at") or "")[:19].replace("T", " "))
    console.print(listed)
    if not sweeps:
        click.echo("no sweeps")
