"""tfq.scaleout: the study through Ray gives the local run's results; failures and dead workers are
retried or reported with their run; Ray Train with two workers trains as well as one."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO, STUDY_EXPORTS, STUDY_STAGES, error_lines, pipeline_cli, study_config
from tfq import pipeline, scaleout
from tfq.core import artifacts
from tfq.core.artifacts import TfqError
from tfq.scale import executors

pytest.importorskip("ray")  # the dev extra installs it; the default install does not


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance for this module's in-process tests."""
    with executors.executor("ray") as ex:
        yield ex


def test_executors_are_named_and_ray_address_needs_ray():
    assert executors.executor("local").name == "local" and executors.executor("ray").name == "ray"
    with pytest.raises(TfqError, match="--executor=dask: choose one of: local, ray"):
        executors.executor("dask")
    with pytest.raises(TfqError, match="--ray_address=10.0.0.1:6379 needs --executor=ray"):
        executors.executor("local", "10.0.0.1:6379")


def test_the_local_run_never_imports_ray():
    """Ray is an optional extra: the default executor and every stage module work without it."""
    code = (
        "import sys; from tfq import pipeline, scaleout, train, sweep; from tfq.scale import executors; "
        "print(executors.executor('local').chains(lambda n, mapper=map: n, {'a': (1,)}), 'ray' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.split()[-1] == "False", proc.stderr[-2000:]


def _square_sum(n, mapper=map):
    return sum(mapper(lambda v: v * v, range(n)))


def _fails(n, mapper=map):
    if n == 2:
        raise TfqError("no data for run two")
    if n == 3:
        raise ValueError("a bug in run three")
    return n


@pytest.mark.parametrize("name", ["local", pytest.param("ray", marks=pytest.mark.slow)])  # starts Ray
def test_a_failed_chain_is_reported_with_its_run_and_the_others_finish(name, capsys, request):
    ex = request.getfixturevalue("local_ray") if name == "ray" else executors.executor("local")
    assert ex.chains(_square_sum, {"a": (3,), "b": (4,)}) == {"a": 5, "b": 14}
    out = ex.chains(_fails, {"one": (1,), "two": (2,), "three": (3,)})
    assert out["one"] == 1
    assert out["two"] == executors.Failure("two", "no data for run two")
    assert out["three"].label == "three" and out["three"].error == "ValueError: a bug in run three"
    assert "Traceback" in out["three"].traceback  # a bug keeps its traceback; bad input is one line
    if name == "local":  # Ray prints a task's lines in the worker's log stream instead
        assert "[two] failed: no data for run two" in capsys.readouterr().out


def test_chains_run_as_ray_tasks_in_other_processes(local_ray):
    def where(i, mapper=map):
        return os.getpid(), list(mapper(lambda v: (v, os.getpid()), range(2)))

    out = local_ray.chains(where, {"a": (0,), "b": (1,)})
    assert all(pid != os.getpid() for pid, _ in out.values())
    assert all([v for v, _ in lines] == [0, 1] for _, lines in out.values())
    # the lines ran as tasks of their own: not in the chain's process (blocked waiting for them)
    assert all(p != chain for chain, lines in out.values() for _, p in lines)


def test_a_worker_with_other_code_or_versions_refuses_to_run(tmp_path):
    env = {"versions": pipeline.versions(), "code": "0123456789abcdef"}
    with pytest.raises(TfqError, match="runs other code than the driver"):
        pipeline.run_pair(pipeline.PipelineConfig(artifacts=str(tmp_path)), "mnist", "mlp", env)
    assert not list(tmp_path.iterdir())


def test_a_worker_that_dies_is_retried_and_one_that_keeps_dying_is_reported(local_ray, tmp_path):
    marker = tmp_path / "died-once"

    def dies_once(n, mapper=map):
        if not marker.exists():
            marker.write_text("x")
            os.kill(os.getpid(), signal.SIGKILL)  # the worker process dies mid-task
        return n + 1

    def always_dies(n, mapper=map):
        (tmp_path / f"attempt-{len(list(tmp_path.glob('attempt-*')))}").write_text("x")
        os.kill(os.getpid(), signal.SIGKILL)

    out = local_ray.chains(dies_once, {"mnist_cnn": (1,)})
    assert marker.exists() and out == {"mnist_cnn": 2}
    out = local_ray.chains(always_dies, {"cifar10_cnn": (1,)})
    assert isinstance(out["cifar10_cnn"], executors.Failure) and out["cifar10_cnn"].label == "cifar10_cnn"
    assert len(list(tmp_path.glob("attempt-*"))) == 1 + executors.MAX_RETRIES
    assert re.search(r"died|exit|crash|terminat", out["cifar10_cnn"].error, re.I), out["cifar10_cnn"].error


def test_an_absent_head_node_fails_in_one_line():
    with pytest.raises(TfqError, match=r"--ray_address=127.0.0.1:1: no Ray head node answers there"):
        executors._check_reachable("127.0.0.1:1", timeout=2)
    with pytest.raises(TfqError, match="expected HOST:PORT"):
        executors._check_reachable("headnode")


def _tiny_run(root, *, accuracy=0.5, latency=1.0, weights=b"w"):
    run = root / "mnist_mlp"
    run.mkdir(parents=True)
    artifacts.write_json(run / "pipeline.json", {})
    artifacts.write_json(
        run / "eval_int8.json",
        {
            "accuracy": accuracy,
            "latency_ms": {"p50": latency},
            "path": str(run / "int8.tflite"),
            "versions": {"numpy": str(latency)},
        },
    )
    (run / "int8.tflite").write_bytes(weights)
    return root


def test_differences_sees_results_and_leaves_out_times_and_paths(tmp_path):
    a = _tiny_run(tmp_path / "a")
    assert scaleout.differences(a, _tiny_run(tmp_path / "b", latency=9.0)) == []  # latency, path, versions aside
    assert scaleout.differences(a, _tiny_run(tmp_path / "c", accuracy=0.51)) == [
        "mnist_mlp/eval_int8.json: .accuracy: 0.5 vs 0.51"
    ]
    assert scaleout.differences(a, _tiny_run(tmp_path / "d", weights=b"v")) == ["mnist_mlp/int8.tflite: bytes differ"]
    (tmp_path / "d" / "mnist_mlp" / "sweep.json").write_text("{}")
    assert "mnist_mlp/sweep.json: only in" in scaleout.differences(a, tmp_path / "d")[0]


def _ray_cli(root, data_root, cache, *extra):
    return pipeline_cli(root, data_root, cache, "--executor=ray", *extra)


STAGES = ", ".join((*STUDY_STAGES, *STUDY_EXPORTS))


@pytest.fixture(scope="session")  # one Ray run of the study however the tests are ordered
def through_ray(study_run, tmp_path_factory, data_root, cache):
    """The small study (`study_run`: the plain CLI, run once per test run) again through
    `python -m tfq.pipeline --executor=ray` with the same flags, on a local Ray instance."""
    ray_root = tmp_path_factory.mktemp("ray")
    proc = _ray_cli(ray_root, data_root, cache)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    return study_run[0], ray_root, proc.stdout


def test_the_study_through_ray_gives_the_local_results(through_ray):
    """The chain as a Ray task (the sweep's lines as tasks inside it) against the plain run of the same
    flags: every flatbuffer, prediction, chosen mixed-precision recipe and later result equal."""
    local, ray_root, stdout = through_ray
    assert f"[mnist_mlp] finished through ray: ran {STAGES}; current: nothing" in stdout.splitlines()
    assert scaleout.differences(local, ray_root) == []
    compared = {p.relative_to(ray_root / "mnist_mlp").as_posix() for p in (ray_root / "mnist_mlp").rglob("*")}
    assert {
        "train.json",
        "int8.tflite",
        "eval_int8.npy",
        "sweep.json",
        "sensitivity.json",
        "qat_int8.tflite",
        "mixed_size_1.recipe.json",
        "mixed_size_1.tflite",
        "micro.json",
        "generalize.npz",
        "export/int8_c/int8.c",
    } <= compared  # not a vacuous comparison
    local_recipe = json.loads((local / "mnist_mlp" / "mixed_size_1.recipe.json").read_text())
    assert json.loads((ray_root / "mnist_mlp" / "mixed_size_1.recipe.json").read_text()) == local_recipe
    assert not list(ray_root.rglob(f"{artifacts.TEMP_PREFIX}*"))


def test_a_rerun_through_ray_or_locally_redoes_nothing(through_ray, data_root, cache, capsys):
    _, ray_root, _ = through_ray
    before = {run: (ray_root / run / "pipeline.json").read_text() for run in ("mnist_mlp", "report")}
    again = _ray_cli(ray_root, data_root, cache)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"[mnist_mlp] finished through ray: ran nothing; current: {STAGES}" in again.stdout.splitlines(), (
        again.stdout[-3000:]
    )
    assert "[report] report: current, skipped" in again.stdout
    # the keys do not depend on the executor: the plain run finds the same stages current
    pipeline.pipeline(study_config(ray_root, data_root, cache))
    assert ": done in" not in capsys.readouterr().out
    assert {run: (ray_root / run / "pipeline.json").read_text() for run in before} == before  # nothing re-recorded


def test_a_chain_that_fails_on_ray_names_its_run_and_the_other_chain_finishes(through_ray, tmp_path, data_root, cache):
    root = tmp_path / "a"
    shutil.copytree(through_ray[1] / "mnist_mlp", root / "mnist_mlp")  # current: its stages are skipped
    (root / "fashion_mnist_mlp").write_text("a file where the run folder should be")
    proc = _ray_cli(root, data_root, cache, "--datasets=mnist,fashion_mnist")
    errors = error_lines(proc.stderr)
    assert proc.returncode == 1 and errors, proc.stderr[-2000:]
    assert re.match(
        r"error: 1 of 2 runs failed, so no report: fashion_mnist_mlp: cannot write to .*fashion_mnist_mlp", errors[0]
    ), errors
    assert "[mnist_mlp] finished through ray: ran nothing" in proc.stdout and not (root / "report").exists()


def test_stale_temporary_files_of_a_killed_writer_are_removed_when_its_chain_starts(tmp_path):
    run = tmp_path / "mnist_mlp"
    run.mkdir()
    (run / f"{artifacts.TEMP_PREFIX}int8.tflite.abc123.tflite").write_bytes(b"half")
    (run / "export" / "int8_c").mkdir(parents=True)
    (run / "export" / "int8_c" / f"{artifacts.TEMP_PREFIX}int8.c.x1.c").write_text("half")
    (run / "int8.tflite").write_bytes(b"whole")
    removed = artifacts.remove_stale_temps(run)
    assert len(removed) == 2 and sorted(p.name for p in run.rglob("*") if p.is_file()) == ["int8.tflite"]


def test_ray_train_with_two_workers_trains_as_well_as_one(trained, data_root, cache, tmp_path):
    """The session's one-worker MLP against the same configuration on two Ray Train workers
    (MultiWorkerMirroredStrategy, the same global batch): the paired test on the same test images
    finds no difference, and only the chief wrote the run folder."""
    from tfq import data, models, train
    from tfq.core import stats

    one = artifacts.read_json(trained / "mnist_mlp" / artifacts.TRAIN_JSON)
    cfg = train.TrainConfig(
        **{**one["config"], "artifacts": str(tmp_path), "data_root": str(data_root), "cache_dir": str(cache)}
    )
    two = executors.train_on_ray(train.train, cfg, workers=2)
    assert two["replicas"] == 2 and two["strategy"] == "ray" and two["fingerprint"] != one["fingerprint"]
    assert sorted(p.name for p in (tmp_path / "mnist_mlp").iterdir()) == [artifacts.MODEL_FILE, artifacts.TRAIN_JSON]

    splits = data.load("mnist", root=str(data_root), cache=str(cache), max_eval=cfg.max_eval_examples)
    images, labels = data.to_numpy(splits.test)
    scaled = data.scale(images).numpy()
    correct = [
        models.load_trained(folder).predict(scaled, verbose=0).argmax(1) == labels
        for folder in (trained / "mnist_mlp", tmp_path / "mnist_mlp")
    ]
    paired = stats.paired(*correct)
    assert abs(two["test_accuracy"] - one["test_accuracy"]) * 100 == pytest.approx(abs(paired["delta_pts"]), abs=0.01)
    assert paired["p_value"] > 0.01 and abs(paired["delta_pts"]) < 3, paired
    assert np.mean(correct[1]) > 0.85
