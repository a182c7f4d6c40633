"""Operations as ``flask --app api <command>``: worker, reconciler, cleanup, users, tokens (``db upgrade`` is
Flask-Migrate's)."""

from __future__ import annotations

import json
import logging
import select
import sys
import time
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import click
import psycopg2
from flask import Flask, current_app
from flask.cli import AppGroup
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from api.dev.servers import mask
from api.record import locks
from api.record.status import Actor
from api.stores import db, redis_client, redis_connection, unreachable

log = logging.getLogger(__name__)



class DependencyDown(RuntimeError):
    pass


def check_dependencies() -> None:
    """Raise ``DependencyDown`` with a message that says which server is unreachable and where."""
    errors = unreachable()
    if "database" in errors:
        url = db.engine.url.render_as_string(hide_password=True)
        reason = getattr(errors["database"], "orig", None) or errors["database"]
        raise DependencyDown(f"cannot reach PostgreSQL at {url} (DATABASE_URL): {reason}")
    if "redis" in errors:
        url = mask(current_app.config["REDIS_URL"])
        raise DependencyDown(f"cannot reach Redis at {url} (REDIS_URL): {errors['redis']}")


def reconcile_once(actor: Actor) -> None:
    from api.service.reconcile import run_pass

    try:
        run_pass(actor=actor)
    except (RedisError, SQLAlchemyError) as exc:
        db.session.rollback()
        log.warning("reconcile skipped: %s", exc)


@click.command("worker")
@click.option("--name", default=None, help="The agent's name, unique (default: random). One slot: its RQ worker's "
              "name too; more: its workers are <name>-<n>.")
@click.option("--burst", is_flag=True, help="Exit once the queue is empty.")
@click.option("--gpus", envvar="TRAINQ_GPUS", default=None, metavar="0,2|none",
              help="Offer only these GPUs (NVML indices), or none (TRAINQ_GPUS; default: every GPU found).")
@click.option("--fake-gpus", envvar="TRAINQ_FAKE_GPUS", type=click.IntRange(0, 64), default=0, show_default=True,
              help="Declare N pretend GPUs on a host without any (tests, demos, CI): scheduled like real ones; a job "
                   "on them sees CUDA_VISIBLE_DEVICES and trains on the CPU (TRAINQ_FAKE_GPUS).")
@click.option("--cpus", envvar="TRAINQ_CPUS", type=click.IntRange(1, 1024), default=None,
              help="CPU cores to offer (TRAINQ_CPUS; default: the cores this process may use).")
@click.option("--memory", envvar="TRAINQ_MEMORY", default=None, metavar="64G",
              help="Memory to offer (TRAINQ_MEMORY; default: the host's).")
@click.option("--slots", envvar="TRAINQ_SLOTS", type=click.IntRange(1, 256), default=None,
              help="Jobs to run at once (TRAINQ_SLOTS; default: one per CPU offered).")
@click.option("--host-name", envvar="TRAINQ_HOST_NAME", default=None,
              help="The host's name as trainq shows it and names its fake GPUs (default: the machine's).")
def worker_command(name: str | None, burst: bool, gpus: str | None, fake_gpus: int, cpus: int | None,
                   memory: str | None, slots: int | None, host_name: str | None) -> None:
    """Run this host's agent: it registers what the host has (GPUs through NVML, CPUs, memory), offers the tasks
    installed here, and runs as many jobs at once as it has slots, each on the devices the scheduler reserved.

    Task modules are imported once, now (entry points in the group ``trainq.tasks``, and the modules named
    in ``TRAINQ_TASKS``); what they offer is published for the API. A module that fails to import is logged with
    its traceback and offers nothing."""
    import uuid

    name = name or uuid.uuid4().hex
    starting = StartingBeat(name)  # until it has published: a submit of a task not offered yet is "retry soon"
    try:
        _run_agent(name, burst, gpus, fake_gpus, cpus, memory, slots, host_name, starting)
    finally:
        starting.done()


class StartingBeat:
    """Says in Redis that agent ``name`` is starting (``api.queue.starting_key``), renewed from a thread until
    ``done()``: once it has published its tasks, or when it fails before."""

    def __init__(self, name: str) -> None:
        from api.queue import STARTING_TTL, starting_key
        from api.worker.liveness import Beat

        self.conn, self.key = redis_connection.get(), starting_key(name)

        def say() -> None:
            try:
                self.conn.set(self.key, "starting", ex=STARTING_TTL)
            except RedisError:
                pass

        self.beat = Beat(f"agent-starting-{name}", STARTING_TTL / 6, say)
        self.beat.start()

    def done(self) -> None:
        if self.beat.is_alive():
            self.beat.stop()
            try:
                self.conn.delete(self.key)
            except RedisError:
                pass


def _run_agent(name: str, burst: bool, gpus: str | None, fake_gpus: int, cpus: int | None, memory: str | None,
               slots: int | None, host_name: str | None, starting: StartingBeat) -> None:
    import trainq
    from api.queue import SERIALIZER, ServiceJob, clear_dead_worker, get_queue, host_queue_name, worker_names
    from api.scheduler.hosts import HostRefused
    from api.service import catalogue
    from api.worker import scratch
    from api.worker.agent import HostLease, TrainingWorker, import_lazy_modules, run_workers, schedule_now
    from api.worker.inventory import InventoryError, take_stock
    from api.worker.liveness import Beat
    from api.worker.warmup import compile_attempt_statements, open_sweep_storage
    from trainq import provenance

    cfg = current_app.config
    try:
        inventory = take_stock(name, gpus, fake_gpus, cpus, memory, slots, host_name)
    except InventoryError as exc:
        raise click.ClickException(str(exc)) from None
    for worker_name in worker_names(name, inventory.slots):
        before = clear_dead_worker(worker_name, cfg["WORKER_HEARTBEAT_TTL"] + 1)
        if before == "alive":
            raise click.ClickException(f"a live worker named {worker_name!r} is running (its heartbeat is fresh): "
                                       "stop it first, or give this one another --name")
        if before == "cleared":
            log.warning("worker %s: a worker of this name died without a goodbye (no heartbeat); its registration "
                        "is cleared", worker_name)
    scratch.sweep()  # scratch folders of attempts that died with an earlier worker on this host (SIGKILL)
    loaded = trainq.load_task_modules()  # once, here: never per job (torch is imported once too)
    for module, trace in loaded.errors.items():
        log.error("task module %s failed to import; its tasks are not offered:\n%s", module, trace)
    import_lazy_modules()
    offered = loaded.tasks
    if not offered:
        raise click.ClickException(
            "no task to offer: install a package with a 'trainq.tasks' entry point or name modules in TRAINQ_TASKS")
    lease = HostLease(db.engine, inventory)
    try:
        lease.acquire()
    except HostRefused as exc:
        raise click.ClickException(str(exc)) from None
    lease.start()
    try:
        catalogue.publish(name, [task.spec() for task in offered.values()])
        starting.done()
        for task in offered.values():  # where each task's code comes from, as imported (its horses inherit it)
            provenance.source(task.module)
        devices = ", ".join(f"{g.index} ({g.name})" for g in inventory.gpus) or "none"
        log.info("agent %s on %s offers %s: %d CPUs, %d MB, GPUs %s%s, %d slot(s)", name, inventory.hostname,
                 ", ".join(offered), inventory.cpus, inventory.memory_mb, devices,
                 " (fake)" if inventory.fake else "", inventory.slots)
        reconcile_once(Actor.WORKER)
        schedule_now(name)
        # what every horse would compile afresh, compiled once here (its workers and horses inherit it)
        compile_attempt_statements(next(iter(offered.values())), redis_connection.get())
        open_sweep_storage()
        db.session.remove()
        db.engine.dispose()  # the workers and horses must start without the parent's pooled connections
        queue_name = host_queue_name(name)

        def make(worker_name: str) -> TrainingWorker:
            # a client of its own: RQ raises its socket timeout above its BLPOP's, which reaches only connections
            # made after that (the app's pool already has some with REDIS_TIMEOUT, from the agent's start; a BLPOP
            # on one of those times out, and RQ then quits)
            conn = redis_client(cfg["REDIS_URL"], cfg["REDIS_TIMEOUT"])
            return TrainingWorker(
                [get_queue(queue_name, conn)], connection=conn, name=worker_name,
                heartbeat_redis=redis_client(cfg["REDIS_URL"], cfg["REDIS_TIMEOUT"]),
                heartbeat_interval=cfg["HEARTBEAT_INTERVAL"], heartbeat_ttl=cfg["WORKER_HEARTBEAT_TTL"],
                storage_folders=(cfg["CHECKPOINT_DIR"], cfg["ARTIFACT_DIR"]),
                storage_min_free=cfg["STORAGE_MIN_FREE_MB"] * 2**20,
                storage_check_interval=cfg["STORAGE_CHECK_INTERVAL"],
                serializer=SERIALIZER, job_class=ServiceJob,
            )

        # every host has an agent: each sweeps its own scratch folders of attempts that died (a SIGKILLed worker's)
        sweeper = Beat("scratch-sweep", cfg["SCRATCH_SWEEP_INTERVAL"], scratch.sweep)
        sweeper.start()
        try:
            run_workers(make, name, inventory.slots, burst, current_app.config["LOG_LEVEL"])
        finally:
            sweeper.stop()
    finally:
        lease.release()


@click.command("reconciler")
@click.option("--interval", type=float, default=None, help="Seconds between passes (RECONCILE_INTERVAL).")
@click.option("--once", is_flag=True, help="Run one pass and exit.")
def reconciler_command(interval: float | None, once: bool) -> None:
    """Reconcile job rows with RQ every few seconds; of several reconcilers, one is active at a time. It refuses
    to go on while PostgreSQL has a ``trust`` rule (checked before every full pass)."""
    from api.ops.pg_trust import TrustRuleError, refuse_trust

    period = interval if interval is not None else current_app.config["RECONCILE_INTERVAL"]
    if not once:  # webhook deliveries too, from a thread (api.service.webhook_sender)
        from api.service import webhook_sender

        webhook_sender.start_thread(current_app._get_current_object())
    try:
        _reconcile(period, once, lambda: refuse_trust(db.engine))
    except TrustRuleError as exc:
        raise click.ClickException(str(exc)) from None


def _reconcile(period: float, once: bool, check: Callable[[], None]) -> None:
    if once:
        try:
            check()
        except SQLAlchemyError as exc:  # as reconcile_once does when the database is down
            log.warning("reconcile skipped: %s", exc)
            return
        reconcile_once(Actor.RECONCILER)
        return
    from api.service.reconcile import run_pass
    from api.worker import scratch

    fast = current_app.config["LIVENESS_INTERVAL"]
    lock_conn, next_pass, next_sweep, listening = None, 0.0, 0.0, None
    while True:
        if time.monotonic() >= next_sweep:  # this host's scratch folders whose attempts died (api.worker.scratch)
            next_sweep = time.monotonic() + current_app.config["SCRATCH_SWEEP_INTERVAL"]
            scratch.sweep()
        try:
            if lock_conn is not None:
                lock_conn.execute(text("SELECT 1"))  # still holding it? (a PostgreSQL restart drops the lock)
                lock_conn.commit()  # idle outside a transaction: PostgreSQL delivers NOTIFYs only then
            else:
                lock_conn = db.engine.connect()
                held = locks.try_lock(lock_conn, locks.Namespace.RECONCILER, locks.RECONCILER_KEY)
                lock_conn.commit()
                if not held:
                    lock_conn.close()
                    lock_conn = None
                    log.debug("another reconciler is active; standing by")
                else:  # a full pass once it listens: what woke no one while no session listened is placed now
                    next_pass = 0.0
            if lock_conn is not None:
                if listening is not lock_conn:  # the scheduler's wake-ups: every submit, release, re-queue
                    lock_conn.execute(text("LISTEN trainq_scheduler"))
                    lock_conn.commit()
                    listening = lock_conn
                if time.monotonic() >= next_pass:
                    next_pass = time.monotonic() + period
                    check()
                    reconcile_once(Actor.RECONCILER)
                    _schedule_once()
                    _drive_sweeps()  # the safety net: a trial's end also wakes it (below)
                else:  # between passes: only the running attempts whose database session has ended
                    run_pass(ended_sessions_only=True)
        except SQLAlchemyError as exc:
            log.warning("reconciler: database unreachable (%s); retrying", exc.__class__.__name__)
            if lock_conn is not None:
                lock_conn.invalidate()
                lock_conn = None
        db.session.remove()
        if lock_conn is None:
            time.sleep(period)
        elif _woken(lock_conn, min(fast, period)):
            _schedule_once()  # what woke it first: a submit's job, or a waiting job on what a release freed
            if _drive_sweeps():  # a trial that ended (its release woke us) has its next submitted: placed now
                _schedule_once()
            db.session.remove()


def _woken(conn: Any, timeout: float) -> bool:
    """Wait up to ``timeout`` for a NOTIFY on ``trainq_scheduler``; True when one came."""
    raw = conn.connection.dbapi_connection
    try:
        # one that came with the answer to a query on this connection (the loop's ``SELECT 1``) is read already:
        # the socket would stay quiet until the timeout
        if not raw.notifies and not select.select([raw], [], [], timeout)[0]:
            return False
        raw.poll()
    except (OSError, psycopg2.Error):
        return False
    woken = bool(raw.notifies)
    raw.notifies.clear()
    return woken


def _schedule_once() -> None:
    from api.scheduler.schedule import schedule

    try:
        schedule()
    except (SQLAlchemyError, RedisError) as exc:
        log.warning("scheduling pass failed (%s); the next one retries", exc.__class__.__name__)


def _drive_sweeps() -> bool:
    """The sweep driver's step of every running sweep (api.service.sweep_driver), in the active reconciler only;
    whether any sweep is running."""
    from api.service.sweep_driver import drive

    try:
        return drive()
    except SQLAlchemyError as exc:
        db.session.rollback()
        log.warning("sweep driver skipped (%s); the next wake-up retries", exc.__class__.__name__)
        return True


def pass_once(dry_run: bool, as_json: bool) -> int:
    """One reconcile pass, as cron runs it (``api.cron``): exit 0 on success, 2 when a dependency is unreachable."""
    from api.service.reconcile import run_pass

    try:
        check_dependencies()
        report = run_pass(dry_run=dry_run, actor=Actor.CLEANUP_SCRIPT)
    except DependencyDown as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (RedisError, SQLAlchemyError) as exc:
        print(f"error: cleanup interrupted, a dependency failed mid-run: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_dict()) if as_json else report.summary())
    return 0


@click.command("cleanup")
@click.option("--dry-run", is_flag=True, help="Report what would change; write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def cleanup_command(dry_run: bool, as_json: bool) -> None:
    """One reconcile pass, now (what cron runs)."""
    sys.exit(pass_once(dry_run, as_json))


users_group = AppGroup("users", help="Manage users: create, list, disable, enable.")
tokens_group = AppGroup("tokens", help="Manage API tokens: create (printed once), list, revoke.")


def _management(action: Callable[..., None]) -> Callable[..., None]:
    """Run a management action; a refusal (unknown user, name taken, ...) is a one-line error, exit 1."""
    from api.service.users import UserError

    @wraps(action)
    def wrapped(*args: Any, **kwargs: Any) -> None:
        try:
            return action(*args, **kwargs)
        except UserError as exc:
            raise click.ClickException(str(exc)) from None
        except SQLAlchemyError as exc:  # most often: the environment names no database (or the wrong one)
            raise click.ClickException(
                f"cannot use the database at {mask(current_app.config['DATABASE_URL'])}: "
                f"{str(getattr(exc, 'orig', exc)).strip().splitlines()[0]} (after make run: set -a; . var/local.env; "
                "set +a)") from None

    return wrapped


@users_group.command("create")
@click.argument("name")
@click.option("--admin", is_flag=True, help="An admin acts on every job and reaches /rq, /metrics and cleanup.")
@click.option("--max-queued-jobs", type=click.IntRange(0), default=None,
              help="This user's queued-jobs limit (default: MAX_QUEUED_JOBS).")
@click.option("--job-disk-limit-mb", type=click.IntRange(0), default=None,
              help="This user's per-job disk limit in MB, 0 = none (default: JOB_DISK_LIMIT_MB).")
@_management
def users_create(name: str, admin: bool, max_queued_jobs: int | None, job_disk_limit_mb: int | None) -> None:
    """Create a user (then give them a token: flask --app api tokens create NAME)."""
    from api.service import users

    user = users.create_user(name, admin, max_queued_jobs, job_disk_limit_mb)
    click.echo(f"created user {user.name} (id {user.id}{', admin' if user.is_admin else ''})")


@users_group.command("list")
@_management
def users_list() -> None:
    """Every user: id, name, admin, disabled, own limits."""
    from api.service import users

    for user in users.list_users():
        flags = [flag for flag, on in (("admin", user.is_admin), ("disabled", user.disabled)) if on]
        own = [f"{key}={value}" for key, value in (("max_queued_jobs", user.max_queued_jobs),
                                                   ("job_disk_limit_mb", user.job_disk_limit_mb)) if value is not None]
        click.echo("\t".join([str(user.id), user.name, ",".join(flags) or "-", " ".join(own) or "-"]))


@users_group.command("disable")
@click.argument("name")
@_management
def users_disable(name: str) -> None:
    """Disable a user: their tokens and monitor sessions stop working at once; their jobs stay."""
    from api.service import users

    user = users.set_disabled(name, True)
    click.echo(f"disabled user {user.name}")


@users_group.command("enable")
@click.argument("name")
@_management
def users_enable(name: str) -> None:
    """Enable a disabled user again (their tokens that are neither revoked nor expired work again)."""
    from api.service import users

    user = users.set_disabled(name, False)
    click.echo(f"enabled user {user.name}")


@users_group.command("local-admin")
@click.argument("token_file", type=click.Path(dir_okay=False, path_type=Path))
def users_local_admin(token_file: Path) -> None:
    """make run's first start: make sure an admin exists and TOKEN_FILE (mode 0600) holds a working token of
    one; a token already there that still works is kept. Prints nothing secret."""
    from api.dev.servers import write_private
    from api.service import users

    if token_file.exists():
        from api.dev.servers import read_secret

        token, _ = users.check_token(read_secret(token_file))
        if token is not None and token.user.is_admin and token.scope == "all":
            click.echo(f"admin {token.user.name}: token in {token_file} still works")
            return
    admin = users.first_admin()
    if admin is None:
        taken = {user.name for user in users.list_users()}
        name = next(candidate for candidate in ("admin", *(f"admin{i}" for i in range(2, 1000)))
                    if candidate not in taken)
        admin = users.create_user(name, admin=True)
        click.echo(f"created admin {admin.name}")
    _, raw = users.create_token(admin, "make run")
    write_private(token_file, raw + "\n")
    click.echo(f"admin {admin.name}: a new token in {token_file}")


@tokens_group.command("create")
@click.argument("user")
@click.option("--expires-in", "expires_in", type=click.FloatRange(min=0, min_open=True), default=None,
              metavar="DAYS", help="Days until it expires (default: never).")
@click.option("--name", "label", default="token", help="A label to tell tokens apart.")
@click.option("--scope", type=click.Choice(["all", "metrics"]), default="all",
              help="metrics: reads /metrics and nothing else (for Prometheus).")
@_management
def tokens_create(user: str, expires_in: float | None, label: str, scope: str) -> None:
    """Create a token for USER. It is printed once, as the last line; only its hash is kept."""
    from api.service import users

    token, raw = users.create_token(users.find_user(user), label, expires_in, scope)
    expires = token.expires_at.isoformat() if token.expires_at else "never"
    click.echo(f"token {token.id} ({token.name}) for {token.user.name}, scope {token.scope}, expires {expires}; "
               "it is shown once, now:")
    click.echo(raw)


@tokens_group.command("list")
@click.argument("user")
@_management
def tokens_list(user: str) -> None:
    """USER's tokens (never the tokens themselves): id, name, scope, created, expires, last used, revoked."""
    from api.service import users

    for token in users.list_tokens(users.find_user(user)):
        row = token.to_dict()
        click.echo("\t".join(str(row[key] or "-") for key in
                              ("id", "name", "scope", "created_at", "expires_at", "last_used_at", "revoked_at")))


@tokens_group.command("revoke")
@click.argument("token_id", type=int)
@_management
def tokens_revoke(token_id: int) -> None:
    """Revoke a token (by the id that tokens list shows): it, and monitor sessions made with it, stop working."""
    from api.service import users

    token = users.revoke_token(token_id)
    click.echo(f"revoked token {token.id} ({token.name}) of {token.user.name}")


def init_app(app: Flask) -> None:
    for command in (worker_command, reconciler_command, cleanup_command, users_group, tokens_group):
        app.cli.add_command(command)
