"""WSGI entry point (``gunicorn api.wsgi:app``, ``flask --app api.wsgi run``): the app, reconciled once at
start-up so that whatever happened while no API ran is fixed before the first request. Without a SECRET_KEY
it refuses to start (``make run`` makes one in var/)."""

from api.app import create_app, require_secret_key
from api.ops.commands import reconcile_once
from api.record.status import Actor

app = create_app()
require_secret_key(app)

if app.config["RECONCILE_ON_START"]:
    with app.app_context():
        reconcile_once(Actor.API)
