"""``TaskContext.local()`` shows its reports with no logging setup: the README's snippet, run as written in a
fresh interpreter, prints each epoch's report on stderr; a program that configures logging keeps its own."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.support import REPO


def _readme_snippet() -> str:
    readme = (REPO / "README.md").read_text()
    return re.search(r"```python\n(from builtin_tasks\.tasks import mlp\n.*?)```", readme, re.S).group(1)


def _run(code: str, tmp_path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code.replace("/tmp/try-mlp", str(tmp_path / "try"))], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_the_readme_snippet_shows_each_report_without_logging_setup(tmp_path):
    result = _run(_readme_snippet(), tmp_path)
    assert result.returncode == 0, result.stderr
    reports = [line for line in result.stderr.splitlines() if "trainq.task.local: report" in line]
    epochs = [re.search(r" epoch=(\d+)", line) for line in reports]
    assert [found.group(1) for found in epochs if found] == ["1", "2"], result.stderr
    assert len(reports) < 10, result.stderr  # step-only reports at most every 2 s: the epochs stay readable
    assert "val_loss=" in reports[-1]
    assert "'val_loss'" in result.stdout  # the task's final metrics


def test_a_program_that_configures_logging_keeps_its_format_and_sees_each_line_once(tmp_path):
    code = ("import logging, sys\n"
            "logging.basicConfig(level=logging.INFO, stream=sys.stderr, format='MINE %(message)s')\n"
            "from trainq import TaskContext\n"
            "ctx = TaskContext.local('/tmp/try-mlp')\n"
            "ctx.report(epoch=1, loss=0.5)\n"
            "quiet = TaskContext.local('/tmp/try-mlp', job_id='quiet', show_logs=False)\n"
            "logging.getLogger().handlers.clear()\n"
            "quiet.report(epoch=1, loss=0.25)\n")
    result = _run(code, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == ["MINE report epoch=1 loss=0.5"], result.stderr
