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

from tfq.core import artifacts
from tfq.core.artifacts import TfqError

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
        raise TfqError(
            "--executor=ray and --strategy=ray need Ray, an optional extra: "
            "pip install -e '.[ray]' (or pip install -c constraints.txt 'ray[train]')"
        ) from None
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
        ray.init(
            address=address or None,
            include_dashboard=False,
            configure_logging=False,
            runtime_env={"env_vars": env},
            log_to_driver=True,
        )
    except (ConnectionError, ValueError, RuntimeError) as e:
        raise TfqError(
            f"--ray_address={address}: cannot join the Ray cluster there ({str(e).splitlines()[0]}); if "
            "its nodes use token authentication, set RAY_AUTH_MODE=token and the head's token "
            "(RAY_AUTH_TOKEN or ~/.ray/auth_token) here too"
        ) from None
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
        raise TfqError(
            f"--ray_address={address}: no Ray head node answers there ({e.strerror or e}); start one with "
            "`ray start --head --port=6379` and pass HOST:6379"
        ) from None


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
                print(
                    f"[{label}] failed on the cluster (a dead worker is retried {MAX_RETRIES} times): {why}", flush=True
                )
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
    return dataclasses.replace(
        cfg,
        artifacts=str(Path(cfg.artifacts).resolve()),
        data_root=str(root.resolve()) if root else None,
        cache_dir=str(data.cache_dir(cfg.cache_dir).resolve()),
    )


def train_on_ray(train_fn, cfg, workers: int, address: str | None = None) -> dict:
    """Ray Train's TensorflowTrainer: `workers` processes (one CPU each), each running
    `train_fn(cfg)` (`tfq.train.train`, passed in: the stage sits above this module) under
    `MultiWorkerMirroredStrategy` from the TF_CONFIG Ray writes.
    Every worker reads the data; worker 0 (the chief) writes the run folder. Returns train.json."""
    from tfq import data

    cfg = absolute_places(dataclasses.replace(cfg, strategy="ray", ray_workers=workers))
    cfg.validate()  # --ray_workers at least 1, among the rest
    # built (or decoded) once here, not by every worker at once
    data.load(cfg.dataset, root=cfg.data_root, cache=cfg.cache_dir, shape=cfg.image_size)
    connect(address)
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.tensorflow import TensorflowTrainer

    def loop(config):
        from absl import logging

        from tfq.core import console
        from tfq.core.backend import tf

        if not console.verbose():  # as cli.run does: tfds' and the collectives' INFO lines stay back
            logging.set_verbosity(logging.ERROR)
            tf.get_logger().setLevel("ERROR")
        config["train_fn"](config["cfg"])

    trainer = TensorflowTrainer(
        loop,
        train_loop_config={"cfg": cfg, "train_fn": train_fn},
        scaling_config=ScalingConfig(num_workers=workers, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(
            storage_path=str(Path(tempfile.gettempdir()) / "tfq-ray-train"),
            failure_config=FailureConfig(max_failures=MAX_RETRIES),
        ),
    )
    try:
        trainer.fit()
    except Exception as e:  # noqa: BLE001 - Ray wraps the workers' tracebacks; one line for the user
        raise TfqError(
            f"training {cfg.dataset} {cfg.model} on {workers} Ray workers failed: {_last_error(e)}"
        ) from None
    return artifacts.read_json(artifacts.run_dir(cfg.artifacts, cfg.dataset, cfg.model) / artifacts.TRAIN_JSON)


def check_collected(label: str, produced: dict[str, str]) -> None:
    """The files a chain's worker made must be here, as made: the artifacts folder is shared."""
    for path, digest in produced.items():
        if not Path(path).is_file() or artifacts.sha256(path) != digest:
            raise TfqError(
                f"[{label}] a worker wrote {path}, but the driver does not see it there: every node "
                "must mount the artifacts folder at the same path"
            )
