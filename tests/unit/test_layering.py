"""``training`` and the public SDK stay light: importing them must not pull in Flask, RQ, SQL or the api
package (nor, for the SDK, torch)."""

import subprocess
import sys

FORBIDDEN = ("flask", "rq", "redis", "sqlalchemy", "psycopg2", "api")


def imported(imports: str, forbidden: tuple[str, ...]) -> str:
    """The forbidden top-level packages that ``imports`` pulls in, in a fresh interpreter."""
    code = f"import sys\n{imports}\nprint(','.join(sorted(m for m in sys.modules if m.split('.')[0] in {forbidden!r})))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_the_builtin_tasks_import_nothing_of_the_service():
    out = imported("import builtin_tasks, builtin_tasks.trainer, builtin_tasks.data, builtin_tasks.networks, "
                   "builtin_tasks.tasks", FORBIDDEN)
    assert out == "", f"builtin_tasks imported: {out}"


def test_the_sdk_imports_nothing_of_the_service_nor_torch():
    out = imported("from trainq import task, TaskContext\nimport trainq.checkpoints", (*FORBIDDEN, "torch"))
    assert out == "", f"trainq imported: {out}"


def test_the_command_line_client_needs_neither_the_service_nor_torch():
    out = imported("import trainq.cli, trainq.client", (*FORBIDDEN, "torch", "numpy"))
    assert out == "", f"trainq.cli imported: {out}"
