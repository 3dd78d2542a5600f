"""tfq.core.artifacts: writable folders checked up front, and files that belong together land together."""

from __future__ import annotations

from pathlib import Path

import pytest

from tfq.core import artifacts
from tfq.core.artifacts import TfqError


def test_an_unwritable_folder_is_one_clear_error():
    with pytest.raises(TfqError, match=r"^cannot write to /proc/nope/run: "):
        artifacts.check_writable("/proc/nope/run")


def test_a_writable_folder_is_made_and_left_clean(tmp_path):
    folder = artifacts.check_writable(tmp_path / "a" / "b")
    assert folder.is_dir() and list(folder.iterdir()) == []


def test_a_run_folder_made_for_a_block_that_fails_before_writing_is_removed_and_any_other_kept(tmp_path):
    for folder, write in [(tmp_path / "new", False), (tmp_path / "written", True)]:
        with pytest.raises(TfqError), artifacts.new_or_kept(folder) as run:
            if write:
                (run / "train.json").write_text("{}")
            raise TfqError("an image does not decode")
    assert not (tmp_path / "new").exists() and (tmp_path / "written" / "train.json").is_file()
    (tmp_path / "old").mkdir()
    with pytest.raises(TfqError), artifacts.new_or_kept(tmp_path / "old"):
        raise TfqError("a model does not fit")
    assert (tmp_path / "old").is_dir()  # the user's folder, empty before, stays
    with artifacts.new_or_kept(tmp_path / "ok") as run:
        pass
    assert run.is_dir()


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


def test_the_code_digest_changes_with_any_file_in_any_subpackage(tmp_path):
    """Stages key on it: an edit to the simulator or a recipe must make their results stale."""
    import shutil

    package = tmp_path / "tfq"
    shutil.copytree(Path(artifacts.__file__).parents[1], package, ignore=shutil.ignore_patterns("__pycache__"))
    before = artifacts.code_digest(package)
    assert before == artifacts.code_digest()  # the copy is the package
    (package / "core" / "__pycache__").mkdir()
    (package / "core" / "__pycache__" / "stats.cpython-311.pyc").write_bytes(b"compiled")
    assert artifacts.code_digest(package) == before  # compiled files are not source
    seen = {before}
    for edited in ("quant/simulate.py", "runtimes/tflm.py", "data/usps.py", "quant/recipes/aeq_a8w4.json"):
        path = package / edited
        path.write_text(path.read_text() + "\n")
        seen.add(artifacts.code_digest(package))
    assert len(seen) == 5
