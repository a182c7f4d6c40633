"""The operator's commands, as ``flask --app api <command>``: worker, reconciler, cleanup (one reconcile pass),
users, tokens (``commands``). The cron entry is ``api.cron``.

May import any part but ``api.web`` and the entry points.
"""
