"""Sweeps (``make bench-sweeps``), in two parts.

1. Search: what each sampler and pruner buys on a real task, the built-in ``diabetes-regression`` (val_mse, 20
   epochs a trial): random search without pruning and random + median pruning (``--trials`` trials each), TPE +
   ASHA (``--asha-trials``, at most 64, as the issue's target allows), each over the same seeds. Run in this
   process through Optuna with trainq's own samplers and pruners (``api.record.sweep_study``) and the task's own
   code (its reports judged as a trial's worker judges them), so the measure is the search, not the queue: compute
   is epochs trained; the best is the best completed trial's final val_mse.
2. The machinery, on a real stack (PostgreSQL, Redis, a worker with one slot, a reconciler as the driver, the API
   in process): a sweep of ``bench-sweep-trial`` (each epoch's report time written to a file) with ASHA, then
   - report -> stop: from the report the pruner judged to the task being told to stop (``ctx.should_stop()`` true);
   - trial end -> next trial's task entered: from a trial's task function returning to the next trial's task
     function starting (each writes the wall time), with ``parallel`` 1: the end's write, the NOTIFY, the driver's
     step (tell, ask, submit, place, enqueue), the worker's fork.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.harness import percentiles, stack, wait_for, write_result

CONFIGS = (("random", "none"), ("random", "median"), ("tpe", "asha"))


class _Trial:
    """A study's trial as the task's context sees it: each val_mse report judged by the pruner (as a trial's worker
    does), stop once pruned."""

    def __init__(self, trial: Any, metric: str) -> None:
        self.trial, self.metric, self.pruned, self.epochs = trial, metric, False, 0

    def report(self, entry: dict[str, Any]) -> None:
        if "epoch" in entry and self.metric in entry:
            self.epochs = entry["epoch"]
            self.trial.report(entry[self.metric], entry["epoch"])
            self.pruned = self.pruned or self.trial.should_prune()

    def progress_total(self, steps: int | None, epochs: int | None) -> None:
        pass

    def checkpointed(self, path: Path) -> None:
        pass

    def artifact_saved(self, artifact: dict[str, Any]) -> None:
        pass

    def stop_reason(self) -> str | None:
        return "prune" if self.pruned else None


def search(sampler: str, pruner: str, seed: int, trials: int, epochs: int) -> dict[str, Any]:
    """One search: each trial's epochs and outcome, and the best-so-far against epochs spent."""
    import optuna
    import torch

    from api.record import sweep_study
    from builtin_tasks.tasks import DiabetesParams, diabetes_regression
    from trainq.context import TaskContext

    torch.set_num_threads(1)
    space = {"lr": {"type": "float", "low": 1e-4, "high": 0.3, "log": True},
             "hidden": {"type": "int", "low": 4, "high": 256, "step": 4},
             "batch_size": {"type": "choice", "choices": [8, 16, 32, 64, 128]},
             "weight_decay": {"type": "float", "low": 1e-6, "high": 0.1, "log": True}}

    class Sweep:  # what sweep_study reads of a sweep's row
        pass

    sweep = Sweep()
    sweep.space, sweep.seed, sweep.sampler, sweep.pruner = space, seed, sampler, pruner
    study = optuna.create_study(direction="minimize", storage=optuna.storages.InMemoryStorage())
    log = logging.getLogger("bench.sweeps")
    log.setLevel(logging.WARNING)
    spent, best, curve, outcomes = 0, float("inf"), [], []
    with tempfile.TemporaryDirectory() as folder:
        for n in range(trials):
            study.sampler = sweep_study.sampler(sweep, n)
            study.pruner = sweep_study.pruner(pruner)
            trial = study.ask(sweep_study.distributions(space))
            sink = _Trial(trial, "val_mse")
            base = Path(folder) / str(n)
            ctx = TaskContext(job_id=f"bench-{n}", attempt=1, checkpoint_dir=base / "c", artifact_dir=base / "a",
                              workdir=base / "w", log=log, sink=sink, device="cpu", keep_checkpoints=1)
            params = DiabetesParams(epochs=epochs, seed=seed * 1000 + n, **trial.params)
            result = diabetes_regression(ctx, params)
            spent += sink.epochs
            if sink.pruned:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                outcomes.append({"epochs": sink.epochs, "pruned": True})
            else:
                study.tell(trial, result["val_mse"])
                best = min(best, result["val_mse"])
                outcomes.append({"epochs": sink.epochs, "pruned": False, "val_mse": result["val_mse"]})
            curve.append([spent, best if best < float("inf") else None])
    return {"sampler": sampler, "pruner": pruner, "seed": seed, "epochs_spent": spent, "best": best,
            "curve": curve, "trials": outcomes}


def machinery(trials: int) -> dict[str, Any]:
    """A sweep on a real stack: report -> pruned, and trial end -> next task entered (see the module's doc)."""
    from sqlalchemy import select

    from api.record.tables import TrainingJob
    from api.service import catalogue, sweeps
    from api.stores import db

    times = Path(tempfile.mkdtemp(prefix="bench-sweep-times-"))
    with stack() as s:
        env = {"TRAINQ_TASKS": "bench.bench_tasks"}
        s.worker("bench-sweeps", TRAINQ_SLOTS="1", **env)
        s.flask("reconciler", name="reconciler", **env)
        with s.app.app_context():
            wait_for(lambda: "bench-sweep-trial" in catalogue.catalog(), 60, "the worker to offer bench-sweep-trial")
            sweep = sweeps.create("bench-sweep-trial", {"x": {"type": "float", "low": 0.0, "high": 1.0}},
                                  params={"epochs": 8, "sleep": 0.2, "times": str(times)}, objective=None,
                                  sampler="random", pruner="asha", max_trials=trials, parallel=1, seed=11)
            wait_for(lambda: (db.session.expire_all(), sweeps.get(sweep.id).state)[1] != "running", 60 * trials,
                     "the sweep to end")
            rows = list(db.session.scalars(select(TrainingJob).where(TrainingJob.sweep_id == sweep.id)
                                           .order_by(TrainingJob.trial_number)))
            ended_at = {job.trial_number: (None, job.status, job.pruned_at, str(job.id)) for job in rows}
            db.session.commit()
    stops, starts = [], []
    seen = {number: json.loads((times / f"{v[3]}.json").read_text()) for number, v in ended_at.items()
            if (times / f"{v[3]}.json").exists()}
    for number, (_, status, pruned_at, _) in ended_at.items():
        mine = seen.get(number, {})
        if status == "pruned" and "stopped" in mine and str(pruned_at) in mine["reports"]:
            stops.append(mine["stopped"] - mine["reports"][str(pruned_at)])
        if "left" in mine and number + 1 in seen:
            starts.append(seen[number + 1]["entered"] - mine["left"])
    return {"report_to_stop_s": stops, "end_to_next_entered_s": starts,
            "statuses": [v[1] for v in ended_at.values()]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--trials", type=int, default=32, help="trials of each random search")
    parser.add_argument("--asha-trials", type=int, default=64, help="trials of each TPE + ASHA search (<= 64)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--machinery-trials", type=int, default=12)
    parser.add_argument("--machinery-only", action="store_true",
                        help="only the machinery part, into bench/results/sweeps_machinery.json (the search's "
                             "results stay as they are)")
    args = parser.parse_args()
    if args.machinery_only:
        mech = machinery(args.machinery_trials)
        summary = {k: percentiles(v) for k, v in mech.items() if k != "statuses" and v}
        print(summary)
        write_result("sweeps_machinery", {
            "description": "Sweeps on a real stack (a worker with one slot, the reconciler as driver, ASHA, parallel "
                           "1): report -> told to stop, and trial end -> next trial's task entered",
            "targets": {"report_to_stop_p50_s": "<= 1", "end_to_next_entered_p50_s": "<= 0.2"},
            "machinery": mech, "machinery_summary": summary})
        return
    runs = []
    for seed in range(args.seeds):
        for sampler, pruner in CONFIGS:  # alternating, the same seeds for each
            started = time.monotonic()
            run = search(sampler, pruner, seed, args.asha_trials if pruner == "asha" else args.trials, args.epochs)
            run["seconds"] = time.monotonic() - started
            runs.append(run)
            print(f"seed {seed} {sampler}+{pruner}: best {run['best']:.4f} with {run['epochs_spent']} epochs "
                  f"({run['seconds']:.0f} s)")
    summary = {}
    for sampler, pruner in CONFIGS:
        mine = [r for r in runs if (r["sampler"], r["pruner"]) == (sampler, pruner)]
        summary[f"{sampler}+{pruner}"] = {"best_mean": statistics.mean(r["best"] for r in mine),
                                          "best_sd": statistics.pstdev(r["best"] for r in mine),
                                          "epochs_mean": statistics.mean(r["epochs_spent"] for r in mine)}
    # compute TPE + ASHA needed to match random search's final best, seed by seed
    matched = []
    for seed in range(args.seeds):
        target = next(r for r in runs if r["seed"] == seed and r["pruner"] == "none")
        fast = next(r for r in runs if r["seed"] == seed and r["pruner"] == "asha")
        reached = next((spent for spent, best in fast["curve"] if best is not None and best <= target["best"]), None)
        matched.append({"seed": seed, "random_best": target["best"], "random_epochs": target["epochs_spent"],
                        "tpe_asha_epochs_to_match": reached,
                        "fraction": reached / target["epochs_spent"] if reached is not None else None})
    print("machinery: a real stack")
    mech = machinery(args.machinery_trials)
    print({k: (percentiles(v) if v and isinstance(v[0], float) else v) for k, v in mech.items()})
    write_result("sweeps", {
        "description": f"Sweeps: random ({args.trials} trials), random + median pruning ({args.trials} trials) and "
                       f"TPE + ASHA ({args.asha_trials} trials) on diabetes-regression, {args.epochs} epochs a trial, "
                       f"{args.seeds} seeds, compute in epochs trained; and on a real stack, "
                       "report -> told to stop and trial end -> next trial's task entered",
        "targets": {"tpe_asha_fraction_to_match_random": "<= 1/3", "report_to_stop_p50_s": "<= 1",
                    "end_to_next_entered_p50_s": "<= 0.2"},
        "runs": runs, "summary": summary, "matched": matched, "machinery": mech,
        "machinery_summary": {k: percentiles(v) for k, v in mech.items() if k != "statuses" and v},
        "run_id": str(uuid.uuid4()),
    })


if __name__ == "__main__":
    main()
