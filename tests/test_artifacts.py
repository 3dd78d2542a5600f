"""tfq.artifacts: writable folders checked up front, and files that belong together land together."""

from __future__ import annotations

import pytest

from tfq import artifacts
from tfq.artifacts import TfqError


def test_an_unwritable_folder_is_one_clear_error():
    with pytest.raises(TfqError, match=r"^cannot write to /proc/nope/run: "):
        artifacts.check_writable("/proc/nope/run")


def test_a_writable_folder_is_made_and_left_clean(tmp_path):
    folder = artifacts.check_writable(tmp_path / "a" / "b")
    assert folder.is_dir() and list(folder.iterdir()) == []


def test_files_that_belong_together_land_together(tmp_path):
    paths = [tmp_path / "model.h5", tmp_path / "model.tflite", tmp_path / "model.json"]
    with artifacts.atomic_paths(*paths) as tmps:
        for i, tmp in enumerate(tmps):
            tmp.write_text(str(i))
            assert not paths[i].exists()  # nothing in place while the group is being written
    assert [p.read_text() for p in paths] == ["0", "1", "2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)


def test_a_failure_half_way_leaves_none_of_them(tmp_path):
    paths = [tmp_path / "qat_model.h5", tmp_path / "qat_int8.tflite", tmp_path / "qat_int8.json"]
    with pytest.raises(RuntimeError):
        with artifacts.atomic_paths(*paths) as tmps:
            tmps[0].write_bytes(b"model")
            tmps[1].write_bytes(b"flatbuffer")
            raise RuntimeError("the manifest could not be made")
    assert list(tmp_path.iterdir()) == []
