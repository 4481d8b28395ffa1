"""The run directory (decoderlab.rundir): atomic writes, status.json and the one skip-finished rule."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from decoderlab import rundir


def test_atomic_write_writes_text_and_bytes(tmp_path: Path):
    rundir.atomic_write(tmp_path / "a" / "t.txt", "héllo")
    rundir.atomic_write(tmp_path / "a" / "b.bin", b"\x00\x01")
    assert (tmp_path / "a" / "t.txt").read_text(encoding="utf-8") == "héllo"
    assert (tmp_path / "a" / "b.bin").read_bytes() == b"\x00\x01"
    assert sorted(os.listdir(tmp_path / "a")) == ["b.bin", "t.txt"]  # no temporary left


def test_a_write_that_fails_midway_keeps_the_old_file_and_no_temporary(tmp_path: Path):
    path = rundir.atomic_write(tmp_path / "f.json", "old")
    with pytest.raises(RuntimeError), rundir.atomic_open(path) as f:
        f.write(b"half of the new")
        raise RuntimeError("killed")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["f.json"]


def test_read_json_is_none_for_missing_half_written_or_non_objects(tmp_path: Path):
    assert rundir.read_json(tmp_path / "none.json") is None
    (tmp_path / "half.json").write_text('{"status": "compl')
    assert rundir.read_json(tmp_path / "half.json") is None
    (tmp_path / "list.json").write_text("[1, 2]")
    assert rundir.read_json(tmp_path / "list.json") is None


@pytest.mark.parametrize("status, fp, finished", [
    ("completed", "abc", True),
    ("completed", "other", False),  # the config changed: run again
    ("running", "abc", False),  # killed mid-run
    ("failed", "abc", False),
])
def test_the_skip_rule_wants_a_completed_run_of_the_same_config(tmp_path: Path, status, fp, finished):
    rundir.write_status(tmp_path, status, fingerprint=fp)
    assert rundir.read_status(tmp_path)["status"] == status
    assert rundir.is_finished(tmp_path, "abc") is finished


def test_no_status_is_not_finished(tmp_path: Path):
    assert not rundir.is_finished(tmp_path / "never-ran", "abc")


def test_a_full_disk_says_whether_the_file_it_replaces_is_intact(tmp_path: Path):
    import errno

    for existed, kept in ((True, "the previous file is intact"), (False, "it was not written (there was no earlier "
                                                                          "one)")):
        path = tmp_path / f"status-{existed}.json"
        if existed:
            path.write_text("old")
        with pytest.raises(rundir.DiskFullError) as e, rundir.atomic_open(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        assert str(e.value) == f"no space left on device writing {path}; {kept}; free some space"
        assert (path.read_text() == "old") if existed else not path.exists()
        assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
