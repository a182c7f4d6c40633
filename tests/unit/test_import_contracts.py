"""The layout's rules, checked: the import contracts in setup.cfg (lint-imports), and the worker importable on a
host without torch or the built-in tasks (its tasks come from whatever packages are installed there)."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

NO_TORCH = """
import sys

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "builtin_tasks", "numpy", "sklearn"):
            raise ImportError(f"{name} is not installed on this host")

sys.meta_path.insert(0, Refuse())
"""


def test_the_import_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint), "setup.cfg"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_the_worker_imports_without_torch_and_without_the_builtin_tasks():
    code = NO_TORCH + (
        "import api.worker, api.worker.agent, api.ops.commands\n"
        "from api.worker import run_training_job\n"
        "from api.queue import JOB_FUNCTION\n"
        "assert JOB_FUNCTION == 'api.worker.run_training_job', JOB_FUNCTION  # what jobs queued by older code name\n"
        "import importlib\n"
        "module, _, name = JOB_FUNCTION.rpartition('.')\n"
        "assert getattr(importlib.import_module(module), name) is run_training_job\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in ('torch', 'builtin_tasks')]\n"
        "print('ok')\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.stdout.strip() == "ok", done.stderr[-3000:]


def test_the_refusal_is_real():
    """The guard above does refuse torch: otherwise the test would pass on a host where torch just loads."""
    done = subprocess.run([sys.executable, "-c", NO_TORCH + "import torch"], capture_output=True, text=True)
    assert done.returncode != 0 and "not installed on this host" in done.stderr


def test_the_status_vocabulary_and_the_api_models_load_no_database_library():
    code = ("import sys\nimport api.record.status, api.web.schemas\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('flask', 'sqlalchemy', 'redis', 'rq')))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
