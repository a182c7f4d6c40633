"""The cron entry point (``cleanup_orphaned_jobs.py``, ``trainq-cleanup``): one reconcile pass, a safety net beside
``flask --app api reconciler``. It talks to PostgreSQL and Redis directly, not to the API."""

from __future__ import annotations

import argparse

from api.app import create_app
from api.ops.commands import pass_once


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="cleanup_orphaned_jobs.py",
        description="Reconcile training-job rows in PostgreSQL with RQ in Redis, once. Uses DATABASE_URL "
        "and REDIS_URL like the API. Exit 0 on success, 2 when PostgreSQL or Redis is unreachable.",
    )
    parser.add_argument("--dry-run", action="store_true", help="report what would change; write nothing")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    app = create_app()
    with app.app_context():
        return pass_once(args.dry_run, args.json)
