#!/usr/bin/env python3
"""Cron entry point: reconcile training-job rows with RQ once. See crontab.example and --help."""

import sys

from api.ops.commands import cleanup_main

if __name__ == "__main__":
    sys.exit(cleanup_main())
