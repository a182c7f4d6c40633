"""Every setting in one place: environment variable, default, and why (``pydantic-settings``: a value of the
wrong type is refused at start, naming the variable).

``load()`` reads the environment once; ``create_app(config)`` lays a mapping over it (tests do).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# "0", "false", "no" (any case) and the empty string are false; "1", "true", "yes" true
Flag = Annotated[bool, BeforeValidator(lambda v: False if isinstance(v, str) and not v.strip() else v)]


class Settings(BaseSettings):
    """Each field is an environment variable of its name; its description is the README's "why"."""

    model_config = SettingsConfigDict(case_sensitive=True, extra="ignore")

    DATABASE_URL: str = Field("postgresql://postgres@127.0.0.1:5432/trainq", description="the record of every job")
    REDIS_URL: str = Field("redis://127.0.0.1:6379/0", description="RQ's queues, workers and commands")
    QUEUE_NAME: str = Field("training", description="prefix of the RQ queues, one per task (<prefix>.<task>)")
    JOB_TIMEOUT: int = Field(7 * 24 * 3600, description="RQ kills a horse after this many seconds; training is long")
    RESULT_TTL: int = Field(7 * 24 * 3600, description="keep RQ results long enough for reconciliation to read them")
    CHECKPOINT_DIR: str = Field(
        "var/checkpoints",
        description="per-job checkpoint folders (shared storage for many hosts)",
    )
    ARTIFACT_DIR: str = Field("var/artifacts", description="per-job artifact folders (shared storage for many hosts)")
    KEEP_CHECKPOINTS: int = Field(3, description="a job keeps its newest this many checkpoints; older ones are deleted")
    DEVICE: str = Field("", description="torch device for tasks (cpu, cuda, cuda:1); empty: CUDA when available")
    PROGRESS_INTERVAL: float = Field(1.0, description="a running job writes progress to its row at most this often (s)")
    CANCEL_WAIT: float = Field(3.0, description="DELETE waits up to this long for RQ to confirm the horse is gone (s)")
    RECONCILE_INTERVAL: float = Field(2.0, description="the reconciler loop's period (s)")
    LIVENESS_INTERVAL: float = Field(
        0.25,
        description="between passes, the active reconciler looks this often for running attempts whose database "
                    "session ended (their process died) (s)",
    )
    ENQUEUE_GRACE: float = Field(
        5.0,
        description="a queued row with no RQ id younger than this is left to its submitter (s)",
    )
    HEARTBEAT_INTERVAL: float = Field(
        0.25,
        description="a running job (and each worker) beats this often, from a thread (s)",
    )
    HEARTBEAT_TIMEOUT: float = Field(
        10.0,
        description="a running job silent this long, with no live horse, is lost (s)",
    )
    LEASE_RENEW_INTERVAL: float = Field(
        1.0,
        description="a running attempt confirms its database session (its liveness and training locks) this often, "
                    "from a thread (s)",
    )
    LEASE_FENCE: float = Field(
        7.0,
        description="an attempt that could confirm neither its database session for this long nor its Redis heartbeat "
                    "stops its own training; keep it under the server's drop (10 s) (s)",
    )
    TAKEOVER_WAIT: float = Field(
        120.0,
        description="a new attempt waits this long for an older attempt of its job to let go of the job's training "
                    "lock, then fails saying so (s)",
    )
    WORKER_HEARTBEAT_TTL: float = Field(4.0, description="a worker whose heartbeat key is this old is gone (s)")
    MAX_ATTEMPTS: int = Field(
        1,
        description="attempts a job gets; a lost attempt with a checkpoint is retried if any are left",
    )
    MAX_QUEUE_AGE: int = Field(
        24 * 3600,
        description="a queued job Redis lost is re-enqueued if younger than this, else failed (s)",
    )
    DB_RETRY_SECONDS: float = Field(
        300.0,
        description="a worker retries a final status write this long while PostgreSQL is down (s)",
    )
    RECONCILE_ON_START: Flag = Field(True, description="reconcile once at API start")
    LOG_MAX_LINES: int = Field(
        10000,
        description="a job's log keeps this many lines; past it, it says it was truncated",
    )
    REDIS_TIMEOUT: float = Field(2.0, description="socket timeouts, so a dead Redis answers 503 instead of hanging")
    LOG_LEVEL: str = Field("INFO", description="logging level of the API, worker and reconciler")
    ALLOWED_HOSTS: str = Field(
        "localhost,127.0.0.1,::1",
        description="Host names (any port) the API answers; any other Host header is a 400 (DNS rebinding)",
    )
    MAX_CONTENT_LENGTH: int = Field(1048576, description="largest request body in bytes; a bigger one is a 413")
    MAX_QUEUED_JOBS: int = Field(
        100,
        description="queued jobs one user may have at a time (a user's own limit overrides it)",
    )
    JOB_DISK_LIMIT_MB: int = Field(
        10240,
        description="MB a job's checkpoints and artifacts may use; past it the job fails (0: none)",
    )
    MAX_BACKFILL_WAIT: float = Field(
        600.0,
        description="a queued job passed over this long by smaller jobs that fit gets the devices it needs held "
                    "for it, on the host where it fits soonest, as they free up (s)",
    )
    SCHEDULING: Literal["backfill", "fifo"] = Field(
        "backfill",
        description="backfill: a job that fits starts while older ones that do not fit wait; fifo: strictly in "
                    "order, a job that does not fit holds back every job behind it (head-of-line blocking, kept to "
                    "compare against: make bench-scheduler)",
    )
    SCRATCH_SWEEP_INTERVAL: float = Field(
        60.0,
        description="each host's agent, and the reconciler, removes scratch folders of dead attempts on its host "
                    "this often (and at its start) (s)",
    )
    STORAGE_MIN_FREE_MB: int = Field(
        16,
        description="a worker takes no job while CHECKPOINT_DIR or ARTIFACT_DIR has less free (MB)",
    )
    STORAGE_CHECK_INTERVAL: float = Field(
        2.0,
        description="a worker whose storage is full or unwritable checks it this often (s)",
    )
    AUTH_FAILURES: int = Field(
        10,
        description="refused bearer tokens one address may send per AUTH_FAILURE_WINDOW; more get a 429",
    )
    AUTH_FAILURE_WINDOW: int = Field(60, description="seconds over which AUTH_FAILURES counts (and Retry-After's most)")
    # webhooks and trackers (issue 25; README, Integrations)
    WEBHOOK_ALLOW_PRIVATE: Flag = Field(
        False,
        description="webhooks may reach loopback and private addresses (never link-local or the cloud metadata "
                    "address); an admin's choice, off by default (SSRF)",
    )
    WEBHOOK_TIMEOUT: float = Field(10.0, description="a webhook delivery's time limit: connect, send and answer (s)")
    WEBHOOK_MAX_ATTEMPTS: int = Field(8, description="tries of one webhook delivery before it is marked failed")
    WEBHOOK_RETRY_BASE: float = Field(
        10.0,
        description="wait before a webhook delivery's second try; doubled after each, at most an hour (s)",
    )
    WEBHOOK_DISABLE_AFTER: int = Field(
        20,
        description="a webhook whose deliveries failed this many tries in a row is disabled, with the reason",
    )
    WEBHOOK_POLL_INTERVAL: float = Field(1.0, description="the webhook sender looks for new events this often (s)")
    MONITOR_URL: str = Field(
        "http://127.0.0.1:5000",
        description="the monitor's address as people reach it: webhook deliveries link to job pages under it",
    )
    TENSORBOARD: Flag = Field(
        True,
        description="workers write every job's reports as TensorBoard event files (ARTIFACT_DIR/<job id>/tensorboard)",
    )
    MLFLOW_TRACKING_URI: str = Field("", description="workers log each job as an MLflow run there (empty: no MLflow)")
    MLFLOW_EXPERIMENT: str = Field("trainq", description="the MLflow experiment jobs' runs go in")
    TRACKER_FLUSH_TIMEOUT: float = Field(
        10.0,
        description="after a job's end is recorded, its trackers get this long to send what they hold (s)",
    )
    SWEEP_MAX_TRIALS: int = Field(1000, description="a sweep's max_trials may be at most this (a larger one is a 422)")
    SWEEP_STOP_AFTER_FAILURES: int = Field(
        3,
        description="a sweep whose first this many trials all failed stops, saying why (0: never)",
    )


def load(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The settings from the process's environment, or from ``environ`` alone."""
    if environ is None:
        return Settings().model_dump()
    given = {name: environ[name] for name in Settings.model_fields if name in environ}
    return Settings.model_validate(given).model_dump()


def describe() -> list[tuple[str, Any, str]]:
    """(name, default, why) rows: the README's configuration table is made from this."""
    return [(name, field.default, field.description or "") for name, field in Settings.model_fields.items()]
