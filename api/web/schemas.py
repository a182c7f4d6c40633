"""The JSON API's requests and answers as pydantic models: routes parse with them (``parse``) and shape every
answer through them (``shape``), and ``/api/openapi.json`` is generated from them (``api.web.openapi``), so the
spec cannot drift from the code. Pure data: no Flask, no database.

A request that does not fit gets the API's one error shape, ``field`` being the path to fix (``params.lr``,
``limit``): a body's errors are 422s, a query's 400s."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, TypeVar
from uuid import UUID

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    WithJsonSchema,
    field_validator,
)

from api.record.status import JobStatus

M = TypeVar("M", bound=BaseModel)

MAX_PAGE = 200
CONTROL = r"\x00-\x1f\x7f-\x9f"  # C0 and C1 control characters (tabs, newlines, escapes), as a regex range


class ApiError(Exception):
    """Bad request data; ``field`` names what to fix."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------- pieces


def _text(max_length: int, description: str, controls: bool = False) -> Any:
    """A string of 1 to ``max_length`` characters with something other than whitespace (stored stripped);
    without ``controls``, no control characters."""
    banned = r"\x00" if controls else CONTROL  # PostgreSQL stores no NUL character
    pattern = rf"^[^{banned}]*[^\s{banned}][^{banned}]*$"
    return Annotated[str, Field(min_length=1, max_length=max_length, pattern=pattern, description=description)]


Name = _text(200, "what the job is called in lists (no control characters)")
Reason = _text(500, "why, as the job's status reason", controls=True)
Timestamp = Annotated[str, WithJsonSchema({"type": "string", "format": "date-time"})]
JobId = Annotated[str, WithJsonSchema({"type": "string", "format": "uuid"})]
_DIGITS = re.compile(r"[0-9]{1,10}")  # not int(): it takes "+5", " 5", "5_0" and "²"


def _digits(value: Any) -> Any:
    if isinstance(value, str) and not _DIGITS.fullmatch(value):
        raise ValueError("must be a whole number written in digits")
    return value


def _json_int(value: Any) -> Any:
    """A JSON integer: ``3`` or ``3.0`` (JSON Schema's integers), never ``true`` or ``"3"``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be an integer")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Attempts = Annotated[int, Field(ge=1, le=100), BeforeValidator(_json_int)]
Gpus = Annotated[int, Field(ge=0, le=64, description="whole GPUs, each to the job alone (no sharing, no fractions)"),
                 BeforeValidator(_json_int)]
Cpus = Annotated[int, Field(ge=1, le=1024, description="CPU cores: the job's threads and affinity follow them"),
                 BeforeValidator(_json_int)]


def _count(ge: int, le: int, description: str = "") -> Any:
    """A query parameter's integer: digits only, within ``ge..le``."""
    return Annotated[int, Field(ge=ge, le=le, description=description), BeforeValidator(_digits)]


PageSize = _count(1, MAX_PAGE, "jobs per page")
LineNumber = _count(0, 10**9, "the last line number you have (next_cursor)")
LineCount = _count(1, 5000, "lines per answer")
Minutes = _count(1, 525_600, "also fail queued jobs older than this, this pass only")


PATTERN_HELP = {
    "name": "must have a character other than whitespace, and no control characters (tabs, newlines, escapes)",
    "reason": "must have a character other than whitespace",
    "cursor": "must be a next_cursor this API returned",
    "sort": "a metric's name (lowest first), or -name (highest first)",
    "id_prefix": "must be the start of a job id (hexadecimal, with dashes where the id has them)",
}
"""What a field's ``pattern`` means, said in words when a value does not match it."""


# ---------------------------------------------------------------- requests


class ResourcesRequest(Model):
    """What a job needs; every field optional (the task's declared defaults, then {gpus: 0, cpus: 1})."""

    gpus: Gpus | None = None
    cpus: Cpus | None = None
    memory_gb: float | None = Field(None, gt=0, le=65536, description="memory its processes may use, in GB")


class SubmitRequest(Model):
    """``POST /api/training``. The spec lists one form per task, its ``params`` that task's schema."""

    task: str | None = Field(None, min_length=1, max_length=64, description="a task from GET /api/tasks")
    params: dict[str, Any] | None = Field(None, description="the task's params; left out: its defaults")
    name: Name | None = None
    max_attempts: Attempts | None = Field(None, description="attempts before the job stays failed (default 1)")
    cloned_from: UUID | None = Field(None, description="the job this one runs again (Run again); linked back")
    resources: ResourcesRequest | None = Field(None, description="what it needs of a host")
    fail_on_nan: StrictBool | None = Field(None, description="end failed when an objective metric (the task's primary "
                                     "metric, or a loss) is NaN or infinite; left out: as the task says")

    def task_and_params(self) -> tuple[str, dict[str, Any] | None]:
        if self.task is None:
            raise ApiError(422, "missing_field", "task: required (GET /api/tasks lists the tasks)", "task")
        return self.task, self.params


class MarkFailedRequest(Model):
    reason: Reason = "no reason given"


class EmptyRequest(Model):
    """State-changing calls with nothing to say take an empty body or ``{}``."""


def _id_prefixes(groups: tuple[int, ...] = (8, 4, 4, 4, 12)) -> str:
    """A regex of every start of a job id's text: hex digits, with dashes where the id has them."""
    hexes = "[0-9a-fA-F]"
    if len(groups) == 1:
        return f"{hexes}{{0,{groups[0]}}}"
    return f"{hexes}{{0,{groups[0] - 1}}}|{hexes}{{{groups[0]}}}(-({_id_prefixes(groups[1:])}))?"


IdPrefix = Annotated[str, Field(max_length=36, pattern=f"^({_id_prefixes()})$",
                                description="the start of a job id (as git takes a commit's)")]


def _when(value: Any) -> Any:
    """An ISO date (``2026-11-26``) or date-time (UTC unless it says); the datetime of its start."""
    if not isinstance(value, str):
        return value
    try:
        when = datetime.fromisoformat(value)  # Python 3.11 reads a trailing Z too
        # in UTC: PostgreSQL takes no offset beyond 15:59 (ISO allows up to 23:59)
        return when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)
    except (ValueError, OverflowError):  # OverflowError: year 1 moved across midnight
        raise ValueError("must be an ISO date (2026-11-26) or date-time (2026-11-26T08:00:00Z)") from None


When = Annotated[datetime, BeforeValidator(_when),
                 WithJsonSchema({"anyOf": [{"type": "string", "format": "date"},
                                           {"type": "string", "format": "date-time"}]})]
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
METRIC_SORT = r"^-?[A-Za-z0-9_.:/][A-Za-z0-9_.:/-]{0,99}$"


class ListQuery(Model):
    """``GET /api/training``: newest first (or by a final metric), one page at a time, narrowed by any of the
    filters (all of them together)."""

    status: JobStatus | None = None
    task: str | None = Field(None, max_length=64)
    owner: str | None = Field(None, max_length=64, description="a user's name")
    name: str | None = Field(None, max_length=200, description="a part of the job's name, any case")
    since: When | None = Field(None, description="created at or after (an ISO date or date-time)")
    until: When | None = Field(None, description="created before; a plain date takes in that whole day")
    sort: str | None = Field(None, pattern=METRIC_SORT,
                             description="a final metric: lowest first, or -metric highest first (only jobs with it)")
    id_prefix: IdPrefix | None = None
    sweep: UUID | None = Field(None, description="only this sweep's trials")
    limit: PageSize = 50
    cursor: str | None = Field(None, max_length=200, pattern=r"^[A-Za-z0-9_-]*=*$",
                               description="next_cursor of the page before (opaque)")

    @field_validator("until", mode="before")
    @classmethod
    def _whole_day(cls, value: Any) -> Any:
        """A plain date ``until`` takes in that whole day: before the next one starts."""
        if isinstance(value, str) and _DATE.fullmatch(value):
            try:
                return datetime.fromisoformat(value).replace(tzinfo=UTC) + timedelta(days=1)
            except (ValueError, OverflowError):  # OverflowError: the day after 9999-12-31
                raise ValueError("must be an ISO date (2026-11-26) before 9999-12-31, or a date-time") from None
        return value


class HistoryQuery(Model):
    format: Literal["json", "csv"] = Field("json", description="csv: a download, one row per report")
    offset: _count(0, 10**9, "skip this many reports (oldest first)") = 0  # type: ignore[valid-type]
    limit: _count(1, 10**6, "at most this many reports") | None = None  # type: ignore[valid-type]
    points: _count(2, 100_000, "downsampled to about this many reports per metric: min/max per bucket "
                   "(offset and limit are then ignored)") | None = None  # type: ignore[valid-type]


class LogsQuery(Model):
    after: LineNumber = 0
    limit: LineCount = 500


class CleanupQuery(Model):
    max_age_minutes: Minutes | None = None


# ---------------------------------------------------------------- answers


class ErrorDetail(Model):
    code: str
    message: str
    field: str | None = Field(None, description="the path to what to fix: params.hidden_sizes.1, limit, Host")
    job_status: str | None = None
    sweep_state: str | None = None


class Error(Model):
    error: ErrorDetail


class Check(Model):
    ok: bool
    error: str | None = None


class Health(Model):
    healthy: bool
    checks: dict[Literal["database", "redis"], Check] | None = Field(None, description="with a credential only")
    workers: int | None = Field(None, description="live workers (with a credential; null when Redis is down)")
    workers_paused: dict[str, str] | None = Field(
        None, description="workers that take no jobs now, and why (storage full or unwritable); with a credential")


class UserOut(Model):
    id: int
    name: str
    is_admin: bool
    disabled: bool
    max_queued_jobs: int | None
    job_disk_limit_mb: int | None
    created_at: Timestamp


class TokenOut(Model):
    id: int
    user: str
    name: str
    scope: Literal["all", "metrics"]
    created_at: Timestamp
    expires_at: Timestamp | None
    last_used_at: Timestamp | None
    revoked_at: Timestamp | None


class Me(Model):
    user: UserOut
    token: TokenOut
    via: Literal["bearer"] = Field(description="always bearer: the monitor sends its token as every script does")


class Task(Model):
    name: str
    description: str
    params_schema: dict[str, Any] = Field(description="JSON Schema (2020-12) of the task's params")
    params_order: list[str]
    workers: int | None = Field(description="live workers offering it (null: Redis unreachable)")
    code_version: str
    module: str
    metric: str | None = Field(description="the task's primary metric (@task(metric=...)): the list's main column, "
                               "its default sort")
    metric_mode: Literal["min", "max"] | None = Field(description="min: lower is better; max: higher is better")
    resources: dict[str, Any] = Field(description="its jobs' resources as the task declares them (a submit's own "
                                      "come first)")
    published_at: Timestamp


class HostGpu(Model):
    index: int
    uuid: str
    name: str
    memory_mb: int
    job: JobId | None = Field(description="the job holding it, if any")
    job_name: str | None


class Amount(Model):
    total: int
    reserved: int


class Host(Model):
    name: str = Field(description="its agent's name")
    hostname: str
    fake_gpus: bool = Field(description="pretend devices (--fake-gpus): scheduled like real ones, trained on the CPU")
    slots: int = Field(description="jobs it runs at once")
    gpus: list[HostGpu]
    cpus: Amount
    memory_mb: Amount
    jobs: int = Field(description="jobs holding a reservation on it")
    tasks: list[str] = Field(description="the tasks it offers")
    paused: dict[str, str] | None = Field(description="its workers that take no jobs now, and why (its checkpoint or "
                                          "artifact storage is full or unwritable); null while Redis cannot be read")
    started_at: Timestamp
    seen_at: Timestamp


class HostList(Model):
    hosts: list[Host]


class TaskList(Model):
    tasks: list[Task]


class Resources(Model):
    gpus: int
    cpus: int
    memory_gb: float | None


class Placement(Model):
    host: str
    worker: str | None = Field(description="the RQ worker running it (null until one took it)")
    gpus: list[int] = Field(description="its GPUs' indices on the host (CUDA_VISIBLE_DEVICES, in PCI bus order)")
    gpu_uuids: list[str]
    cpus: int
    cpu_ids: list[int]
    memory_gb: float | None


class Provenance(Model):
    """What ran an attempt, as its worker recorded it when the attempt started."""

    attempt: int
    code_version: str | None = Field(description="the hash of the task's module source its worker published")
    module: str | None
    package: str | None = Field(description="the installed distribution holding the task's module")
    package_version: str | None
    git_commit: str | None = Field(description="HEAD of the git repository holding the task's source")
    git_dirty: bool | None = Field(description="that repository had uncommitted changes")
    python: str
    torch: str | None
    cuda: str | None = Field(description="the CUDA version torch was built with")
    gpu_driver: str | None = Field(description="the NVIDIA driver's version on its host")
    hostname: str | None


class Position(Model):
    epoch: int | None
    step: int | None


class JobSummary(Model):
    """A job as lists show it."""

    id: JobId
    name: str
    owner_id: int
    owner: str | None
    status: JobStatus
    status_reason: str | None
    task: str
    params: dict[str, Any]
    epoch: int
    step: int
    total_steps: int | None = Field(description="steps the task said it takes (ctx.total_steps)")
    total_epochs: int | None = Field(description="epochs the task said it runs (ctx.total_epochs)")
    metric: str | None = Field(description="its task's primary metric when submitted; its value is in metrics")
    metric_mode: Literal["min", "max"] | None
    loss: float | None = Field(description="deprecated: the newest train_loss or loss of metrics (read metric)")
    metrics: dict[str, Any] | None = Field(description="the newest reported metrics; the final ones once ended")
    rq_job_id: str | None
    worker_name: str | None
    worker_pid: int | None
    hostname: str | None
    attempts: int
    max_attempts: int
    resume_from: str | None
    checkpoint_path: str | None
    error_message: str | None
    created_at: Timestamp
    queued_at: Timestamp | None
    started_at: Timestamp | None
    finished_at: Timestamp | None
    updated_at: Timestamp
    heartbeat_at: Timestamp | None
    log_truncated: bool
    cloned_from: JobId | None = Field(description="the job this one was run again from")
    resources: Resources | None = Field(description="what it needs: the submit's, then its task's, then defaults")
    placement: Placement | None = Field(description="where it runs: null while it waits to be placed")
    heartbeat_age_seconds: float | None
    stale: bool = Field(description="running, but its heartbeat is older than HEARTBEAT_TIMEOUT")
    resumes_at: Position | None = Field(description="paused: the epoch and step of the checkpoint it resumes from")
    provenance: Provenance | None = Field(description="what ran its newest attempt (recorded when it started)")
    fail_on_nan: bool | None = Field(description="the submit's fail_on_nan (null: as its task says)")
    sweep_id: JobId | None = Field(None, description="the sweep this job is a trial of")
    trial_number: int | None = Field(None, description="its trial number in that sweep")
    pruned_at: int | None = Field(None, description="pruned: the epoch (or step) its sweep's pruner stopped it at")


class History(Model):
    """A job's metric history: its columns (epoch, step, then each metric by name) and every report."""

    job_id: JobId
    name: str
    task: str
    columns: list[str]
    history: list[dict[str, Any]]
    history_length: int = Field(description="how many reports the job has in all")


class Job(JobSummary):
    """A job as a single read shows it: with its history of reports."""

    history: list[dict[str, Any]] = Field(description="every report with an epoch, step-only reports sampled")


class Run(Model):
    """One time the job trained: from entering running to leaving it."""

    attempt: int
    worker: str | None
    started_at: Timestamp
    ended_at: Timestamp | None = Field(description="null while it runs")
    ended_as: JobStatus | None = Field(description="the status it left running for")
    seconds: float = Field(description="to its end, or (still running) to the time of the answer")


class JobDetail(Job):
    actions: list[str] = Field(description="what its status allows now: cancel, pause, resume, ...")
    runs: list[Run] = Field(description="each time it trained (attempts, resumes), oldest first")
    first_started_at: Timestamp | None = Field(description="when it first started training")
    training_seconds: float | None = Field(description="the time it spent training, over every run")
    history: list[dict[str, Any]] = Field(description="the last 1,000 reports (the whole series: .../history)")
    history_length: int = Field(description="how many reports the job has in all")
    history_truncated: bool = Field(description="true when history holds only the last of them")


class ListedJob(JobSummary):
    """A job as the list shows it: with its first start and the time spent in its runs that ended."""

    first_started_at: Timestamp | None = Field(description="when it first started training")
    ended_runs_seconds: float | None = Field(description="the time spent training in its runs that ended (a running "
                                             "job's current run: from started_at to now)")


class JobList(Model):
    jobs: list[ListedJob]
    next_cursor: str | None


class Submitted(Model):
    job: Job
    enqueued: bool = Field(description="false: saved queued while Redis is unreachable, enqueued when it is back")
    message: str
    warning: str | None = None


class ActionResult(Model):
    success: bool
    message: str
    job: Job


class Restarted(ActionResult):
    job_id: JobId
    previous_status: str
    new_status: str
    queue_position: int | None


class CleanupReport(Model):
    checked: int
    dry_run: bool
    counts: dict[str, int]
    actions: dict[str, list[str]]
    duration_s: float


class Cancelled(ActionResult):
    rq_cancelled: bool
    cleanup: CleanupReport | None


class TrainingHealth(Model):
    healthy: bool
    orphaned_jobs: list[str]
    stale_jobs: list[str]
    total_running_db: int
    total_running_rq: int | None
    workers: int | None
    actions_pending: dict[str, int]


class Event(Model):
    id: int
    job_id: JobId
    from_status: str | None
    to_status: str
    reason: str | None
    actor: str
    user: str | None
    at: Timestamp


class Events(Model):
    events: list[Event]


class LogLine(Model):
    n: int
    line: str


class Logs(Model):
    lines: list[LogLine]
    next_cursor: int
    truncated: bool


class Checkpoint(Model):
    seq: int
    epoch: int | None
    step: int | None
    path: str
    size_bytes: int
    resume_point: bool


class Checkpoints(Model):
    checkpoints: list[Checkpoint]


class Artifact(Model):
    name: str
    size: int
    sha256: str
    attempt: int
    created_at: Timestamp
    url: str


class Artifacts(Model):
    artifacts: list[Artifact]


# ---------------------------------------------------------------- parsing and shaping


def parse(model: type[M], data: Mapping[str, Any], *, query: bool = False) -> M:
    """``data`` as ``model``, or an ``ApiError`` naming the first field to fix: 422 for a body, 400 for a
    query string."""
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        raise _error(model, exc.errors(include_url=False, include_input=False), query) from None


def _error(model: type[BaseModel], errors: list[Any], query: bool) -> ApiError:
    first = errors[0]
    path = ".".join(str(part) for part in first["loc"])
    kind = first["type"]
    status = 400 if query else 422
    noun = "parameter" if query else "field"
    if kind == "extra_forbidden":
        allowed = ", ".join(name for name, f in model.model_fields.items()
                            if not (f.json_schema_extra or {}).get("deprecated"))
        return ApiError(status, f"unknown_{noun}", f"{path}: unknown {noun} (allowed: {allowed})", path)
    if kind == "missing":
        return ApiError(status, f"missing_{noun}", f"{path}: required", path)
    message = first["msg"]
    if kind == "string_pattern_mismatch":
        message = PATTERN_HELP.get(str(first["loc"][-1]), message)
    elif kind == "value_error":
        message = message.removeprefix("Value error, ")
    elif kind == "enum":
        message = "must be one of " + ", ".join(s.value for s in JobStatus) if path == "status" else message
    return ApiError(status, f"invalid_{noun}", f"{path}: {message[0].lower()}{message[1:]}", path)


def shape(model: type[BaseModel], data: Mapping[str, Any]) -> dict[str, Any]:
    """An answer through its model: a key the model does not declare, or a value of the wrong type, is the
    server's bug and fails loudly here (never a silently different answer from the one the spec promises)."""
    return model.model_validate(data).model_dump(mode="json", exclude_unset=True)


class OpenApiDocument(BaseModel):
    """The OpenAPI 3.1 document of this API."""

    model_config = ConfigDict(extra="allow")

    openapi: str
    info: dict[str, Any]
    paths: dict[str, Any]
    components: dict[str, Any]
