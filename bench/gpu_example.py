"""The README's worked example of GPUs and resources, run for real: one agent with four fake GPUs and eight CPUs,
three jobs of different sizes (2 GPUs with 2 CPUs and 4 GB, the task's 1 GPU, 3 GPUs), and what ``trainq hosts``
and ``trainq ls`` show then; written to
docs/gpu-example.txt (``python -m bench.gpu_example``)."""

from __future__ import annotations

import os
import subprocess
import sys

from api.dev.servers import free_port, wait_for
from bench.harness import REPO, TOKEN_ENV, stack


def trainq(url: str, *args: str) -> str:
    env = {**os.environ, "TRAINQ_URL": url, "TRAINQ_TOKEN": os.environ[TOKEN_ENV], "COLUMNS": "110"}
    done = subprocess.run([sys.executable, "-m", "trainq.cli", *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    return done.stdout + done.stderr


def main() -> None:
    with stack() as s:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        s.gunicorn(port)
        s.worker("gpu-box", TRAINQ_TASKS="tests.task_modules.sample", TRAINQ_FAKE_GPUS="4", TRAINQ_CPUS="8",
                 TRAINQ_HOST_NAME="box-1")
        shown = []
        for args in (["--gpus", "2", "--cpus", "2", "--memory", "4G"], [], ["--gpus", "3"]):
            command = ["submit", "test-devices", *args, "-p", "seconds=600"]
            shown.append(f"$ trainq {' '.join(command)}\n{trainq(url, *command)}")
        ids = [line.split()[1] for line in "".join(shown).splitlines() if line.startswith("submitted ")]
        wait_for(lambda: "running" in trainq(url, "show", ids[1]), 120, "the second job to run")
        shown.append(f"$ trainq hosts\n{trainq(url, 'hosts')}")
        shown.append(f"$ trainq ls\n{trainq(url, 'ls')}")
        shown.append(f"$ trainq show {ids[2][:8]}\n{trainq(url, 'show', ids[2])}")
        trainq(url, "cancel", ids[0])
        wait_for(lambda: "running" in trainq(url, "show", ids[2]), 120, "the third job to start")
        shown.append(f"$ trainq cancel {ids[0][:8]}   # and the third starts on the GPUs it freed\n$ trainq ls\n"
                     f"{trainq(url, 'ls')}")
        shown.append(f"$ trainq hosts\n{trainq(url, 'hosts')}")
        text = "\n".join(line.rstrip() for line in "\n".join(shown).splitlines()) + "\n"
        (REPO / "docs" / "gpu-example.txt").write_text(text)
        print(text)


if __name__ == "__main__":
    main()
