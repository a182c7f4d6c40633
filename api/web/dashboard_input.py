"""What rq-dashboard reads and shows, made safe: its pages' input checked before its views run (a missing job,
an instance number it has no Redis for, a page size or number that is not a positive integer: 404 or 400
naming the field, where rq-dashboard 0.9 answers 500), and every string in its JSON answers HTML-escaped,
since its underscore templates insert them unescaped (``<%= %>``) into the page."""

from __future__ import annotations

import html
import json
from typing import Any

from flask import Response, current_app

from api.web.errors import error_response

ORDERS = ("asc", "desc")


def refusal(endpoint: str | None, args: dict[str, Any]) -> Any:
    """The 4xx answer for input rq-dashboard's view would fail on with a 500, or None."""
    view = (endpoint or "").split(".")[-1]
    if "instance_number" in args:
        urls = current_app.config.get("RQ_DASHBOARD_REDIS_URL")
        count = len(urls) if isinstance(urls, (list, tuple)) else 1
        if not 0 <= args["instance_number"] < count:
            return error_response(404, "not_found", f"instance_number: there is no Redis instance "
                                  f"{args['instance_number']} (there are {count})", "instance_number")
    if view == "list_jobs":
        for field in ("per_page", "page"):
            value = str(args.get(field, ""))
            if not value.isdigit() or int(value) < 1 or len(value) > 9:
                return error_response(400, "invalid_input", f"{field}: must be a positive integer, not {value!r}",
                                      field)
        if args.get("order") not in ORDERS:
            return error_response(400, "invalid_input", f"order: must be one of {', '.join(ORDERS)}", "order")
    if view in ("job_view", "job_info"):
        from api.stores import redis_connection

        if not redis_connection.get().exists(f"rq:job:{args.get('job_id', '')}"):
            return error_response(404, "not_found", f"job_id: RQ has no job {args.get('job_id')!r}", "job_id")
    return None


def _escaped(value: Any) -> Any:
    if isinstance(value, str):
        return html.escape(value)
    if isinstance(value, dict):
        return {key: _escaped(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_escaped(item) for item in value]
    return value


def escape_json(response: Response) -> Response:
    """Every string of rq-dashboard's JSON answers HTML-escaped (ids, names and statuses have nothing to
    escape; descriptions, results, metadata and exception texts may)."""
    if response.mimetype == "application/json" and response.status_code == 200 and not response.direct_passthrough:
        data = response.get_json(silent=True)
        if isinstance(data, dict) and "error" not in data:
            response.set_data(json.dumps(_escaped(data)))
    return response
