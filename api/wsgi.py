"""WSGI entry point (``gunicorn api.wsgi:app``, ``flask --app api.wsgi run``): the app, reconciled once at
start-up so that whatever happened while no API ran is fixed before the first request."""

from api.app import create_app
from api.ops.commands import reconcile_once
from api.record.status import Actor

app = create_app()

if app.config["RECONCILE_ON_START"]:
    with app.app_context():
        reconcile_once(Actor.API)
