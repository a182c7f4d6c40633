"""``trainq``: the command-line client of a trainq service (``trainq --help``).

Talks to the service's JSON API with a bearer token (``trainq login URL``, or ``TRAINQ_URL`` and
``TRAINQ_TOKEN``). Human tables by default, ``--json`` on every read command for scripts. Needs neither torch
nor the server's packages.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Column, Table
from rich.text import Text

from trainq.client import Client, ClientError, save_login
from trainq.terminal import clean, emit_json, handled, resolve

# follow's exit codes, by the status it stopped at: the terminal ones, and paused (it waits for a resume)
FOLLOW_EXIT = {"completed": 0, "failed": 1, "cancelled": 2, "paused": 3, "pruned": 4}
POLL_SECONDS = 1.0
console = Console(highlight=False)


def cell(value: Any) -> str:
    """``clean`` text for a rich table: its markup brackets too are shown as they are."""
    return escape(clean(value))


def table(*columns: str) -> Table:
    """A borderless table with a dim header row."""
    made = Table(box=None, padding=(0, 2), header_style="dim")
    for column in columns:
        made.add_column(column)
    return made


def fitted_table(headers: list[str], rows: list[list[str]], shrink: tuple[str, ...], width: int) -> Table:
    """A ``table`` that fits ``width`` columns: every column whole (a status is never "compl…"), but those named in
    ``shrink``, cut in that order (each down to 6 characters, with "…") until the table fits; narrower gaps
    between columns first."""
    natural = {h: max([len(h), *(len(Text.from_markup(r[i]).plain) for r in rows)]) for i, h in enumerate(headers)}
    pad = 2 if sum(natural.values()) + 4 * (len(headers) - 1) <= width else 1
    made = Table(box=None, padding=(0, pad), header_style="dim", pad_edge=False)
    excess = sum(natural.values()) + 2 * pad * (len(headers) - 1) - width
    limits: dict[str, int] = {}
    for name in shrink:
        if excess <= 0 or name not in natural:
            continue
        cut = min(excess, max(0, natural[name] - 6))
        limits[name], excess = natural[name] - cut, excess - cut
    for header in headers:
        made.add_column(header, no_wrap=True, overflow="ellipsis", max_width=limits.get(header),
                        min_width=None if header in limits else natural[header])
    for row in rows:
        made.add_row(*row)
    return made


def client() -> Client:
    return Client.from_environment()


def progress_text(job: dict[str, Any]) -> str:
    if job.get("total_steps"):
        return f"{job.get('step') or 0}/{job['total_steps']}"
    if job.get("epoch") is not None:
        return f"epoch {job['epoch']}"
    return ""


def _number_text(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def metrics_text(metrics: dict[str, Any] | None, limit: int = 4) -> str:
    if not metrics:
        return ""
    return ", ".join(f"{k} {_number_text(v)}" for k, v in list(metrics.items())[:limit])


# ------------------------------------------------------------------------------------------------- params


def parse_param(text: str, schema: dict[str, Any]) -> tuple[str, Any]:
    """``name=value`` with the value read as the task's params schema types the field."""
    name, sep, raw = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise ClientError(f"-p {text!r}: write -p NAME=VALUE", field="params")
    properties = schema.get("properties", {})
    if name not in properties:
        known = ", ".join(properties) or "none"
        raise ClientError(f"-p {name}: this task has no such param (its params: {known})", field=f"params.{name}")
    return name, _typed(raw, properties[name], name)


def _types(prop: dict[str, Any]) -> set[str]:
    found = set()
    for option in [prop, *prop.get("anyOf", []), *prop.get("oneOf", [])]:
        kind = option.get("type")
        found.update(kind if isinstance(kind, list) else [kind] if kind else [])
    return found


def _typed(raw: str, prop: dict[str, Any], name: str) -> Any:
    kinds = _types(prop)
    value = raw.strip()
    if "null" in kinds and value in ("null", "none", "None"):
        return None
    if "boolean" in kinds:
        lowered = value.lower()
        if lowered in ("true", "yes", "1", "on"):
            return True
        if lowered in ("false", "no", "0", "off"):
            return False
    if "integer" in kinds and re.fullmatch(r"[+-]?\d+", value):
        return int(value)
    if "number" in kinds:
        try:
            return float(value)
        except ValueError:
            pass
    if kinds & {"array", "object"} or not kinds:
        try:
            return json.loads(value)
        except ValueError:
            if kinds:
                raise ClientError(f"-p {name}: {value!r} is not JSON (write a list as [64,32])",
                                  field=f"params.{name}") from None
    if "string" in kinds or not kinds:
        return raw
    wanted = " or ".join(sorted(kinds - {"null"}))
    raise ClientError(f"-p {name}: {value!r} is not a valid {wanted}", field=f"params.{name}")


def read_params_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ClientError(f"{path}: cannot read it as UTF-8 text ({exc})") from None
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ClientError(f"{path}: reading YAML needs PyYAML (pip install pyyaml), or use JSON") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ClientError(f"{path}: not YAML ({exc})") from None
    else:
        try:
            loaded = json.loads(text)
        except ValueError as exc:
            raise ClientError(f"{path}: not JSON ({exc})") from None
    if not isinstance(loaded, dict):
        raise ClientError(f"{path}: must hold an object of params")
    return loaded


# ----------------------------------------------------------------------------------------------- commands


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="trainq")
def main() -> None:
    """Submit, watch and control training jobs on a trainq service.

    Start with `trainq login URL`; then `trainq tasks`, `trainq submit TASK -p name=value --follow`,
    `trainq ls`. Job ids may be shortened to any unique prefix. Every read command takes --json.
    """


@main.command()
@click.argument("url")
@click.option("--token", help="The API token (asked for, hidden, when not given).")
@handled
def login(url: str, token: str | None) -> None:
    """Check URL and a token, and keep both for later commands (in your config folder, mode 0600)."""
    token = token or click.prompt("API token", hide_input=True)
    api = Client(url.rstrip("/"), token.strip())
    me = api.call("GET", "/api/me")
    path = save_login(api.url, api.token or "")
    user = me.get("user", me) if isinstance(me, dict) else {}
    click.echo(f"logged in to {api.url} as {clean(user.get('name', '?'))}; saved in {path}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
@handled
def tasks(as_json: bool) -> None:
    """The tasks the workers offer: names, descriptions, params with defaults and bounds."""
    found = client().call("GET", "/api/tasks")["tasks"]
    if as_json:
        emit_json(found)
        return
    if not found:
        click.echo("no tasks: no worker has published any yet")
    for spec in found:
        workers = spec.get("workers")
        live = "workers unknown (Redis down)" if workers is None else f"{workers} live worker(s)"
        console.print(f"[bold]{cell(spec['name'])}[/bold]  ({live})")
        if spec.get("description"):
            console.print(f"  {cell(spec['description'].splitlines()[0])}")
        params = table("param", "type", "default", "bounds", "description")
        schema = spec.get("params_schema") or {}
        for name in spec.get("params_order") or list(schema.get("properties", {})):
            prop = schema["properties"][name]
            params.add_row(cell(name), "|".join(sorted(_types(prop))) or "any", cell(json.dumps(prop.get("default"))),
                           cell(_bounds(prop)), cell(prop.get("description", "")))
        console.print(params)
        click.echo()


def _bounds(prop: dict[str, Any]) -> str:
    parts = []
    for key, sign in (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<"),
                      ("minItems", "items >="), ("maxItems", "items <=")):
        if key in prop:
            parts.append(f"{sign} {prop[key]}")
    if "enum" in prop:
        parts.append("one of " + ", ".join(map(str, prop["enum"])))
    return " ".join(parts)


@main.command()
@click.argument("task", required=False)
@click.option("--clone", "clone_of", metavar="ID",
              help="Start from this job: its task, params and name, changed by TASK, the file and -p; recorded.")
@click.option("-p", "--param", "params", multiple=True, metavar="NAME=VALUE",
              help="A param, typed by the task's schema (-p lr=0.01 -p hidden_sizes=[64,32]); repeatable.")
@click.option("--params-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Params from a JSON (or YAML) file; -p values win.")
@click.option("--name", help="The job's name (default: the task's).")
@click.option("--max-attempts", type=int, help="Attempts allowed when a worker is lost.")
@click.option("--gpus", type=click.IntRange(0, 64), help="Whole GPUs it needs (default: the task's, else 0).")
@click.option("--cpus", type=click.IntRange(1, 1024), help="CPU cores it needs (default: the task's, else 1).")
@click.option("--memory", metavar="16G", help="Memory its processes may use (16G, 512M; default: the task's, else "
              "no limit).")
@click.option("--fail-on-nan/--no-fail-on-nan", default=None,
              help="End failed when its primary metric or a loss becomes NaN or infinite (default: as the task says).")
@click.option("--follow", "-f", is_flag=True, help="Then follow it until it ends (exit code as `follow`).")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
@handled
def submit(task: str | None, clone_of: str | None, params: tuple[str, ...], params_file: Path | None,
           name: str | None, max_attempts: int | None, gpus: int | None, cpus: int | None, memory: str | None,
           fail_on_nan: bool | None, follow: bool, as_json: bool) -> None:
    """Submit a job of TASK (or, with --clone ID, another run of that job), asking --gpus, --cpus, --memory."""
    api = client()
    source = api.call("GET", f"/api/training/{resolve(api, clone_of)}") if clone_of else None
    task = task or (source["task"] if source else None)
    if not task:
        raise ClientError("give a TASK to submit (trainq tasks lists them), or --clone ID", field="task")
    specs = {spec["name"]: spec for spec in api.call("GET", "/api/tasks")["tasks"]}
    if task not in specs:
        raise ClientError(f"unknown task {task!r}; known tasks: {', '.join(sorted(specs)) or 'none'}", field="task")
    values = dict(source["params"]) if source else {}
    values.update(read_params_file(params_file) if params_file else {})
    for text in params:
        key, value = parse_param(text, specs[task].get("params_schema") or {})
        values[key] = value
    body: dict[str, Any] = {"task": task, "params": values, "name": name or (source["name"] if source else task)}
    if source:
        body["cloned_from"] = source["id"]
    if max_attempts is not None:
        body["max_attempts"] = max_attempts
    if fail_on_nan is not None:
        body["fail_on_nan"] = fail_on_nan
    resources = {k: v for k, v in (("gpus", gpus), ("cpus", cpus), ("memory_gb", memory_gb(memory))) if v is not None}
    if resources:
        body["resources"] = resources
    answer = api.call("POST", "/api/training", body)
    job = answer["job"]
    if as_json and not follow:
        emit_json(answer)
        return
    if not as_json:
        click.echo(f"submitted {job['id']} ({clean(job['name'])}, task {clean(job['task'])}): {job['status']}")
    for note in (answer.get("warning"), answer.get("message") if not answer.get("enqueued", True) else None):
        if note:
            click.echo(f"note: {clean(note)}", err=True)
    if follow:
        code = _follow(api, job["id"], quiet=as_json)
        if as_json:
            emit_json(api.call("GET", f"/api/training/{job['id']}"))
        sys.exit(code)


@main.command("ls")
@click.option("--status", help="Only jobs in this status.")
@click.option("--task", help="Only jobs of this task.")
@click.option("--name", help="Only jobs whose name holds this (any case).")
@click.option("--owner", help="Only this user's jobs.")
@click.option("--mine", is_flag=True, help="Only your own jobs.")
@click.option("--since", metavar="DATE", help="Only jobs created on or after this date (2026-11-26) or time (UTC).")
@click.option("--until", metavar="DATE", help="Only jobs created before this time, or on or before this date.")
@click.option("--sort", metavar="METRIC", help="Best first by this final metric, lowest first; -METRIC: highest "
              "first (jobs without it are left out).")
@click.option("--limit", type=click.IntRange(1, 200), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
@handled
def list_jobs(status: str | None, task: str | None, name: str | None, owner: str | None, mine: bool,
              since: str | None, until: str | None, sort: str | None, limit: int, as_json: bool) -> None:
    """List jobs, newest first (or best first by a metric, with --sort)."""
    api = client()
    if mine:
        me = api.call("GET", "/api/me")
        owner = me.get("user", me).get("name")
    jobs = api.call("GET", "/api/training", status=status, task=task, name=name, owner=owner, since=since,
                    until=until, sort=sort, limit=limit)["jobs"]
    if as_json:
        emit_json(jobs)
        return
    metric = sort.lstrip("-") if sort else None
    headers = ["id", "name", "task", "status", "progress", *([metric] if metric else []), "owner", "created"]
    rows = []
    for job in jobs:
        value = [cell(_number_text((job.get("metrics") or {}).get(metric)))] if metric else []
        rows.append([job["id"][:8], cell(job["name"]), cell(job.get("task", "")), job["status"], progress_text(job),
                     *value, cell(job.get("owner") or ""), (job.get("created_at") or "")[:19].replace("T", " ")])
    console.print(fitted_table(headers, rows, shrink=("name", "task", "owner"), width=console.width))
    if not jobs:
        click.echo("no jobs")


def resume_text(at: dict[str, Any] | None) -> str | None:
    """A paused job's checkpoint position: where it resumes, which may be behind where it stopped."""
    if not at:
        return None
    return ", ".join(f"{axis} {at[axis]}" for axis in ("step", "epoch") if at.get(axis) is not None) or None


def duration_text(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    if seconds < 10:
        return f"{seconds:.1f} s"  # a short job's time is not "0 s"
    whole = round(seconds)
    hours, minutes, secs = whole // 3600, whole // 60 % 60, whole % 60
    return f"{hours} h {minutes} min" if hours else f"{minutes} min {secs} s" if minutes else f"{secs} s"


def runs_text(runs: list[dict[str, Any]]) -> str | None:
    """Each time it trained, when there was more than one (a pause and resume, a retry)."""
    if len(runs) < 2:
        return None
    return "\n".join(f"attempt {r['attempt']}: {r['started_at'][:19].replace('T', ' ')}, "
                     f"{duration_text(r['seconds'])} → {r['ended_as'] or 'running'}"
                     + (f" on {r['worker']}" if r.get("worker") else "") for r in runs)


def provenance_rows(ran: dict[str, Any] | None) -> list[tuple[str, str | None]]:
    """What ran its newest attempt: code version, package, git commit, library versions."""
    if not ran:
        return []
    package = f"{ran['package']} {ran.get('package_version') or ''}".strip() if ran.get("package") else None
    git = f"{ran['git_commit']}{' (dirty)' if ran.get('git_dirty') else ''}" if ran.get("git_commit") else None
    versions = ", ".join(f"{name} {ran[key]}" for key, name in (("python", "Python"), ("torch", "torch"),
                         ("cuda", "CUDA"), ("gpu_driver", "driver")) if ran.get(key))
    return [("code version", f"{ran.get('code_version')} ({ran.get('module')})"), ("package", package),
            ("git commit", git), ("versions", versions)]


def memory_gb(text: str | None) -> float | None:
    """``16G`` or ``512M`` (or a number of GB) as GB."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([GgMm]?)[Bb]?\s*", text)
    if not match:
        raise ClientError(f"--memory {text!r}: write it as 16G or 512M", field="resources.memory_gb")
    return float(match[1]) / (1024 if match[2].upper() == "M" else 1)


def placement_text(job: dict[str, Any]) -> str:
    """Where it runs: ``gpu-box-1 GPUs 0,2, 4 CPUs``; empty while it waits."""
    where = job.get("placement")
    if not where:
        return ""
    gpus = f" GPUs {','.join(map(str, where['gpus']))}" if where.get("gpus") else ""
    return f"{where['host']}{gpus}, {where['cpus']} CPU{'s' if where['cpus'] != 1 else ''}"


def resources_text(job: dict[str, Any]) -> str:
    asked = job.get("resources") or {}
    parts = [f"{asked.get('gpus', 0)} GPU(s)", f"{asked.get('cpus', 1)} CPU(s)"]
    if asked.get("memory_gb"):
        parts.append(f"{asked['memory_gb']:g} GB")
    return ", ".join(parts)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
@handled
def hosts(as_json: bool) -> None:
    """The live hosts: each GPU and the job holding it, CPUs and memory (reserved of total), tasks, last seen, and
    any worker that takes no jobs now (its disk is full) with why."""
    found = client().call("GET", "/api/hosts")["hosts"]
    if as_json:
        emit_json(found)
        return
    if not found:
        click.echo("no live host: start an agent (flask --app api worker) on each machine")
    for host in found:
        fake = " (fake GPUs)" if host.get("fake_gpus") else ""
        console.print(f"[bold]{cell(host['name'])}[/bold]  {cell(host['hostname'])}{fake}  "
                      f"CPUs {host['cpus']['reserved']}/{host['cpus']['total']}  memory "
                      f"{host['memory_mb']['reserved'] / 1024:g}/{host['memory_mb']['total'] / 1024:.0f} GB  "
                      f"{host['jobs']} job(s) in {host['slots']} slot(s)  seen {cell(host['seen_at'][11:19])}")
        if host["gpus"]:
            gpus = table("gpu", "name", "memory", "job")
            for gpu in host["gpus"]:
                holder = f"{gpu['job'][:8]} {gpu['job_name']}" if gpu.get("job") else "free"
                gpus.add_row(str(gpu["index"]), cell(gpu["name"]), f"{gpu['memory_mb'] / 1024:.0f} GB", cell(holder))
            console.print(gpus)
        console.print(f"  tasks: {cell(', '.join(host['tasks']) or 'none')}")
        for worker, why in (host.get("paused") or {}).items():
            console.print(f"  [red]paused[/red] {cell(worker)}: {cell(why)}")
        click.echo()


@main.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
@handled
def show(job_id: str, as_json: bool) -> None:
    """One job: status and why, task and params, progress, metrics, attempts."""
    api = client()
    job = api.call("GET", f"/api/training/{resolve(api, job_id)}")
    if as_json:
        emit_json(job)
        return
    rows = [("id", job["id"]), ("name", job["name"]), ("task", job.get("task")),
            ("status", f"{job['status']}: {job.get('status_reason') or ''}"), ("owner", job.get("owner")),
            ("params", json.dumps(job.get("params"), sort_keys=True)), ("resources", resources_text(job)),
            ("placement", placement_text(job)), ("progress", progress_text(job)),
            ("resumes from", resume_text(job.get("resumes_at"))),
            ("metrics", metrics_text(job.get("metrics"), limit=20)),
            ("attempts", f"{job.get('attempts')} of {job.get('max_attempts')}"), ("worker", job.get("worker_name")),
            ("created", job.get("created_at")), ("started", job.get("first_started_at") or job.get("started_at")),
            ("finished", job.get("finished_at")), ("training time", duration_text(job.get("training_seconds"))),
            ("runs", runs_text(job.get("runs") or [])), *provenance_rows(job.get("provenance")),
            ("actions", ", ".join(job.get("actions") or []))]
    fields = Table(box=None, show_header=False, padding=(0, 2))
    fields.add_column(style="dim")
    fields.add_column()
    for key, value in rows:
        if value not in (None, ""):
            fields.add_row(key, cell(value))
    console.print(fields)
    if job.get("error_message"):
        click.echo("\n" + clean(job["error_message"].rstrip()))


@main.command()
@click.argument("job_id")
@click.option("--follow", "-f", is_flag=True, help="Keep printing lines as they come, until the job ends.")
@handled
def logs(job_id: str, follow: bool) -> None:
    """The job's log."""
    api = client()
    job_id = resolve(api, job_id)
    after, ended = 0, not follow
    try:
        while True:
            page = api.call("GET", f"/api/training/{job_id}/logs", after=after, limit=5000)
            for line in page["lines"]:
                click.echo(clean(line["line"]))
            after = page["next_cursor"]
            if page["lines"]:
                continue
            if ended:
                return
            # once it has ended, one more read for the lines written just before the end
            ended = api.call("GET", f"/api/training/{job_id}")["status"] in FOLLOW_EXIT
            if not ended:
                time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        _detached(job_id)


def _action(path: str, method: str = "POST", body: dict[str, Any] | None = None) -> Callable[[str], None]:
    def run(job_id: str) -> None:
        api = client()
        job_id = resolve(api, job_id)
        answer = api.call(method, f"/api/training/{job_id}{path}", body if body is not None else {})
        click.echo(clean(answer.get("message") or f"{job_id}: {answer.get('job', {}).get('status')}"))

    return run


for _name, _path, _method, _help in (
    ("cancel", "", "DELETE", "Cancel the job: its training process is stopped."),
    ("pause", "/pause", "POST", "Pause the job at its newest checkpoint (resume it later)."),
    ("resume", "/resume", "POST", "Resume a paused (or failed) job from its newest checkpoint."),
    ("force-start", "/force-start", "POST", "Start the job again from scratch, as a new attempt."),
):
    main.command(_name, help=_help)(click.argument("job_id")(handled(_action(_path, _method))))


@main.command("mark-failed")
@click.argument("job_id")
@click.option("--reason", required=True, help="Why; recorded on the job.")
@handled
def mark_failed(job_id: str, reason: str) -> None:
    """Mark a job failed by hand (its training is stopped)."""
    _action("/mark-failed", body={"reason": reason})(job_id)


@main.command()
@click.argument("job_id")
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write it here, not to stdout.")
@handled
def history(job_id: str, fmt: str, output: Path | None) -> None:
    """A job's metric history (every report, epoch and step), as CSV or JSON."""
    api = client()
    job_id = resolve(api, job_id)
    with open(output, "wb") if output else contextlib.nullcontext(sys.stdout.buffer) as out:
        api.download(f"/api/training/{job_id}/history?format={fmt}", out)
        out.flush()
    if output:
        click.echo(f"wrote {output}")


@main.command()
@click.argument("job_id")
@click.option("--get", "name", help="Download this artifact.")
@click.option("-o", "--output", type=click.Path(dir_okay=True, path_type=Path),
              help="Where to write it (default: its name, here).")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
@handled
def artifacts(job_id: str, name: str | None, output: Path | None, as_json: bool) -> None:
    """List a job's artifacts, or download one with --get NAME."""
    api = client()
    job_id = resolve(api, job_id)
    if name:
        target = output or Path(name)
        if target.is_dir():
            target = target / name
        if not target.parent.is_dir():
            raise ClientError(f"-o {target}: no folder {target.parent}")
        partial = target.with_name(f".{target.name}.part")
        try:  # into a file of its own first: a failed download leaves whatever was at the target alone
            with open(partial, "wb") as out:
                size = api.download(f"/api/training/{job_id}/artifacts/{name}", out)
            partial.replace(target)
        except OSError as exc:
            raise ClientError(f"cannot write {target}: {exc.strerror or exc}") from None
        finally:
            partial.unlink(missing_ok=True)
        click.echo(f"wrote {target} ({size} bytes)")
        return
    found = api.call("GET", f"/api/training/{job_id}/artifacts")["artifacts"]
    if as_json:
        emit_json(found)
        return
    listed = table("name", "size", "sha256", "saved")
    for artifact in found:
        listed.add_row(cell(artifact["name"]), str(artifact["size"]), artifact["sha256"][:16],
                      str(artifact.get("created_at", ""))[:19].replace("T", " "))
    console.print(listed)
    if not found:
        click.echo("no artifacts")


@main.command()
@click.argument("job_id")
@handled
def follow(job_id: str) -> None:
    """Watch a job until it ends: a progress bar, its status and latest metrics.

    Exit code: 0 completed, 1 failed, 2 cancelled, 3 paused, 4 pruned (a sweep's trial). Ctrl-C stops watching;
    the job goes on.
    """
    api = client()
    sys.exit(_follow(api, resolve(api, job_id)))


def _follow(api: Client, job_id: str, quiet: bool = False) -> int:
    fixed = Column(no_wrap=True)  # the bar's numbers never give way to the metrics, which wrap instead
    columns = (TextColumn("{task.description}", table_column=fixed), BarColumn(bar_width=24),
               MofNCompleteColumn(table_column=Column(no_wrap=True)), TimeElapsedColumn(table_column=fixed),
               TextColumn("{task.fields[metrics]}", table_column=Column(overflow="fold")))
    try:
        with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
            shown = bar.add_task(job_id[:8], total=None, metrics="")
            while True:
                job = api.call("GET", f"/api/training/{job_id}")
                bar.update(shown, description=f"{job_id[:8]} {job['status']}", total=job.get("total_steps"),
                           completed=job.get("step") or 0, metrics=cell(metrics_text(job.get("metrics"))))
                if job["status"] in FOLLOW_EXIT:
                    break
                time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        _detached(job_id)
    if quiet:
        return FOLLOW_EXIT[job["status"]]
    click.echo(f"{job_id} {job['status']}: {clean(job.get('status_reason') or '')}")
    if job.get("metrics"):
        click.echo(f"metrics: {clean(metrics_text(job['metrics'], limit=50))}")
    return FOLLOW_EXIT[job["status"]]


def _detached(job_id: str) -> None:
    click.echo(f"\nstopped watching; job {job_id} goes on. To cancel it: trainq cancel {job_id[:8]}", err=True)
    sys.exit(130)


from trainq.cli_compare import compare_command  # noqa: E402 - added to the group above
from trainq.cli_integrations import tensorboard_command, webhooks_group  # noqa: E402 - added to the group above
from trainq.cli_sweeps import sweep_group, sweeps_command  # noqa: E402 - added to the group above

main.add_command(webhooks_group)
main.add_command(tensorboard_command)
main.add_command(compare_command)
main.add_command(sweep_group)
main.add_command(sweeps_command)

if __name__ == "__main__":
    main()
