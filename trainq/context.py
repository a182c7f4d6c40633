"""``TaskContext``: the small object a task's loop calls. The framework owns storage and liveness; the task
reports metrics, checkpoints and restores its state, saves artifacts, and asks whether it should stop.

The service builds one per attempt around a ``Sink`` (the worker's: throttled writes to the job's row,
heartbeats, pause and cancel requests). ``TaskContext.local()`` builds one for running a task by hand.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import IO, Any, Protocol

from trainq import safe_state
from trainq.checkpoints import (
    WriteLimitExceeded,
    checkpoint_name,
    list_checkpoints,
    newest_checkpoint,
    prune,
    write_atomically,
)

ARTIFACT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
STOP_REASONS = ("cancel", "pause", "superseded", "prune")


class Sink(Protocol):
    """Where a context's reports go and where its stop requests come from. A sink may set ``coalesce_seconds``:
    the context then hands it step-only reports (merged, the newest values) at most that often. A sink may have a
    ``track`` callable (or None): it gets every report as it is made, none merged (on the training thread: it
    must only queue it)."""

    def report(self, entry: dict[str, Any]) -> None:
        """Called on the training thread, so it must be quick. ``entry`` may hold ``Deferred`` values (CUDA
        tensors): pass it through ``resolve_entry`` before use, off the training thread where it can."""
        ...

    def progress_total(self, steps: int | None, epochs: int | None) -> None: ...

    def checkpointed(self, path: Path) -> None: ...

    def artifact_saved(self, artifact: dict[str, Any]) -> None: ...

    def stop_reason(self) -> str | None:
        """``"cancel"``, ``"pause"``, ``"superseded"`` (this attempt is no longer the job's current one), ``"prune"``
        (a sweep's pruner stopped this trial), or None."""
        ...


class LocalSink:
    """For running a task by hand: reports go to the log (every epoch's; step-only ones at most every
    ``step_line_seconds``, the others at DEBUG), nothing ever asks it to stop. ``entries`` keeps every report."""

    step_line_seconds = 2.0

    def __init__(self, log: logging.Logger | logging.LoggerAdapter) -> None:
        self.log, self.entries = log, []  # type: ignore[var-annotated]
        self.total_steps: int | None = None
        self.total_epochs: int | None = None
        self._next_step_line = 0.0

    def report(self, entry: dict[str, Any]) -> None:
        entry = resolve_entry(entry)
        self.entries.append(entry)
        level = logging.INFO
        if "epoch" not in entry:
            now = time.monotonic()
            if now < self._next_step_line:
                level = logging.DEBUG
            else:
                self._next_step_line = now + self.step_line_seconds
        if self.log.isEnabledFor(level):
            self.log.log(level, "report %s", " ".join(
                f"{name}={value:.4g}" if type(value) is float else f"{name}={value}" for name, value in entry.items()))

    def progress_total(self, steps: int | None, epochs: int | None) -> None:
        self.total_steps, self.total_epochs = steps, epochs

    def checkpointed(self, path: Path) -> None:
        self.log.info("checkpoint %s", path)

    def artifact_saved(self, artifact: dict[str, Any]) -> None:
        self.log.info("artifact %s (%s bytes)", artifact["name"], artifact["size"])

    def stop_reason(self) -> str | None:
        return None


LOCAL_FORMAT = "%(asctime)s %(name)s: %(message)s"


def show_on_stderr(log: logging.Logger) -> None:
    """Make ``log``'s INFO lines (a local context's reports) visible without any logging configuration: a
    handler on stderr, unless some handler (the program's own logging setup) already takes its records. A
    program that configures logging itself keeps its own format and level."""
    if log.hasHandlers():
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(LOCAL_FORMAT, "%H:%M:%S"))
    log.addHandler(handler)
    if log.getEffectiveLevel() > logging.INFO:
        log.setLevel(logging.INFO)
    log.propagate = False  # a later logging.basicConfig() must not print each line twice


def check_artifact_name(name: str) -> str:
    """A plain file name: no folders, no absolute paths, no ``..``; 1 to 128 of letters, digits, ``._-``."""
    if not isinstance(name, str) or not ARTIFACT_NAME.fullmatch(name) or name in (".", ".."):
        raise ValueError(f"artifact name {name!r}: use a plain file name of 1 to 128 letters, digits, '.', '_' "
                         "or '-' (no folders)")
    return name


class Deferred:
    """A metric given as a CUDA tensor: read later (``resolve_entry``), by whoever writes it, so ``report()``
    never waits for the GPU to finish the step (``.item()`` would)."""

    __slots__ = ("tensor",)

    def __init__(self, tensor: Any) -> None:
        self.tensor = tensor

    def value(self) -> float | int | None:
        import torch

        # every stream of its device: whichever stream computed it, and whichever thread asks
        torch.cuda.synchronize(self.tensor.device)
        return _finite(self.tensor.item())


def _torch_bool() -> Any:
    import torch  # imported already: the caller holds a tensor

    return torch.bool


NON_FINITE = frozenset({"NaN", "Infinity", "-Infinity"})
"""How a NaN or an infinity is kept: JSON has neither, so a metric that was one is this string (the monitor marks
it, the API and the CLI show it), never a gap that hides a diverged run."""


def non_finite(value: float) -> str:
    """``float("nan")`` -> ``"NaN"``, ``inf`` -> ``"Infinity"``, ``-inf`` -> ``"-Infinity"``."""
    return "NaN" if value != value else "Infinity" if value > 0 else "-Infinity"


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return non_finite(value)
    return value


def is_objective(name: str, primary: str | None) -> bool:
    """Whether ``fail_on_nan`` watches the metric ``name``: the task's primary metric, ``loss`` and any ``*_loss``."""
    return name == primary or name == "loss" or name.endswith("_loss")


class NonFiniteMetric(Exception):
    """An objective metric became NaN or infinite while ``fail_on_nan`` is on: the job ends failed, saying so."""

    def __init__(self, name: str, value: str, axis: str | None, at: int | None) -> None:
        super().__init__(f"{name} became {value}" + (f" at {axis} {at}" if axis else ""))
        self.name, self.value = name, value


def _number(name: str, value: Any) -> float | int | str | Deferred:
    """A reported value as a number (NaN and infinities as ``NON_FINITE`` strings: JSON has neither). Called for
    every metric of every report: the common cases first, and no more calls than it needs."""
    kind = type(value)
    if kind is float:
        return value if value - value == 0.0 else non_finite(value)  # inf - inf and nan - nan are nan
    if kind is int:
        return value
    if getattr(value, "is_cuda", False):  # a CUDA tensor: one number, read when written
        if value.numel() != 1 or value.dtype.is_complex or value.dtype == _torch_bool():
            raise TypeError(f"report(): {name} must be one number, got a tensor of {value.numel()} {value.dtype}")
        return Deferred(value.detach())  # detached: the step's autograd graph is freed as usual
    try:  # a CPU tensor or a numpy scalar
        value = value.item()
    except (AttributeError, RuntimeError, ValueError, TypeError):
        raise TypeError(f"report(): {name} must be a number, got {kind.__name__}") from None
    kind = type(value)
    if kind is float:
        return value if value - value == 0.0 else non_finite(value)
    if kind is int:
        return value
    raise TypeError(f"report(): {name} must be a number, got {kind.__name__}")


def resolve_entry(entry: dict[str, Any]) -> dict[str, Any]:
    """A report's entry as plain numbers: CUDA tensors' values read (this waits for the step that made them)."""
    if not any(type(v) is Deferred for v in entry.values()):
        return entry
    return {k: v.value() if type(v) is Deferred else v for k, v in entry.items()}


class TaskContext:
    """Passed to every task call. Attributes: ``job_id``, ``attempt``, ``device``, ``log``, ``workdir``,
    ``stop_reason``, and ``total_steps`` / ``total_epochs`` (set them for a progress bar)."""

    def __init__(self, *, job_id: str, attempt: int, checkpoint_dir: Path, artifact_dir: Path, workdir: Path,
                 log: logging.Logger | logging.LoggerAdapter, sink: Sink, device: str | None = None,
                 keep_checkpoints: int = 3, fail_on_nan: bool = False, primary_metric: str | None = None) -> None:
        self.job_id, self.attempt = job_id, attempt
        self.checkpoint_dir, self.artifact_dir, self.workdir = Path(checkpoint_dir), Path(artifact_dir), Path(workdir)
        self.log = log
        self.keep_checkpoints = keep_checkpoints
        self.stop_reason: str | None = None
        self._sink, self._device_name, self._device = sink, device, None
        self._total_steps: int | None = None
        self._total_epochs: int | None = None
        self._last_epoch: int | None = None
        self._last_step: int | None = None
        self._coalesce: float = getattr(sink, "coalesce_seconds", 0.0)
        # a sink's trackers (TensorBoard, MLflow) get every report, before any is coalesced or sampled
        self._track = getattr(sink, "track", None)
        self._steps: dict[str, Any] = {}  # step-only reports not yet handed on (merged)
        self._hand_on_at = 0.0
        self.fail_on_nan, self.primary_metric = fail_on_nan, primary_metric

    @classmethod
    def local(cls, folder: Path | None = None, device: str | None = None, job_id: str = "local",
              show_logs: bool = True) -> TaskContext:
        """A context for running a task by hand (tests, notebooks): state under ``folder`` (a temp folder if
        None), reports, checkpoints and ``ctx.log`` lines shown on stderr (``show_logs``), never asked to stop."""
        base = Path(folder) if folder else Path(tempfile.mkdtemp(prefix="trainq-local-"))
        log = logging.getLogger(f"trainq.task.{job_id}")
        if show_logs:
            show_on_stderr(log)
        return cls(job_id=job_id, attempt=1, checkpoint_dir=base / "checkpoints", artifact_dir=base / "artifacts",
                   workdir=base / "work", log=log, sink=LocalSink(log), device=device)

    # -- where to compute

    @property
    def device(self) -> Any:
        """``torch.device``: CUDA when available, unless the job's params or the worker say otherwise."""
        if self._device is None:
            import torch

            name = self._device_name or ("cuda" if torch.cuda.is_available() else "cpu")
            self._device = torch.device(name)
        return self._device

    # -- metrics

    @property
    def total_steps(self) -> int | None:
        """Set it (any time) to the number of steps the task will take: the job's progress bar uses it."""
        return self._total_steps

    @total_steps.setter
    def total_steps(self, steps: int | None) -> None:
        if steps != self._total_steps:
            self._total_steps = steps
            self._sink.progress_total(steps, self._total_epochs)

    @property
    def total_epochs(self) -> int | None:
        """Set it (any time) to the number of epochs the task will run: the job's progress bar uses it."""
        return self._total_epochs

    @total_epochs.setter
    def total_epochs(self, epochs: int | None) -> None:
        if epochs != self._total_epochs:
            self._total_epochs = epochs
            self._sink.progress_total(self._total_steps, epochs)

    def report(self, *, step: int | None = None, epoch: int | None = None, **metrics: Any) -> None:
        """Record metrics of any names at a step or an epoch (``step=`` or ``epoch=``, or both): numbers, or
        one-element tensors (pass the tensor, not ``.item()``: a CUDA tensor is read when the service writes,
        so reporting never waits for the GPU). Cheap: the service batches reports and writes them from a thread
        of its own at most once per ``PROGRESS_INTERVAL``. NaN and infinities are kept (as ``NON_FINITE``
        strings); with ``fail_on_nan``, one in an objective metric (``is_objective``) raises ``NonFiniteMetric``."""
        entry: dict[str, Any] = {}
        if step is not None:
            entry["step"] = self._last_step = step if type(step) is int else int(step)
        if epoch is not None:
            entry["epoch"] = self._last_epoch = int(epoch)
        diverged = None
        for name, value in metrics.items():
            entry[name] = number = _number(name, value)
            if type(number) is str and diverged is None and self.fail_on_nan and is_objective(name,
                                                                                              self.primary_metric):
                axis = "step" if step is not None else "epoch" if epoch is not None else None
                diverged = NonFiniteMetric(name, number, axis, step if step is not None else epoch)
        if self._track is not None:
            self._track(entry)
        if diverged is not None:  # recorded (the curve shows where), then the task stops here
            self.flush_reports()
            self._sink.report(entry)
            raise diverged
        if epoch is None and self._coalesce:
            # step-only: merged into the newest one, handed on at most every ``coalesce_seconds`` (the sink keeps
            # only the newest step-only report per write anyway)
            self._steps.update(entry)
            now = time.monotonic()
            if now >= self._hand_on_at:
                self._hand_on_at = now + self._coalesce
                self._sink.report(self._steps)
                self._steps = {}
            return
        self.flush_reports()
        self._sink.report(entry)

    def flush_reports(self) -> None:
        """Hand a merged step-only report the context still holds on to the sink now (the service does it when
        the task returns, and the context before an epoch report and before a checkpoint)."""
        if self._steps:
            self._sink.report(self._steps)
            self._steps = {}

    # -- state

    def checkpoint(self, state: Any) -> Path:
        """Save ``state`` (tensors, state dicts, numbers, strings, and lists, tuples and dicts of them:
        ``safe_state.ALLOWED``) atomically as this job's newest checkpoint, and keep only the newest
        ``keep_checkpoints``. ``restore()`` returns it, in this attempt or a later one."""
        import torch

        safe_state.check_state(state, "checkpoint()")
        self.flush_reports()  # the row written with the checkpoint shows the newest step
        safe_state.make_folder(self.checkpoint_dir, "checkpoints")
        newest = newest_checkpoint(self.checkpoint_dir)
        path = self.checkpoint_dir / checkpoint_name((newest.seq + 1) if newest else 1, self._last_epoch,
                                                     self._last_step)
        existing = list_checkpoints(self.checkpoint_dir)
        pruned = existing[:len(existing) - (self.keep_checkpoints - 1)] if self.keep_checkpoints > 0 else []
        self._write(path, lambda file: torch.save(state, file), "checkpoint", sum(c.size_bytes for c in pruned))
        prune(self.checkpoint_dir, self.keep_checkpoints)
        self._sink.checkpointed(path)
        return path

    def _write(self, path: Path, write: Any, what: str, freed: int) -> None:
        """``write_atomically`` within what the sink allows (``write_budget(freed)``: the bytes this write may take,
        ``freed`` being what it replaces or lets be pruned; None: no limit). A write that would pass it stops
        before it does, and the sink says why (``write_refused``)."""
        budget = getattr(self._sink, "write_budget", None)
        limit = budget(freed) if budget is not None else None
        try:
            write_atomically(path, write, limit=None if limit is None else max(limit, 0), what=what)
        except WriteLimitExceeded as exc:
            refused = getattr(self._sink, "write_refused", None)
            if refused is None:
                raise
            raise refused(what, exc) from None

    def restore(self) -> Any | None:
        """The newest checkpoint's state of this job (across attempts, pauses and resumes), or None. Loaded as
        data only: a checkpoint that names code (a planted pickle), or a folder that is a link or others may
        write in, raises ``safe_state.UnsafeStateError`` saying which, and nothing in it runs."""
        safe_state.check_folder(self.checkpoint_dir, "checkpoints")
        newest = newest_checkpoint(self.checkpoint_dir)
        if newest is None:
            return None
        self.log.info("restoring %s", newest.path.name)
        return safe_state.load(newest.path)

    def checkpoints(self) -> list[Path]:
        return [c.path for c in list_checkpoints(self.checkpoint_dir)]

    # -- stopping

    def should_stop(self) -> bool:
        """True once the job is cancelled, a pause is asked for, or this attempt is no longer the job's current
        one; ``stop_reason`` says which. On a pause, checkpoint before returning: the job resumes from it."""
        if self.stop_reason is None:  # once asked to stop, the answer stands: no more asking the sink
            self.stop_reason = self._sink.stop_reason()
        return self.stop_reason is not None

    # -- artifacts

    def save_artifact(self, name: str, obj: Any) -> Path:
        """Keep ``obj`` as the job's artifact ``name``: bytes as they are, a ``pathlib.Path`` by copying the file,
        anything else (``safe_state.ALLOWED``: it loads with ``weights_only=True``) with ``torch.save``. Listed and
        downloadable through the API."""
        check_artifact_name(name)
        if not isinstance(obj, bytes | bytearray | memoryview | Path):
            safe_state.check_state(obj, f"save_artifact({name!r})")
        safe_state.make_folder(self.artifact_dir, "artifacts")
        path = self.artifact_dir / name
        try:
            replaced = path.stat().st_size
        except FileNotFoundError:
            replaced = 0
        if isinstance(obj, bytes | bytearray | memoryview):
            self._write(path, lambda file: file.write(bytes(obj)), "artifact", replaced)
        elif isinstance(obj, Path):
            def copy(file: IO[bytes]) -> None:
                with open(obj, "rb") as source:
                    shutil.copyfileobj(source, file, 1 << 20)

            self._write(path, copy, "artifact", replaced)
        else:
            import torch

            self._write(path, lambda file: torch.save(obj, file), "artifact", replaced)
        digest = hashlib.sha256()
        with open(path, "rb") as file:
            for chunk in iter(lambda: file.read(1 << 20), b""):
                digest.update(chunk)
        artifact = {"name": name, "size": path.stat().st_size, "sha256": digest.hexdigest(), "created_at": time.time(),
                    "path": str(path)}
        self._sink.artifact_saved(artifact)
        return path
