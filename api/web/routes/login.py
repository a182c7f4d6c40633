"""The monitor's login page: paste a token (or open the login URL ``make run`` prints, which carries one in its
#fragment, never sent to the server or its logs). Its script checks the token with ``/api/me`` and keeps it in
``sessionStorage``; no cookie is ever set. ``/api/me`` says who you are."""

from __future__ import annotations

import re

from flask import Blueprint, g, render_template, request, url_for

from api.web import schemas
from api.web.openapi import operation

bp = Blueprint("auth", __name__)


_SAFE_NEXT = re.compile(r"/(?![/\\])[A-Za-z0-9/._~%!$&'()*+,;=:@?#-]*")


def _safe_next(target: str | None) -> str:
    """Only a path on this site: one ``/`` then printable URL characters (no ``//host``, no backslash, no
    scheme, no whitespace or control character a browser or Werkzeug would drop): a login never redirects
    elsewhere."""
    if target and _SAFE_NEXT.fullmatch(target):
        return target
    return url_for("pages.jobs_page")


@bp.get("/login")
def login():
    return render_template("login.html", next_url=_safe_next(request.args.get("next")))


@bp.get("/api/me")
@operation("Who the credential belongs to", {200: schemas.Me})
def me():
    return {"user": g.user.to_dict(), "token": g.token.to_dict(), "via": g.via}
