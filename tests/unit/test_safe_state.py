"""Checkpoints and artifacts load as data only: a planted pickle that would run code is refused before it runs,
what a task saves is checked against the allow-list, and folders that are links or others may write in are
refused, saying which."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from trainq import TaskContext
from trainq.safe_state import UnsafeStateError, check_state


class Planted:
    """What an attacker plants: unpickling it runs a shell command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("how", ["torch.save", "pickle.dump"])
def test_a_planted_checkpoint_that_would_run_code_is_refused_and_nothing_runs(tmp_path, how):
    marker = tmp_path / "ran"
    ctx = TaskContext.local(tmp_path)
    ctx.checkpoint({"step": 1})
    planted = tmp_path / "checkpoints" / "ckpt-000002.pt"
    with open(planted, "wb") as file:
        if how == "torch.save":
            torch.save({"step": Planted(marker)}, file)
        else:  # a plain pickle, in the protocol torch's legacy format uses
            pickle.dump({"step": Planted(marker)}, file, protocol=2)
    with pytest.raises(UnsafeStateError, match=r"ckpt-000002\.pt refused: .*could run code.*system.*Nothing in it ran"):
        TaskContext.local(tmp_path).restore()
    assert not marker.exists()


def test_what_tasks_save_restores(tmp_path):
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.ones(1, 2)).sum().backward()
    optimizer.step()
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 3, "lr": 1e-3,
             "name": "x", "raw": b"\x00", "partial": (0.5, 7), "sizes": [torch.Size([2]), None, True]}
    TaskContext.local(tmp_path).checkpoint(state)
    restored = TaskContext.local(tmp_path).restore()
    assert restored["epoch"] == 3 and restored["partial"] == (0.5, 7)
    assert restored["sizes"] == [torch.Size([2]), None, True]
    assert torch.equal(restored["model"]["weight"], model.state_dict()["weight"])
    optimizer.load_state_dict(restored["optimizer"])


@pytest.mark.parametrize("bad, where", [
    ({"model": torch.nn.Linear(1, 1)}, "state['model'] is a torch.nn.modules.linear.Linear"),
    ({"a": [1, {"b": object()}]}, "state['a'][1]['b'] is a builtins.object"),
    ({"rng": __import__("random").Random(0)}, "state['rng'] is a random.Random"),
])
def test_checkpoint_refuses_what_would_not_load_as_data_at_save(tmp_path, bad, where):
    with pytest.raises(TypeError, match=rf"checkpoint\(\): {__import__('re').escape(where)}; save only tensors"):
        TaskContext.local(tmp_path).checkpoint(bad)
    assert not list(tmp_path.glob("checkpoints/ckpt-*"))
    with pytest.raises(TypeError, match=r"save_artifact\('m.pt'\)"):
        TaskContext.local(tmp_path).save_artifact("m.pt", bad)
    check_state({"ok": torch.zeros(1)}, "x")


def test_a_checkpoint_folder_that_is_a_link_is_refused(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    TaskContext.local(elsewhere).checkpoint({"step": 1})
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "checkpoints").symlink_to(elsewhere / "checkpoints")
    (tmp_path / "job" / "artifacts").symlink_to(elsewhere)
    ctx = TaskContext.local(tmp_path / "job")
    with pytest.raises(UnsafeStateError, match=r"job/checkpoints \(this job's checkpoints\) is a symbolic link"):
        ctx.restore()
    with pytest.raises(UnsafeStateError, match="symbolic link"):
        ctx.checkpoint({"step": 2})
    with pytest.raises(UnsafeStateError, match=r"job/artifacts \(this job's artifacts\) is a symbolic link"):
        ctx.save_artifact("a.bin", b"x")
    assert sorted(p.name for p in (elsewhere / "checkpoints").iterdir()) == ["ckpt-000001.pt"]


@pytest.mark.parametrize("mode", [0o775, 0o757, 0o777])
def test_checkpoint_and_artifact_folders_others_may_write_in_are_refused(tmp_path, mode):
    ctx = TaskContext.local(tmp_path / "job")
    ctx.checkpoint({"step": 1})
    ctx.save_artifact("a.bin", b"x")
    (tmp_path / "job" / "checkpoints").chmod(mode)
    with pytest.raises(UnsafeStateError, match=r"checkpoints \(this job's checkpoints\) is writable by group or "
                                               r"others .*chmod go-w"):
        ctx.restore()
    (tmp_path / "job" / "checkpoints").chmod(0o755)
    (tmp_path / "job").chmod(mode)  # the folder above it: someone could swap the job's folder
    with pytest.raises(UnsafeStateError, match=r"the folder of every job's artifacts\) is writable by group"):
        ctx.save_artifact("b.bin", b"y")
    (tmp_path / "job").chmod(0o755)
    assert ctx.restore() == {"step": 1}


def test_folders_are_made_writable_by_this_account_only_whatever_the_umask(tmp_path):
    old = os.umask(0o002)
    try:
        ctx = TaskContext.local(tmp_path / "job")
        ctx.checkpoint({"step": 1})
        ctx.save_artifact("a.bin", b"x")
    finally:
        os.umask(old)
    for folder in ("job", "job/checkpoints", "job/artifacts"):
        assert (tmp_path / folder).stat().st_mode & 0o022 == 0, folder
