"""The client distribution (``client/``), installed as the README says into a fresh venv: it holds the ``trainq``
package alone (no ``api``, no ``builtin_tasks``, neither torch nor the server's packages), its one command and
every subcommand answer ``--help``, and it talks to a live API."""

from __future__ import annotations

import configparser
import json
import re
import subprocess
import sys
import tomllib

from tests.support import REPO

CLIENT = REPO / "client"

# In the fresh venv: what the client distribution installed, and every subcommand's --help through click.
INSPECT = r"""
import importlib.util, json
from importlib.metadata import distribution, entry_points
from click.testing import CliRunner
from trainq.cli import main

dist = distribution("trainq-client")
tops = sorted({str(f).split("/")[0] for f in dist.files if not str(f).startswith("..")})
scripts = sorted(ep.name for ep in entry_points(group="console_scripts") if ep.dist.name == "trainq-client")
modules = [m for m in ("api", "builtin_tasks", "torch", "flask", "rq", "sqlalchemy", "redis")
           if importlib.util.find_spec(m)]
failed = {}

def walk(group, path):
    for name, command in group.commands.items():
        result = CliRunner().invoke(main, [*path, name, "--help"])
        if result.exit_code != 0 or "Usage:" not in result.output:
            failed[" ".join([*path, name])] = result.output
        if hasattr(command, "commands"):
            walk(command, [*path, name])

walk(main, [])
print(json.dumps({"tops": tops, "scripts": scripts, "modules": modules, "failed": failed,
                  "commands": sorted(main.commands)}))
"""


def test_the_client_distribution_declares_what_the_service_distribution_does():
    client = tomllib.loads((CLIENT / "pyproject.toml").read_text())["project"]
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    assert client["version"] == setup["metadata"]["version"]
    required = [line.strip() for line in setup["options"]["install_requires"].splitlines()
                if line.strip() and not line.strip().startswith("#")]
    assert client["dependencies"] == required
    scripts = dict(line.split(" = ") for line in setup["options.entry_points"]["console_scripts"].split("\n") if line)
    assert client["scripts"] == {"trainq": scripts["trainq"]}


def test_the_client_installs_alone_in_a_fresh_venv_and_every_command_answers_help(cli_env, tmp_path):
    venv = tmp_path / "laptop"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    # as the README says, from the clone's root
    install = subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "./client"], cwd=REPO,
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stdout + install.stderr
    inspect = subprocess.run([str(venv / "bin" / "python"), "-c", INSPECT], cwd=tmp_path, capture_output=True,
                             text=True, timeout=300)
    assert inspect.returncode == 0, inspect.stderr
    found = json.loads(inspect.stdout)
    assert found["tops"] == ["trainq", "trainq_client-0.1.0.dist-info"], found["tops"]
    assert found["modules"] == [] and found["scripts"] == ["trainq"]
    assert found["failed"] == {} and {"submit", "ls", "logs", "tasks"} <= set(found["commands"]), found

    for script in found["scripts"]:  # the installed commands themselves
        result = subprocess.run([str(venv / "bin" / script), "--help"], cwd=tmp_path, capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 0 and re.search(r"Usage: \S+", result.stdout), result.stdout + result.stderr

    listed = subprocess.run([str(venv / "bin" / "trainq"), "ls", "--json"], env=cli_env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert isinstance(json.loads(listed.stdout), list)
