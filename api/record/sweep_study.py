"""A sweep's Optuna study: its storage (Optuna's ``RDBStorage`` in the ``optuna`` schema of trainq's own
PostgreSQL), its search space as Optuna distributions, and its sampler and pruner, rebuilt from the sweep's row
wherever they are needed (the driver asks and tells in the reconciler, keeping each sweep's study between its
steps: ``kept``; a trial's pruner runs in its worker).

Optuna keeps every trial, its params and its intermediate values in the database, so the samplers and pruners
are stateless between processes: a restarted driver, or a trial's horse on another host, sees the same study.
"""

from __future__ import annotations

import math
import os
import threading
from collections import OrderedDict
from typing import Any

import optuna
from sqlalchemy.engine import Engine

from api.record import locks
from api.record.sweep_tables import Sweep

SCHEMA = "optuna"  # created by migration 0014; Optuna creates its tables in it on first use

MEDIAN_STARTUP_TRIALS = 2  # the median pruner prunes nothing until this many trials completed
MEDIAN_WARMUP = 1  # ... nor before this epoch (or step)
ASHA_REDUCTION = 3  # successive halving keeps the best 1/3 at each rung (rungs at epochs 1, 3, 9, 27, ...)

optuna.logging.set_verbosity(optuna.logging.WARNING)

_storages: dict[tuple[int, str], optuna.storages.RDBStorage] = {}
_storages_lock = threading.Lock()

KEPT_STUDIES = 64  # the driven studies a process keeps between steps (``kept``), the least recently driven dropped
_kept: OrderedDict[tuple[int, Any], optuna.Study] = OrderedDict()  # by (pid, sweep id)
_kept_lock = threading.Lock()

try:  # what ``Study.tell`` runs, without the re-read of the told trial it returns (see ``tell``)
    from optuna.study._tell import _tell_with_warning
except ImportError:  # another Optuna: its public tell
    _tell_with_warning = None


def study_name(sweep_id: Any) -> str:
    return f"trainq-sweep-{sweep_id}"


def storage(engine: Engine, fresh: bool = False) -> optuna.storages.RDBStorage:
    """Optuna's storage on ``engine``'s database, in the ``optuna`` schema (one per process, unless ``fresh``: one
    of the caller's own, as another process's would be, closed with ``close``). The first open creates Optuna's
    tables: one process at a time. A forked process (a trial's horse) takes over its parent's (the agent opens it
    before its workers fork: ``api.worker.warmup.open_sweep_storage``), with a pool of its own: opening one costs
    about 60 ms (a new engine, its first connection, Optuna's version checks), which a pruned trial's start would
    otherwise wait for."""
    url = engine.url.render_as_string(hide_password=False)
    key = (os.getpid(), url)
    kwargs = {"connect_args": {"options": f"-csearch_path={SCHEMA}"}, "pool_pre_ping": True}
    if fresh:
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, skip_compatibility_check=True,
                                          skip_table_creation=True)
    with _storages_lock:
        if key in _storages:
            return _storages[key]
        inherited = next((made for (pid, at), made in _storages.items() if at == url), None)
        if inherited is not None:  # a fork's (a horse's) copy of its agent's: checked, warm, with a pool of its own
            inherited.engine.dispose(close=False)  # the parent's connections are never used here, nor closed
            _storages[key] = inherited
            return inherited
        with engine.connect() as conn:
            locks.lock(conn, locks.Namespace.OPTUNA_SETUP, locks.OPTUNA_SETUP_KEY)
            conn.commit()
            try:
                made = optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
            finally:
                locks.unlock(conn, locks.Namespace.OPTUNA_SETUP, locks.OPTUNA_SETUP_KEY)
                conn.commit()
        _storages[key] = made
        return made


def close(store: optuna.storages.RDBStorage) -> None:
    store.engine.dispose()


def distributions(space: dict[str, Any]) -> dict[str, optuna.distributions.BaseDistribution]:
    """The sweep's space (checked: ``api.service.sweep_space``) as Optuna's distributions, in its order."""
    made: dict[str, optuna.distributions.BaseDistribution] = {}
    for name, spec in space.items():
        if spec["type"] == "float":
            made[name] = optuna.distributions.FloatDistribution(spec["low"], spec["high"], log=bool(spec.get("log")),
                                                                step=spec.get("step"))
        elif spec["type"] == "int":
            made[name] = optuna.distributions.IntDistribution(spec["low"], spec["high"], log=bool(spec.get("log")),
                                                              step=spec.get("step") or 1)
        else:
            made[name] = optuna.distributions.CategoricalDistribution(spec["choices"])
    return made


def grid(space: dict[str, Any]) -> dict[str, list[Any]]:
    """Every value of each param a grid walks (a float needs a step: checked before)."""
    values: dict[str, list[Any]] = {}
    for name, spec in space.items():
        if spec["type"] == "choice":
            values[name] = list(spec["choices"])
        else:
            step = spec.get("step") or 1
            count = int(math.floor((spec["high"] - spec["low"]) / step + 1e-9)) + 1
            values[name] = [spec["low"] + i * step if spec["type"] == "int" else round(spec["low"] + i * step, 12)
                            for i in range(count)]
    return values


def grid_size(space: dict[str, Any]) -> int:
    return math.prod(len(v) for v in grid(space).values()) if space else 1


def sampler(sweep: Sweep, trials_so_far: int) -> optuna.samplers.BaseSampler:
    """The sweep's sampler. With a seed, each ask of a random or TPE sampler gets ``seed + trials so far``: the
    sampler is rebuilt for every driver step (it keeps nothing itself), and the same seed each time would draw the
    same point again. A grid walks its points in trial-number order of one shuffle: always the sweep's seed."""
    if sweep.sampler == "grid":  # the grid's order is a shuffle by its seed: the same one at every ask
        return optuna.samplers.GridSampler(grid(sweep.space), seed=sweep.seed or 0)
    seed = None if sweep.seed is None else sweep.seed + trials_so_far
    if sweep.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def pruner(name: str) -> optuna.pruners.BasePruner:
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=MEDIAN_STARTUP_TRIALS, n_warmup_steps=MEDIAN_WARMUP)
    if name == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=ASHA_REDUCTION)
    return optuna.pruners.NopPruner()


def direction(mode: str) -> str:
    return "minimize" if mode == "min" else "maximize"


def create(sweep: Sweep, store: optuna.storages.RDBStorage) -> optuna.Study:
    return optuna.create_study(study_name=sweep.study_name, storage=store, direction=direction(sweep.objective_mode),
                               load_if_exists=True)


def load(sweep: Sweep, store: optuna.storages.RDBStorage, trials_so_far: int = 0) -> optuna.Study:
    return optuna.load_study(study_name=sweep.study_name, storage=store, sampler=sampler(sweep, trials_so_far),
                             pruner=pruner(sweep.pruner))


def kept(sweep: Sweep, store: optuna.storages.RDBStorage) -> optuna.Study:
    """The sweep's study, kept by this process between its driver's steps (``load`` on the first, and again once
    ``forget`` dropped it). ``load_study`` wraps the storage in Optuna's cache (``_CachedStorage``, as every process
    of a distributed ``optimize`` runs): it keeps the finished trials, which Optuna never changes again, and each
    read of the trials still asks the database for the unfinished ones and for those created since, whoever wrote
    them (another process's tell, a horse's reports). So a kept study reads what a fresh one would, with fewer
    round trips: no load (the study's id, its directions), no re-read of the finished trials, no look-up of a
    param's first distribution once this process wrote one. The sampler is the caller's to set at each step."""
    key = (os.getpid(), sweep.id)
    with _kept_lock:
        study = _kept.get(key)
        if study is not None and getattr(study._storage, "_backend", None) is store:
            _kept.move_to_end(key)
            return study
    study = load(sweep, store)
    with _kept_lock:
        _kept[key] = study
        while len(_kept) > KEPT_STUDIES:
            _kept.popitem(last=False)
    return study


def forget(sweep_id: Any) -> None:
    """Drop the sweep's kept study (it ended, or a step failed: the next one loads it afresh)."""
    with _kept_lock:
        _kept.pop((os.getpid(), sweep_id), None)


def keep_only(sweep_ids: Any) -> None:
    """Drop the kept studies of every sweep but these (the running ones: a sweep another process ended)."""
    pid, wanted = os.getpid(), set(sweep_ids)
    with _kept_lock:
        for key in [key for key in _kept if key[0] == pid and key[1] not in wanted]:
            del _kept[key]


def tell(study: optuna.Study, number: int, value: float | None = None,
         state: optuna.trial.TrialState | None = None) -> None:
    """``study.tell(number, value, state=state)``, less the read of the trial back that ``Study.tell`` does for its
    return value (a copy of the told trial, which no caller here looks at): Optuna's own function under it, the same
    checks, the sampler's ``after_trial`` and the write of the state and value."""
    try:
        if _tell_with_warning is None:
            study.tell(number, value, state=state)
        else:
            _tell_with_warning(study=study, trial=number, value_or_values=value, state=state)
    except RuntimeError as exc:
        # Optuna's grid sampler asks the study to stop once its grid is used up (``Study.stop``), which only an
        # ``optimize`` loop may be asked; the trial's state and value are written all the same (in a ``finally``),
        # and the driver ends the sweep at ``max_trials`` itself, the grid's size at most
        if "Study.stop" not in str(exc):
            raise


def median_at(study: optuna.Study, step: int) -> float | None:
    """The median of the completed trials' values at ``step`` (what the median pruner compared with)."""
    values = sorted(t.intermediate_values[step] for t in study.get_trials(
        deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)) if step in t.intermediate_values)
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return None
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2

