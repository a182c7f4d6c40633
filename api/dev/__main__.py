"""``python -m api.dev``: what ``make run`` runs after installing."""

import sys

from api.dev.supervisor import run

sys.exit(run())
