"""The service: what a user (or the reconciler) can do, as plain functions the web routes and the operator's
commands call: submit and act on jobs (``jobs``), read them (``queries``), the reconcile pass (``reconcile``),
rq-dashboard's actions carried to the rows (``dashboard_sync``), the task catalogue (``catalogue``), users and
tokens (``users``), limits, timings. Who asks is a parameter (``user``), never read from a request.

May import ``api.scheduler`` (a submit's pass, the live hosts), ``api.queue``, ``api.record``, ``api.stores``,
``api.settings`` and the SDK's pure helpers; never ``api.web`` nor ``api.worker``.
"""
