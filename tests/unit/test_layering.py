"""``training`` stays pure: importing it must not pull in Flask, RQ, SQL or the api package."""

import subprocess
import sys

FORBIDDEN = ("flask", "rq", "redis", "sqlalchemy", "psycopg2", "api")


def test_training_imports_nothing_of_the_service():
    code = (
        "import sys, training, training.trainer, training.data, training.models, training.checkpoints\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"training imported: {out}"
