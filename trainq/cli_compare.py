"""``trainq compare ID ID ...``: several jobs side by side in the terminal, as the monitor's compare page shows them:
their final metrics (the best of the completed jobs starred, the others' values marked partial), the params that
differ, what ran them where it differs (another code version, say), and the compare page's URL. Added to
``trainq.cli``'s group; it uses only the API client."""

from __future__ import annotations

import json
import re
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from trainq.client import Client, ClientError
from trainq.terminal import clean, emit_json, handled, resolve

MAX_COMPARED = 12  # as the compare page takes them
# for a metric no compared job's task declared as its primary one: guessed by its name (as the compare page does)
LOWER_IS_BETTER = re.compile(r"(loss|err|error|mse|mae|rmse|perplexity|seconds|time)$", re.IGNORECASE)
PROVENANCE = (("code_version", "code version"), ("package", "package"), ("package_version", "package version"),
              ("git_commit", "git commit"), ("git_dirty", "git dirty"), ("python", "Python"), ("torch", "torch"),
              ("cuda", "CUDA"), ("gpu_driver", "GPU driver"))


def _text(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _lower_is_better(name: str, jobs: list[dict[str, Any]]) -> bool:
    declared = next((job for job in jobs if job.get("metric") == name and job.get("metric_mode")), None)
    return declared["metric_mode"] == "min" if declared else bool(LOWER_IS_BETTER.search(name))


def metric_rows(jobs: list[dict[str, Any]]) -> list[list[str]]:
    """One row per final metric: each job's value; ★ on the best completed one, "(partial)" on a job that did not
    complete (its newest value, never a final one)."""
    names = sorted({name for job in jobs for name in (job.get("metrics") or {})})
    rows = []
    for name in names:
        values = [(job.get("metrics") or {}).get(name) for job in jobs]
        lower = _lower_is_better(name, jobs)
        competing = [v for v, job in zip(values, jobs, strict=True)
                     if isinstance(v, int | float) and not isinstance(v, bool) and job["status"] == "completed"]
        shown = [v for v in values if v is not None]
        best = (min(competing) if lower else max(competing)) if competing and len(shown) > 1 else None
        cells = []
        for value, job in zip(values, jobs, strict=True):
            text = _text(value)
            if value is not None and job["status"] != "completed":
                text += " (partial)"
            elif best is not None and value == best:
                text += " ★"
            cells.append(text)
        rows.append([f"{name} ({'lower' if lower else 'higher'} is better)", *cells])
    return rows


def differing_rows(jobs: list[dict[str, Any]], key: str, fields: list[tuple[str, str]]) -> list[list[str]]:
    """One row per field of ``job[key]`` whose values are not all the same."""
    rows = []
    for name, label in fields:
        values = [(job.get(key) or {}).get(name) for job in jobs]
        if len({json.dumps(v, sort_keys=True) for v in values}) > 1:
            rows.append([label, *(_text(v) for v in values)])
    return rows


@click.command("compare")
@click.argument("job_ids", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print the jobs' JSON.")
@handled
def compare_command(job_ids: tuple[str, ...], as_json: bool) -> None:
    """Compare jobs: final metrics (best completed one starred), the params and code versions that differ, and the
    compare page's URL. IDs may be unique prefixes."""
    if not 1 <= len(job_ids) <= MAX_COMPARED:
        raise ClientError(f"compare 1 to {MAX_COMPARED} jobs", field="job_ids")
    api = Client.from_environment()
    ids = list(dict.fromkeys(resolve(api, job_id) for job_id in job_ids))
    jobs = [api.call("GET", f"/api/training/{job_id}") for job_id in ids]
    url = f"{api.url}/compare?ids={','.join(ids)}"
    if as_json:
        emit_json({"jobs": jobs, "url": url})
        return
    table = Table(box=None, padding=(0, 1), header_style="dim", pad_edge=False)
    table.add_column("", no_wrap=True)
    for job in jobs:
        table.add_column(escape(f"{job['id'][:8]} {clean(job['name'])}\n{job['status']}"), overflow="fold")
    metrics = metric_rows(jobs)
    params = differing_rows(jobs, "params", [(name, name) for name in
                                             sorted({n for job in jobs for n in (job.get("params") or {})})])
    ran = differing_rows(jobs, "provenance", list(PROVENANCE))
    for title, rows, empty in (("final metrics", metrics, "none reported"), ("params that differ", params, "none"),
                               ("what ran them, where it differs", ran, "nothing differs")):
        table.add_row(f"[bold]{title}[/bold]", *([""] * len(jobs)))
        for cells in rows or [[f"  ({empty})", *([""] * len(jobs))]]:
            table.add_row(*(escape(clean(cell)) for cell in cells))
    Console(highlight=False).print(table)
    click.echo(f"compare page: {url}")
