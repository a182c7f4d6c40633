"""The web side: the JSON API's routes and the monitor's pages (``routes``: each parses, calls one service
function, renders), the request and answer models (``schemas``) and the OpenAPI document made from them,
errors, who is asking (``auth``), the Host check, rq-dashboard at /rq, and /metrics.

May import ``api.service`` and everything below it; only the entry points (``api.app``, ``api.wsgi``,
``api.cron``) import it.
"""
