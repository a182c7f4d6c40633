"""The worker's storage check (issue 26, case 4), on real folders: any of its folders (checkpoints, then artifacts)
unwritable or under ``STORAGE_MIN_FREE_MB`` free stops it taking jobs, saying which and why; a horse's note of a
full device holds it until space returns. tests/e2e/test_faults.py runs a full tmpfs end to end."""

from __future__ import annotations

from pathlib import Path

from api.worker import storage


def test_fine_folders_block_nothing(tmp_path: Path):
    folders = [tmp_path / "checkpoints", tmp_path / "artifacts"]
    assert storage.blocked("w1", folders, 2**20, base=tmp_path) is None
    assert all(f.is_dir() and not list(f.iterdir()) for f in folders)  # made, and the probe file gone


def test_an_unwritable_artifact_folder_blocks_and_names_itself(tmp_path: Path):
    (tmp_path / "a-file").write_text("")  # a folder under a file cannot be made, even by root
    artifacts = tmp_path / "a-file" / "artifacts"
    why = storage.blocked("w1", [tmp_path / "checkpoints", artifacts], 2**20, base=tmp_path)
    assert why is not None and why.startswith("unwritable: ") and why.endswith(f" in {artifacts}"), why


def test_too_little_free_space_blocks_and_says_how_much(tmp_path: Path):
    why = storage.blocked("w1", [tmp_path], 2**62, base=tmp_path)  # more than any disk has
    assert why is not None and why.startswith("disk full: ") and "under STORAGE_MIN_FREE_MB" in why, why
    assert str(tmp_path) in why


def test_a_horses_full_device_note_holds_the_worker_until_space_returns(tmp_path: Path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    reason = f"disk full: no space left on device writing checkpoint to {folder}"
    storage.note_full("w1", folder, reason, base=tmp_path)
    why = storage.blocked("w1", [folder], 0, base=tmp_path)  # the probe passes; the note wants twice the space
    assert why is not None and why.startswith(reason) and "waiting for" in why, why
    assert storage.blocked("w2", [folder], 0, base=tmp_path) is None  # the note is that worker's alone
    storage.clear("w1", base=tmp_path)
    assert storage.blocked("w1", [folder], 0, base=tmp_path) is None
