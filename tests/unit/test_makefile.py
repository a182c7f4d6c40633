"""``make run`` installs what the service needs and no test tooling; ``make test`` (and .ci/run, which calls it)
adds the ``dev`` extra; ``make logs`` follows the files ``make run`` writes."""

from __future__ import annotations

import configparser
import os
import re
import subprocess

from tests.support import REPO

TOOLING = ("pytest", "playwright", "schemathesis", "ruff", "import-linter")


def _dry_run(target: str, tmp_path) -> str:
    """``make -n TARGET`` for a venv that does not exist yet: every command it would run, installs included."""
    # run from `make test` too: a sub-make would print "Entering directory" lines and inherit the outer flags
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    result = subprocess.run(["make", "--no-print-directory", "-n", target, f"VENV={tmp_path / 'venv'}"], cwd=REPO,
                            capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _extras(command: str) -> set[str]:
    return {extra for line in re.findall(r'pip install .*-e "\.\[([a-z,]+)\]"', command)
            for extra in line.split(",")}


def test_make_run_installs_no_test_tooling(tmp_path):
    run = _dry_run("run", tmp_path)
    assert _extras(run) == {"server", "train", "trackers"}, run
    assert "-m api.dev" in run
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    for extra in ("server", "train", "trackers"):
        assert not any(tool in setup["options.extras_require"][extra] for tool in TOOLING), extra
    assert all(tool in setup["options.extras_require"]["dev"] for tool in TOOLING)


def test_make_test_and_ci_add_the_test_tooling(tmp_path):
    test = _dry_run("test", tmp_path)
    assert "dev" in _extras(test) and "-m pytest" in test
    assert test.index('install --quiet --disable-pip-version-check -e ".[server,train,trackers]"') < \
        test.index("dev]") < test.index("-m pytest")
    assert "make test" in (REPO / ".ci" / "run").read_text()


def test_make_logs_follows_every_log_make_run_writes(tmp_path):
    logs = _dry_run("logs", tmp_path)
    assert logs.startswith("tail ") and "-F" in logs
    from api.dev.supervisor import LOG_FILES

    assert sorted(logs.split()[4:]) == sorted(f"var/log/{name}" for name in LOG_FILES.values())
