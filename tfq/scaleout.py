"""The study on more than one process or machine, through Ray.

`python -m tfq.pipeline --executor=ray [--ray_address=HOST:PORT]` runs each dataset x model's chain of
stages as one Ray task, and inside a chain the precision sweep's lines as further tasks;
`python -m tfq.train --strategy=ray --ray_workers=2` trains one model with Ray Train's TensorFlow
trainer, which writes each worker's TF_CONFIG for `MultiWorkerMirroredStrategy`.

Stages hand each other files, so every node must see the artifacts folder, the data root and the
tfds cache at the same absolute paths (one machine, or a shared filesystem such as NFS); the driver
checks after each chain that the files its workers recorded are there. Ray is an optional extra
(`pip install -e .[ray]`): the default `local` executor runs the same functions one after another in
this process and never imports it.

Failures: a worker process or node that dies is retried by Ray (`MAX_RETRIES`), and the chain
resumes from its last finished stage (stage keys; training from its epoch checkpoint). A chain that
raises is reported with its run while the other chains go on; the pipeline then exits non-zero
without a report. Every file is written to a temporary name and renamed, and a chain first removes
the temporary files a killed writer left in its folder, so no half-written artifact remains.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import tempfile
import traceback
from pathlib import Path

from tfq.artifacts import TfqError

EXECUTORS = ("local", "ray")
MAX_RETRIES = 2  # per task, after its worker process or node dies
ENV_PREFIXES = ("TFQ_", "TF_CPP_")  # the driver's settings that every worker needs too


@dataclasses.dataclass
class Failure:
    """A chain that did not finish: its run and why."""
    label: str
    error: str
    traceback: str = ""


class Local:
    """Everything in this process, one piece after another: the plain run."""

    name = "local"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def chains(self, fn, jobs: dict[str, tuple]) -> dict[str, object]:
        """`fn(*args)` for every `label: args`; a chain that raises becomes a `Failure`."""
        return {label: _guarded(fn, label, args) for label, args in jobs.items()}



def _guarded(fn, label: str, args: tuple):
    try:
        return fn(*args)
    except TfqError as e:
        why = str(e) if len(str(e).splitlines()) == 1 else _last_error(e)  # one from a task comes with its traceback
        print(f"[{label}] failed: {why}", flush=True)
        return Failure(label, why)
    except Exception as e:  # noqa: BLE001 - reported with its run; the other chains go on
        tb = traceback.format_exc()
        print(f"[{label}] failed:\n{tb}", flush=True)
        return Failure(label, f"{type(e).__name__}: {e}", tb)


def _ray():
    try:
        import ray
    except ImportError:
        raise TfqError("--executor=ray and --strategy=ray need Ray, an optional extra: "
                       "pip install -e '.[ray]' (or pip install -c constraints.txt 'ray[train]')") from None
    return ray


def connect(address: str | None):
    """Join the cluster at `address` (HOST:PORT of `ray start --head`), or start a local instance.
    Returns the ray module; the driver's TFQ_* settings travel to every worker."""
    ray = _ray()
    if ray.is_initialized():
        return ray
    if address:
        _check_reachable(address)
    if not sys.stdout.isatty():
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")  # plain "(task pid=...)" prefixes in logs
    env = {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIXES)}
    try:
        ray.init(address=address or None, include_dashboard=False, configure_logging=False,
                 runtime_env={"env_vars": env}, log_to_driver=True)
    except (ConnectionError, ValueError, RuntimeError) as e:
        raise TfqError(f"--ray_address={address}: cannot join the Ray cluster there ({str(e).splitlines()[0]}); if "
                       "its nodes use token authentication, set RAY_AUTH_MODE=token and the head's token "
                       "(RAY_AUTH_TOKEN or ~/.ray/auth_token) here too") from None
    return ray


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """One line now instead of ray.init waiting minutes for a head node that is not there."""
    import socket

    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise TfqError(f"--ray_address={address}: expected HOST:PORT, as `ray start --head` prints it")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise TfqError(f"--ray_address={address}: no Ray head node answers there ({e.strerror or e}); start one with "
                       "`ray start --head --port=6379` and pass HOST:6379") from None


def ray_map(fn, items) -> list:
    """`map` as Ray tasks (results in order); used inside a chain for the sweep's lines."""
    ray = _ray()
    task = ray.remote(num_cpus=1, max_retries=MAX_RETRIES)(_apply)
    return ray.get([task.remote(fn, item) for item in items])


def _apply(fn, item):
    return fn(item)  # a task body: Ray takes plain functions only, not functools.partial


def _chain_task(fn, label: str, args: tuple):
    """One chain on a worker; exceptions come back as `Failure`s (Ray retries only dead workers)."""
    return _guarded(lambda *a: fn(*a, mapper=ray_map), label, args)


class Ray:
    """Chains as Ray tasks, at most as many at once as the cluster has CPUs (a chain blocked on its
    sweep's tasks lends its CPU to them), on a local instance or the cluster at `address`."""

    name = "ray"

    def __init__(self, address: str | None = None):
        self.address = address
        self.started_here = False

    def __enter__(self):
        ray = _ray()
        self.started_here = not ray.is_initialized()
        self.ray = connect(self.address)
        return self

    def __exit__(self, *exc):
        if self.started_here:
            self.ray.shutdown()
        return False

    def cpus(self) -> int:
        return max(1, int(self.ray.cluster_resources().get("CPU", 1)))

    def chains(self, fn, jobs: dict[str, tuple]) -> dict[str, object]:
        ray = self.ray
        task = ray.remote(num_cpus=1, max_retries=MAX_RETRIES, retry_exceptions=False)(_chain_task)
        pending, running, results = list(jobs.items()), {}, {}
        limit = self.cpus()
        while pending or running:
            while pending and len(running) < limit:
                label, args = pending.pop(0)
                running[task.remote(fn, label, args)] = label
            done, _ = ray.wait(list(running), num_returns=1)
            label = running.pop(done[0])
            try:
                results[label] = ray.get(done[0])
            except Exception as e:  # noqa: BLE001 - e.g. the worker died more than MAX_RETRIES times
                why = _last_error(e)
                print(f"[{label}] failed on the cluster (a dead worker is retried {MAX_RETRIES} times): {why}", flush=True)
                results[label] = Failure(label, why)
        return {label: results[label] for label in jobs}



def _last_error(e: BaseException) -> str:
    """The innermost "SomeError: message" line of an error Ray wrapped around a worker's traceback."""
    lines = [ln.strip() for ln in str(e).splitlines() if re.match(r"\s*[\w.]+(Error|Exception|Exit): ", ln)]
    return lines[-1] if lines else f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"


def executor(name: str, address: str | None = None):
    """`local` (the default) or `ray`."""
    if name == "local":
        if address:
            raise TfqError(f"--ray_address={address} needs --executor=ray")
        return Local()
    if name == "ray":
        return Ray(address)
    raise TfqError(f"--executor={name}: choose one of: {', '.join(EXECUTORS)}")


def absolute_places(cfg):
    """`cfg` with its artifacts folder, data root and tfds cache as absolute paths: a worker may start
    in another directory, or on another machine that mounts them at the same paths."""
    from tfq import data

    root = data.data_root(cfg.data_root)
    return dataclasses.replace(cfg, artifacts=str(Path(cfg.artifacts).resolve()),
                               data_root=str(root.resolve()) if root else None,
                               cache_dir=str(data.cache_dir(cfg.cache_dir).resolve()))


def train_on_ray(cfg, workers: int, address: str | None = None) -> dict:
    """Ray Train's TensorflowTrainer: `workers` processes (one CPU each), each running
    `tfq.train.train(cfg)` under `MultiWorkerMirroredStrategy` from the TF_CONFIG Ray writes.
    Every worker reads the data; worker 0 (the chief) writes the run folder. Returns train.json."""
    from tfq import artifacts, data

    cfg = absolute_places(dataclasses.replace(cfg, strategy="ray", ray_workers=workers))
    cfg.validate()  # --ray_workers at least 1, among the rest
    data.load(cfg.dataset, root=cfg.data_root, cache=cfg.cache_dir)  # built once here, not by every worker at once
    connect(address)
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.tensorflow import TensorflowTrainer

    def loop(config):
        from absl import logging

        from tfq import console
        from tfq import train as worker_train

        if not console.verbose():  # as cli.run does: tfds' and the collectives' INFO lines stay back
            logging.set_verbosity(logging.ERROR)
            worker_train.tf.get_logger().setLevel("ERROR")
        worker_train.train(config["cfg"])

    trainer = TensorflowTrainer(
        loop, train_loop_config={"cfg": cfg},
        scaling_config=ScalingConfig(num_workers=workers, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(storage_path=str(Path(tempfile.gettempdir()) / "tfq-ray-train"),
                             failure_config=FailureConfig(max_failures=MAX_RETRIES)))
    try:
        trainer.fit()
    except Exception as e:  # noqa: BLE001 - Ray wraps the workers' tracebacks; one line for the user
        raise TfqError(f"training {cfg.dataset} {cfg.model} on {workers} Ray workers failed: {_last_error(e)}") from None
    return artifacts.read_json(artifacts.run_dir(cfg.artifacts, cfg.dataset, cfg.model) / artifacts.TRAIN_JSON)


# What may differ between two runs of the same study: where, when and how fast.
# `code` is tfq's source digest; a Keras file's digest changes with its save date (compared apart).
_VOLATILE = re.compile(r"\w*_s|time_s|(\w+_)?seconds|finished|started|latency(_\w+)?|\w+_ms(_\w+)?|"
                       r"throughput(_\w+)?|images_per_s|speedup(_\w+)?|versions|artifacts|data_root|cache_dir|code")
_RESULT_FILES = (".json", ".tflite", ".npy", ".npz", ".csv", ".c", ".h", ".txt", ".keras")


def _result_files(run: Path) -> set[str]:
    """The run's result files; where pipeline.json records its stages' outputs, only those (files a
    benchmark added beside the study are not the study's)."""
    import json

    recorded = {name for stage in json.loads((run / "pipeline.json").read_text()).values()
                for name in stage.get("outputs", {})} if (run / "pipeline.json").is_file() else set()
    return {p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file() and p.suffix in _RESULT_FILES
            and "tensorboard" not in p.parts and p.name != "pipeline.json" and not p.name.startswith(".")
            and (not recorded or f"{p.parent.name}/{p.name}" in recorded)}


def _keras_contents(path: Path) -> dict[str, bytes]:
    """A .keras file without its metadata.json (which records when it was saved)."""
    import zipfile

    with zipfile.ZipFile(path) as z:
        return {i.filename: z.read(i) for i in z.infolist() if i.filename != "metadata.json"}


def differences(a: str | os.PathLike, b: str | os.PathLike) -> list[str]:
    """How two artifacts folders of the same study differ in results: every run folder's files by
    name; flatbuffers, predictions (.npy/.npz) and CSVs byte for byte; JSON value by value, leaving
    out times, latencies, paths and versions. Empty: the same results."""
    import json

    import numpy as np

    from tfq import artifacts

    a, b = Path(a), Path(b)
    out = []
    runs = sorted(p.parent.name for p in a.glob("*/pipeline.json") if p.parent.name != "report")
    if runs != sorted(p.parent.name for p in b.glob("*/pipeline.json") if p.parent.name != "report"):
        return [f"run folders differ: {runs} vs {sorted(p.parent.name for p in b.glob('*/pipeline.json'))}"]
    for run in runs:
        names, other = _result_files(a / run), _result_files(b / run)
        out += [f"{run}/{n}: only in {a if n in names else b}" for n in sorted(names ^ other)]
        # a Keras file's digest stands for its contents: equal contents, equal digests
        aliases = [{}, {}]
        for name in sorted(n for n in names & other if n.endswith(".keras")):
            pa, pb = a / run / name, b / run / name
            if _keras_contents(pa) != _keras_contents(pb):
                out.append(f"{run}/{name}: weights or architecture differ")
            aliases[0][artifacts.sha256(pa)] = aliases[1][artifacts.sha256(pb)] = f"<{name}>"
        for name in sorted(n for n in names & other if not n.endswith(".keras")):
            pa, pb = a / run / name, b / run / name
            if pa.suffix == ".json":
                out += [f"{run}/{name}: {d}" for d in _json_diff(json.loads(pa.read_text()), json.loads(pb.read_text()),
                                                               aliases=aliases)]
            elif pa.suffix == ".npz":
                with np.load(pa) as za, np.load(pb) as zb:
                    if sorted(za.files) != sorted(zb.files) or any(not np.array_equal(za[k], zb[k]) for k in za.files):
                        out.append(f"{run}/{name}: arrays differ")
            elif pa.read_bytes() != pb.read_bytes():
                out.append(f"{run}/{name}: bytes differ")
    return out


def _json_diff(x, y, where: str = "", *, aliases=({}, {})) -> list[str]:
    if isinstance(x, dict) and isinstance(y, dict):
        keys = [k for k in {*x, *y} if not _VOLATILE.fullmatch(str(k))]
        return [d for k in sorted(keys, key=str) for d in
                (_json_diff(x[k], y[k], f"{where}.{k}", aliases=aliases) if k in x and k in y
                 else [f"{where}.{k}: only on one side"])]
    if isinstance(x, list) and isinstance(y, list):
        if len(x) != len(y):
            return [f"{where}: {len(x)} vs {len(y)} items"]
        return [d for i, (u, v) in enumerate(zip(x, y)) for d in _json_diff(u, v, f"{where}[{i}]", aliases=aliases)]
    if isinstance(x, str) and isinstance(y, str):
        if x.startswith("/") or y.startswith("/"):
            return []  # a path
        x, y = aliases[0].get(x, x), aliases[1].get(y, y)
    return [] if x == y else [f"{where}: {x!r} vs {y!r}"]


def main(argv):
    del argv
    from absl import flags

    a, b = flags.FLAGS.compare
    diffs = differences(a, b)
    for d in diffs:
        print(d)
    folders = [p.parent for p in Path(a).glob("*/pipeline.json") if p.parent.name != "report"]
    runs, files = len(folders), sum(len(_result_files(f)) for f in folders)
    if diffs:
        raise TfqError(f"{a} and {b} differ in {len(diffs)} place(s) (listed above)")
    print(f"same results: {files} files in {runs} run folders (times, latencies, paths and versions aside)")


if __name__ == "__main__":
    from absl import flags

    from tfq import cli

    flags.DEFINE_list("compare", None, "Two artifacts folders of the same study (A,B): print how their results differ.",
                      required=True)
    flags.register_validator("compare", lambda v: len(v) == 2, "--compare takes two folders: A,B")
    cli.run(main)
