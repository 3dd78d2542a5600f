"""Shared fixtures: the real data root (from TFQ_DATA_ROOT), one tfds cache per test session,
and a way to run the real CLIs as a user does."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import tfq  # noqa: F401  (selects Keras 2 before anything imports TensorFlow)

REPO = Path(__file__).resolve().parents[1]


# Fixtures that train a model, build a real dataset or start a process that imports TensorFlow: a test that
# uses one (directly or through another fixture) is `slow`; `./tfq.sh test -m "not slow"` is the fast tier.
SLOW_FIXTURES = {"data_root", "trained", "converted", "run_cli", "study_run", "through_ray", "local_ray"}

# The small study every pipeline and scale-out test reads: the MNIST MLP through every stage on small slices.
STUDY = dict(
    datasets=("mnist",),
    models=("mlp",),
    max_train_examples=600,
    max_eval_examples=200,
    epochs=1,
    latency_runs=20,
    num_calibration=50,
    qat_low_bit=("w4a8",),
    qat_low_bit_epochs=1,
    sweep_grid_examples=100,
    sweep_calibration_draws=2,
    mixed_budgets=(1.0,),
    micro_examples=40,
    shift_examples=16,
    cross_datasets=("usps", "cifar10"),
    export_modes=("int8",),
)
# the stages the small study runs, in order, and its exports (`--export_modes=int8`)
STUDY_STAGES = ("train", "convert", "qat", "evaluate", "sweep", "sensitivity", "mixed", "micro", "generalize")
STUDY_EXPORTS = ("export int8 c", "export int8 android")


def flag_args(settings: dict) -> list[str]:
    """`--name=value` for each setting, tuples comma-joined, as a user types them."""
    return [f"--{k}={','.join(map(str, v)) if isinstance(v, tuple) else v}" for k, v in settings.items()]


def tfq_cli(module: str, *args: str, data_root, cache, env: dict | None = None, timeout: float = 1800):
    """Run `python -m tfq.<module> <args>` the way a user does, offline, on `data_root` with the tfds
    cache `cache`; returns CompletedProcess. The timeout is a safety net, not a speed target."""
    return subprocess.run(
        [sys.executable, "-m", f"tfq.{module}", *args],
        cwd=REPO,
        env={
            **os.environ,
            "TFQ_DATA_ROOT": str(data_root),
            "TFQ_CACHE_DIR": str(cache),
            "TFQ_OFFLINE": "1",
            **(env or {}),
        },
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def pipeline_cli(root: Path, data_root: Path, cache: Path, *extra: str, settings: dict = STUDY):
    """`python -m tfq.pipeline --preset=full` with `settings` as flags into `root`, as a user starts it."""
    return tfq_cli(
        "pipeline",
        "--preset=full",
        f"--artifacts={root}",
        *flag_args(settings),
        *extra,
        data_root=data_root,
        cache=cache,
        timeout=3600,  # a 2-core Zen 1 under load takes over 15 minutes
    )


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The real datasets; CI points TFQ_DATA_ROOT at them. Never downloaded."""
    value = os.environ.get("TFQ_DATA_ROOT")
    if not value or not (Path(value) / "mnist").is_dir():
        if os.environ.get("CI"):
            pytest.fail("TFQ_DATA_ROOT must name the shared datasets folder in CI")
        pytest.skip("TFQ_DATA_ROOT is not set to the shared datasets folder")
    return Path(value)


@pytest.fixture(scope="session")
def cache(tmp_path_factory) -> Path:
    """One tfds cache for the whole session, so each real dataset is built once."""
    return tmp_path_factory.mktemp("tfq-cache")


@pytest.fixture
def run_cli(data_root, cache):
    """Run `python -m tfq.<module> <args>` the way a user does (`tfq_cli` on the real data); returns
    CompletedProcess."""

    def run(module: str, *args: str, env: dict | None = None, timeout: float = 1800):
        return tfq_cli(module, *args, data_root=data_root, cache=cache, env=env, timeout=timeout)

    return run


def error_lines(stderr: str) -> list[str]:
    """The lines tfq itself printed as errors (TensorFlow's start-up chatter aside)."""
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def built_once(tmp_path_factory, name: str, build) -> Path:
    """`build(folder)` run once per test run, however many pytest-xdist workers ask (a file lock in the
    run's shared temporary folder), and each worker handed its own copy, so tests that write into it
    never race. Without xdist the run's own temporary folder holds it."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    shared = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / f"shared-{name}"
    with FileLock(f"{shared}.lock"):
        if not shared.is_dir():
            building = shared.with_name(shared.name + ".building")
            shutil.rmtree(building, ignore_errors=True)
            building.mkdir()
            build(building)
            building.rename(shared)
    own = tmp_path_factory.mktemp(name)
    shutil.copytree(shared, own, dirs_exist_ok=True)
    return own


@pytest.fixture(scope="session")
def trained(tmp_path_factory, data_root, cache):
    """A small CNN and MLP trained on an MNIST slice, in one session artifacts folder."""
    from tfq import train

    def build(root: Path) -> None:
        for model in ("cnn", "mlp"):
            train.train(
                train.TrainConfig(
                    dataset="mnist",
                    model=model,
                    epochs=2,
                    batch_size=64,
                    max_train_examples=3000,
                    max_eval_examples=500,
                    artifacts=str(root),
                    data_root=str(data_root),
                    cache_dir=str(cache),
                )
            )

    return built_once(tmp_path_factory, "artifacts", build)


@pytest.fixture(scope="session")
def converted(trained, tmp_path_factory, data_root, cache):
    """Every mode of the small CNN, converted once per test run and placed in this worker's `trained` run."""
    import json

    from tfq import convert
    from tfq.core import artifacts

    def build(root: Path) -> None:
        shutil.copytree(trained / "mnist_cnn", root / "mnist_cnn")
        manifests = convert.convert(
            convert.ConvertConfig(
                dataset="mnist",
                model="cnn",
                modes=("all",),
                artifacts=str(root),
                num_calibration=100,
                data_root=str(data_root),
                cache_dir=str(cache),
            )
        )
        artifacts.write_json(root / "manifests.json", manifests)

    made = built_once(tmp_path_factory, "converted", build)
    shutil.copytree(made / "mnist_cnn", trained / "mnist_cnn", dirs_exist_ok=True)
    return trained / "mnist_cnn", {m["mode"]: m for m in json.loads((made / "manifests.json").read_text())}


@pytest.fixture(scope="session")
def study_run(tmp_path_factory, data_root):
    """The small study, run once per test run through the CLI: (artifacts, stdout, stderr). Its own empty
    tfds cache (the first build of MNIST, with tfds' progress bars to keep back, is in it), removed after.
    Tests that change it take `study`'s copy."""

    def build(folder: Path) -> None:
        proc = pipeline_cli(folder / "artifacts", data_root, folder / "cache")
        assert proc.returncode == 0, proc.stderr[-3000:]
        shutil.rmtree(folder / "cache")
        (folder / "stdout.txt").write_text(proc.stdout)
        (folder / "stderr.txt").write_text(proc.stderr)

    made = built_once(tmp_path_factory, "study", build)
    return made / "artifacts", (made / "stdout.txt").read_text(), (made / "stderr.txt").read_text()


@pytest.fixture
def study(study_run, tmp_path) -> Path:
    """This test's own copy of the small study's artifacts, to rerun and change."""
    shutil.copytree(study_run[0], tmp_path / "study")
    return tmp_path / "study"


def study_config(root, data_root, cache, **changes):
    """The small study's settings as an in-process PipelineConfig, with `changes`."""
    from tfq import pipeline

    return pipeline.PipelineConfig(
        artifacts=str(root), data_root=str(data_root), cache_dir=str(cache), **{**STUDY, **changes}
    )


@pytest.fixture
def with_flags(monkeypatch, tmp_path):
    """`with_flags(cls, function, *args)`: what a stage's `main` does with `args` where it only fills its
    config from its flags and calls its plain function, in this process: the flags (`define(fv)`, default
    the config's own) parsed on a fresh FlagValues, the config filled from them (`cli.config_from_flags`,
    with the stage's `renames`), then `function(config)`. Offline, with an empty tfds cache, as `run_cli`
    runs. What only the command line decides (hand-overs, flag combinations checked in `main`, the exit
    status and the one `error:` line) stays with `run_cli`, once per stage."""
    from absl import flags

    from tfq.core import cli

    monkeypatch.setenv("TFQ_OFFLINE", "1")
    monkeypatch.setenv("TFQ_CACHE_DIR", str(tmp_path / "empty-cache"))

    def run(cls, function, *args: str, define=None, **renames: str):
        fv = flags.FlagValues()
        (define or (lambda v: cli.define_flags(cls, v)))(fv)
        assert fv(["tfq", *args]) == ["tfq"], "arguments that are not flags"
        return function(cli.config_from_flags(cls, fv, **renames))

    return run


@pytest.fixture
def mock_root(tmp_path, monkeypatch):
    """An empty data root on a machine where tfds' servers answer: tfds' mock replaces the download."""
    from tfq.data import sources

    monkeypatch.setattr(sources, "unreachable", lambda urls: None)
    root = tmp_path / "empty-root"
    root.mkdir()
    return root


@pytest.fixture(scope="session")
def tiny():
    """A tiny CNN with seeded random weights (28x28x1 in, 10 classes), its float32 and int8 flatbuffers and
    random images labelled by the model itself, made in-process in seconds: what the fast tier's unit tests
    read where the slow tier reads a trained MNIST model."""
    import types

    import numpy as np

    from tfq import convert
    from tfq.core.backend import keras
    from tfq.quant import modes

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(8, 3, strides=2, name="conv"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.ReLU(name="relu"),
            keras.layers.Flatten(name="flat"),
            keras.layers.Dense(10, activation="softmax", name="probs"),
        ]
    )
    rng = np.random.default_rng(0)
    bn = model.get_layer("bn")  # statistics of its own, so a copy that lost them shows
    bn.set_weights([rng.uniform(0.5, 1.5, 8), rng.normal(0, 0.1, 8), rng.normal(0, 0.1, 8), rng.uniform(0.5, 2, 8)])
    images = rng.integers(0, 256, size=(64, 28, 28, 1), dtype=np.uint8)
    calibration = (images[:32] / 255.0).astype(np.float32)
    labels = model.predict(images / 255.0, verbose=0).argmax(-1)
    blobs = {
        m: convert.convert_model(model, modes.get_mode(m), calibration=calibration)[0] for m in ("float32", "int8")
    }
    return types.SimpleNamespace(model=model, blobs=blobs, images=images, labels=labels, calibration=calibration)
