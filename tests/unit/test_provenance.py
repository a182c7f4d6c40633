"""What ran a job (issue 23, item 8): where a task's code comes from and the versions around it, read without
initialising CUDA."""

from __future__ import annotations

import platform
import subprocess
import sys

import torch

from tests.support import REPO
from trainq import provenance


def test_the_driver_version_is_read_from_the_kernel_modules_file(tmp_path):
    found = tmp_path / "version"
    found.write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  Tue Mar  5 22:23:56 UTC 2024\n"
                     "GCC version:  gcc version 12.3.0\n")
    assert provenance.gpu_driver(found) == "550.54.15"
    found.write_text("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  535.104.05  Release Build\n")
    assert provenance.gpu_driver(found) == "535.104.05"
    assert provenance.gpu_driver(tmp_path / "none") is None


def test_runtime_versions_never_initialise_cuda():
    found = provenance.runtime()
    assert found["python"] == platform.python_version() and found["torch"] == torch.__version__
    assert found["cuda"] == torch.version.cuda
    assert not torch.cuda.is_initialized()


def test_a_modules_source_names_its_package_and_git_commit():
    import builtin_tasks.tasks  # noqa: F401 - installed with this project (editable)
    import tests.task_modules.sample  # noqa: F401 - only on the path: no package of its own

    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    built_in = provenance.source("builtin_tasks.tasks")
    assert built_in["package"] == "trainq" and built_in["package_version"] and built_in["git_commit"] == head
    sample = provenance.source("tests.task_modules.sample")
    assert sample["package"] is None  # rq-dashboard also ships a top-level "tests": it is not this file's
    assert sample["git_commit"] == head and isinstance(sample["git_dirty"], bool)
    assert provenance.source(sys.__name__) == {"package": None, "package_version": None, "git_commit": None,
                                               "git_dirty": None}  # a built-in module has no source file

