"""Two checkouts' placement latency side by side in one run: ``bench.scheduler``'s latency part and, optionally,
``bench.sweeps``'s trial hand-over, run alternately from each checkout (its own ``.venv``), rounds interleaved so
both see the same machine, pooled per checkout into one results file of this checkout's ``bench/results``.

    python -m bench.side_by_side --base ../wt-base --new . --rounds 3 --samples 50 --handoffs 30 --name NAME

Each round runs a checkout's own code in a process of its own (``--result`` keeps its ``scheduler.json``); the
load average before and after each round is kept beside its samples."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.harness import percentiles, write_result

LATENCY = ("submit_to_entered_s", "handoff_s", "post_answered_s", "submit_to_row_running_s",
           "plain_rq_enqueue_to_entered_s")


def _commit(checkout: Path) -> str:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=checkout, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=checkout,
                           capture_output=True, text=True).stdout.strip()
    return head.stdout.strip() + ("+changes" if dirty else "")


def _run(checkout: Path, module: str, args: list[str], result: str) -> dict[str, Any]:
    python = checkout / ".venv" / "bin" / "python"
    path = checkout / "bench" / "results" / f"{result}.json"
    kept = path.read_bytes() if path.exists() else None  # a committed result stays as it was
    try:
        subprocess.run([str(python), "-m", module, *args], cwd=checkout, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        return json.loads(path.read_text())
    finally:
        if kept is None:
            path.unlink(missing_ok=True)  # a round's file is this run's, not a result of its own
        else:
            path.write_bytes(kept)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, required=True, help="the checkout to compare against")
    parser.add_argument("--new", type=Path, default=Path("."))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--handoffs", type=int, default=30)
    parser.add_argument("--sweep-pairs", type=int, default=0, help="rounds of bench.sweeps' machinery part")
    parser.add_argument("--sweep-trials", type=int, default=12)
    parser.add_argument("--name", required=True, help="the results file's name in bench/results")
    parser.add_argument("--description", default="")
    args = parser.parse_args()
    checkouts = {"base": args.base.resolve(), "new": args.new.resolve()}
    rounds: list[dict[str, Any]] = []
    for number in range(1, args.rounds + 1):
        for code, checkout in checkouts.items():
            before = os.getloadavg()
            data = _run(checkout, "bench.scheduler", ["--samples", str(args.samples), "--handoffs",
                                                      str(args.handoffs), "--modes", "", "--result", "sbs_round"],
                        "sbs_round")
            rounds.append({"round": number, "code": code, "load_average": {"start": before, "end": os.getloadavg()},
                           **{k: data["latency"][k] for k in LATENCY}})
            print(f"round {number} {code}: submit->entered p50 "
                  f"{percentiles(rounds[-1]['submit_to_entered_s'])['p50'] * 1000:.0f} ms, hand-over p50 "
                  f"{percentiles(rounds[-1]['handoff_s'])['p50'] * 1000:.0f} ms", file=sys.stderr)
    sweeps: list[dict[str, Any]] = []
    for number in range(1, args.sweep_pairs + 1):
        for code, checkout in checkouts.items():
            before = os.getloadavg()
            data = _run(checkout, "bench.sweeps", ["--machinery-only", "--machinery-trials", str(args.sweep_trials)],
                        "sweeps_machinery")
            sweeps.append({"pair": number, "code": code, "load_average": {"start": before, "end": os.getloadavg()},
                           "end_to_next_entered_s": data["machinery"]["end_to_next_entered_s"],
                           "report_to_stop_s": data["machinery"]["report_to_stop_s"]})
            print(f"sweep pair {number} {code}: trial end->next entered p50 "
                  f"{percentiles(sweeps[-1]['end_to_next_entered_s'])['p50'] * 1000:.0f} ms", file=sys.stderr)

    def pooled(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, Any]:
        return {code: {k: percentiles([v for r in rows if r["code"] == code for v in r[k]]) for k in keys}
                for code in checkouts if any(r["code"] == code for r in rows)}

    summary = pooled(rounds, LATENCY)
    write_result(args.name, {
        "description": args.description or "bench.scheduler's latency part (and bench.sweeps' hand-over) from two "
                       "checkouts, alternated round by round on the same machine",
        "base": _commit(checkouts["base"]), "new": _commit(checkouts["new"]), "params": vars(args) | {
            "base": str(args.base), "new": str(args.new)},
        "rounds": rounds, "summary": summary, "sweep_pairs": sweeps,
        "sweep_summary": pooled(sweeps, ("end_to_next_entered_s", "report_to_stop_s"))})
    for code, figures in summary.items():
        print(f"{code}: submit->entered p50 {figures['submit_to_entered_s']['p50'] * 1000:.0f} ms p99 "
              f"{figures['submit_to_entered_s']['p99'] * 1000:.0f} ms; hand-over p50 "
              f"{figures['handoff_s']['p50'] * 1000:.0f} ms; plain RQ p50 "
              f"{figures['plain_rq_enqueue_to_entered_s']['p50'] * 1000:.0f} ms")


if __name__ == "__main__":
    main()
