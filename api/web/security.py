"""Headers every answer carries: a Content-Security-Policy and ``X-Content-Type-Options: nosniff``.

The monitor's pages run only the service's own script files (``script-src 'self'``: no inline script, no
``eval``). rq-dashboard's pages (``/rq``) also run their one inline script, which carries a nonce made for that
answer, and ``eval`` (underscore's templates compile with ``new Function``); what those templates show is
HTML-escaped by ``api.web.dashboard_input`` before it reaches them. No page may be framed (``frame-ancestors 'none'``).

A page is fetched by its shell (``auth.shell``), whose document's policy is the one that counts: the shell sends
its nonce (``X-Shell-Nonce``) and the page it fetches is made with the same one.
"""

from __future__ import annotations

import re
import secrets

from flask import Flask, Response, g, request

_NONCE = re.compile(r"[A-Za-z0-9_-]{16,64}")
_COMMON = ("default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; object-src 'none'; "
           "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


def csp_nonce() -> str:
    """This answer's script nonce (made on first use)."""
    if "csp_nonce" not in g:
        sent = request.headers.get("X-Shell-Nonce", "")
        shell_fetch = "Authorization" in request.headers and _NONCE.fullmatch(sent)
        g.csp_nonce = sent if shell_fetch else secrets.token_urlsafe(18)
    return g.csp_nonce


def policy() -> str:
    if request.blueprint == "rq_dashboard":
        return f"{_COMMON}; script-src 'self' 'nonce-{csp_nonce()}' 'unsafe-eval'"
    return f"{_COMMON}; script-src 'self'"


def _headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = policy()
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers.setdefault("Referrer-Policy", "same-origin")
    return response


def init_app(app: Flask) -> None:
    app.after_request(_headers)
    app.jinja_env.globals["csp_nonce"] = csp_nonce
