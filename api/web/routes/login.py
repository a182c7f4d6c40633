"""The monitor's login: paste a token (or open the login URL ``make run`` prints, which carries one in its
#fragment, never sent to the server or its logs), get a session cookie; log out. ``/api/me`` says who you are."""

from __future__ import annotations

import re

from flask import Blueprint, g, redirect, render_template, request, url_for

from api.web import auth, schemas
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


@bp.route("/login", methods=["GET", "POST"])
def login():
    next_url = _safe_next(request.values.get("next"))
    if request.method == "GET":
        return render_template("login.html", next_url=next_url, error=None)
    raw = (request.form.get("token") or "").strip()
    token, why = auth.check_token(raw) if raw else (None, "paste a token")
    if token is not None and token.scope != "all":
        token, why = None, f"a token with scope {token.scope!r} cannot log in to the monitor"
    if token is None:
        return render_template("login.html", next_url=next_url, error=f"Not logged in: {why}."), 401
    auth.login(token)
    return redirect(next_url)


@bp.post("/logout")
def logout():
    auth.logout()
    return redirect(url_for("auth.login"))


@bp.get("/api/me")
@operation("Who the credential belongs to", {200: schemas.Me})
def me():
    return {"user": g.user.to_dict(), "token": g.token.to_dict(), "via": g.via}
