"""Score a run's .tflite files on the test split: `python -m tfq.evaluate --dataset=mnist --model=cnn`.

Each file goes through the LiteRT harness (`tfq.runtimes.harness`: inputs scaled and quantized as a
device app would), and its accuracy, agreement with float32, paired difference, per-class accuracy,
which kernels ran it and its batch-1 latency are written to eval_<mode>.json beside its predictions
(eval_<mode>.npy), which later stages and the report reuse. `--tflite=PATH` scores any file.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
from absl import flags

from tfq import data, models
from tfq.core import artifacts, cli, console, stats
from tfq.core.artifacts import TfqError
from tfq.models import imported
from tfq.quant import modes
from tfq.runtimes import harness, litert


def metrics(pred: np.ndarray, labels: np.ndarray, num_classes: int, reference: np.ndarray | None) -> dict:
    confusion = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(confusion, (labels, pred), 1)
    per_class = confusion.diagonal() / np.maximum(confusion.sum(axis=1), 1)
    return {
        "accuracy": float((pred == labels).mean()),
        "agreement": float((pred == reference).mean()) if reference is not None else None,
        "per_class_accuracy": [float(a) for a in per_class],
        "confusion_matrix": confusion.tolist(),
    }


SPLIT_PREFIX = {"test": "eval_", "validation": "val_"}  # the report reads eval_*.json: test results only
CROSS_PREFIX = "xeval_"  # xeval_<other dataset>_<name>.json: a run's files on another dataset's test split


def result_stem(run_file: Path, name: str, split: str = "test", eval_dataset: str | None = None) -> Path:
    """Where a file's result goes (add .json / .npy): eval_<name>, val_<name> or xeval_<other>_<name>."""
    prefix = f"{CROSS_PREFIX}{eval_dataset}_" if eval_dataset else SPLIT_PREFIX[split]
    return run_file.parent / f"{prefix}{name}"


@dataclasses.dataclass
class EvalConfig(cli.Run):
    modes: tuple[str, ...] = cli.setting(("int8",), "Modes to evaluate (their <mode>.tflite), or all.", flag="mode")
    tflite: str | None = cli.setting(None, "Evaluate this .tflite classifier instead of a mode's file.")
    reference: str | None = cli.setting(
        None,
        "With --tflite: measure agreement (and the paired test) against this "
        ".tflite's predictions; without it, no agreement is reported.",
    )
    threads: int = cli.setting(1, "Interpreter threads.")
    processes: int = cli.setting(
        0,
        "Worker processes for the accuracy pass of models XNNPACK does not "
        "take, e.g. 16x8 (0: one per core). XNNPACK models use one process.",
    )
    batch_size: int = cli.setting(256, "Batch for the accuracy pass (models with a dynamic batch).")
    latency_runs: int = cli.setting(200, "Timed batch-1 invokes per model (after 20 warm-up runs).")
    latency_rounds: int = cli.setting(5, "Rounds the models take turns in for latency (runs split evenly).")
    # "validation": for choosing settings (calibration count, ...), never the test split
    split: str = cli.setting(
        "test",
        "Score on the test split (eval_<mode>.json) or on the "
        "validation split (val_<mode>.json), where settings are chosen.",
        choices=list(SPLIT_PREFIX),
    )
    max_eval_examples: int = cli.setting(0, "Use only this many test examples (0: all).")
    compare_naive: bool = cli.setting(False, "Also time the tutorials' image-by-image loop.")
    eval_dataset: str | None = cli.setting(
        None,
        "Score on this dataset's test split instead (same classes and "
        "image shape, e.g. emnist_digits or usps for an MNIST run): xeval_<dataset>_<mode>.json; "
        "no latency.",
    )


def target_files(cfg: EvalConfig, run: Path) -> list[tuple[str, Path]]:
    """(name, .tflite path) pairs to evaluate: the modes' files, or one --tflite file."""
    if cfg.tflite:
        return [(Path(cfg.tflite).stem, Path(cfg.tflite))]
    names = list(cfg.modes)
    if "all" in names:
        names = sorted(p.stem for p in run.glob("*.tflite")) if run.is_dir() else []
        if not names:
            raise TfqError(
                f"no .tflite files in {run}; make them with: python -m tfq.convert "
                f"--dataset={cfg.dataset} --model={cfg.model} --mode=all"
            )
    out = []
    for name in names:
        path = run / f"{name}.tflite"
        if not path.is_file():
            if not name.startswith(tuple(modes.KNOWN)):
                raise TfqError(f"unknown mode {name!r}; choose one of: {', '.join(modes.KNOWN)}, all")
            maker = "qat" if name == "qat_int8" else f"convert --mode={name}"
            raise TfqError(
                f"no {path}; make it with: python -m tfq.{maker} --dataset={cfg.dataset} --model={cfg.model}"
            )
        out.append((name, path))
    return out


def evaluate(cfg: EvalConfig) -> list[dict]:
    """Evaluate each target on the test split; writes eval_<name>.json beside each file."""
    data.get(cfg.dataset, cfg.image_size)  # a known dataset; its run's shape once the run (or an import) is there
    cli.check_at_least(cfg, 1, "threads", "batch_size", "latency_runs", "latency_rounds")
    cli.check_at_least(cfg, 0, "processes", "max_eval_examples")
    if cfg.tflite:
        run = artifacts.run_dir(cfg.artifacts, cfg.dataset, cfg.model)
        pixels = cli.pixel_range(cfg.input_range)
    else:
        run = artifacts.check_writable(models.run_of(cfg))
        pixels = models.input_range(run, cfg.input_range)
    spec = data.spec_of(cfg)
    targets = target_files(cfg, run)
    for folder in {path.parent for _, path in targets}:
        artifacts.check_writable(folder)  # eval_<name>.json goes beside each file
    if cfg.split not in SPLIT_PREFIX:
        raise TfqError(f"--split={cfg.split}: choose test or validation")
    if cfg.reference and not cfg.tflite:
        raise TfqError("--reference goes with --tflite; a run folder's modes are compared with its float32.tflite")
    cross = cross_dataset(cfg)
    if cross and cfg.split != "test":
        raise TfqError(f"--eval_dataset={cross} scores its test split; --split={cfg.split} does not go with it")
    classifiers = {
        name: harness.Classifier(
            path,
            threads=cfg.threads,
            batch_size=cfg.batch_size,
            input_shape=spec.shape,
            num_classes=spec.num_classes,
            input_range=pixels,
        )
        for name, path in targets
    }
    splits = (
        data.load(cross, root=cfg.data_root, cache=cfg.cache_dir, max_eval=cfg.max_eval_examples or None)
        if cross
        else data.load_of(cfg, max_eval=cfg.max_eval_examples or None)
    )
    images, labels = data.to_numpy(splits.test if cfg.split == "test" else splits.val)
    # float32 goes first when it is a target: its own pass then serves as the agreement reference.
    targets.sort(key=lambda t: t[0] != "float32")
    reference, reference_info = _reference(cfg, run, dict(targets), images, pixels)
    results, predictions = [], {}
    for name, path in console.progress(targets, f"evaluating {run.name}"):
        clf = classifiers[name]
        delegation = clf.delegation()
        processes = 1 if delegation["xnnpack"] else (cfg.processes or litert.cores())
        t0 = time.perf_counter()
        x = clf.prepare(images)
        t1 = time.perf_counter()
        raw = clf.invoke_prepared(x, processes)
        t2 = time.perf_counter()
        pred = harness.dequantize(raw, clf.output).argmax(1)
        t3 = time.perf_counter()
        predictions[name] = pred.astype(np.int16)
        is_reference = reference_info is not None and reference_info.get("file") == str(path)
        if reference is None and name == "float32" and not cfg.tflite:
            reference, reference_info, is_reference = pred, _describe_reference(path, "float32 flatbuffer"), True
        fb = clf.flatbuffer
        result = {
            "name": name,
            "file": str(path),
            "tflite_sha256": artifacts.sha256(path),
            "source_model_sha256": _source_model_digest(path),
            "dataset": cfg.dataset,
            "model": cfg.model,
            "eval_dataset": cross or cfg.dataset,
            **metrics(pred, labels, spec.num_classes, reference),
            "reference": reference_info,
            "vs_reference": None
            if reference is None or is_reference
            else stats.paired(reference == labels, pred == labels),
            "split": cfg.split,
            "examples": int(len(labels)),
            "size_bytes": fb.size_bytes,
            "weight_bytes": fb.weight_bytes,
            "throughput": {
                "batch_size": clf.batch_size,
                "processes": processes,
                "images_per_s": len(labels) / (t3 - t0),
                "harness_s": t3 - t0,
                "invoke_s": t2 - t1,
                "overhead_ratio": (t3 - t0) / max(t2 - t1, 1e-9),
            },
            "threads": cfg.threads,
            "cpu": harness.cpu_model(),
            **delegation,
            "activation_dtypes": sorted(fb.dtypes("activations")),
            "input_range": list(pixels),
            "data_source": splits.source.to_json(),
        }
        if clf.input["dtype"] == np.float32:  # a float file near chance: most often the wrong pixel range
            imported.warn_if_chance(
                result["accuracy"], spec.num_classes, pixels, f"{path.name} on {result['eval_dataset']}"
            )
        if cfg.compare_naive:
            t0 = time.perf_counter()
            naive = harness.naive_predictions(path, images, pixels)
            naive_s = time.perf_counter() - t0
            result["naive_loop"] = {
                "seconds": naive_s,
                "accuracy": float((naive == labels).mean()),
                "speedup": naive_s / result["throughput"]["harness_s"],
            }
        results.append(result)
    # latency does not depend on the images: measured with the run's own test split, not again here
    latency = (
        None
        if cross
        else harness.interleaved_latency_us(classifiers, images[0], runs=cfg.latency_runs, rounds=cfg.latency_rounds)
    )
    for result in results:
        if latency:
            result["latency_us"] = latency[result["name"]]
            result["latency_us"]["measured_with"] = sorted(latency)  # the models that took turns with it
        stem = result_stem(Path(result["file"]), result["name"], cfg.split, cross)
        with artifacts.atomic_paths(stem.with_suffix(".npy"), stem.with_suffix(".json")) as (npy_tmp, json_tmp):
            with open(npy_tmp, "wb") as f:  # np.save on a path would append ".npy" to the temporary name
                np.save(f, predictions[result["name"]])
            result["predictions"] = {"file": stem.with_suffix(".npy").name, "sha256": artifacts.sha256(npy_tmp)}
            artifacts.write_json(json_tmp, result)
    return results


def saved_predictions(path: Path, examples: int, source: dict) -> np.ndarray | None:
    """The test-split classes `evaluate` saved for the .tflite at `path`, if they are for this very
    file (digest), the same data (`source`: official files or which JPEG copy) and all `examples`
    test images; None otherwise."""
    result = artifacts.read_json(path.parent / f"eval_{path.stem}.json", default=None) or {}
    saved = result.get("predictions") or {}
    npy = path.parent / saved.get("file", "-")
    if (
        result.get("tflite_sha256") != artifacts.sha256(path)
        or result.get("examples") != examples
        or result.get("split") != "test"
        or result.get("data_source") != json.loads(json.dumps(source, default=str))
        or cli.pixel_range(result.get("input_range")) != models.input_range(path.parent)
        or not npy.is_file()
        or artifacts.sha256(npy) != saved.get("sha256")
    ):
        return None
    return np.load(npy)


def cross_dataset(cfg: EvalConfig) -> str | None:
    """The other dataset of --eval_dataset, checked to share the run's classes and image shape."""
    if not cfg.eval_dataset or cfg.eval_dataset == cfg.dataset:
        return None
    own, other = data.get(cfg.dataset), data.get(cfg.eval_dataset)
    if (own.labels, own.shape) != (other.labels, other.shape):
        raise TfqError(
            f"--eval_dataset={other.name}: its classes or image shape ({other.shape}) are not "
            f"{own.name}'s ({own.shape}); a {own.name} model cannot be scored on it"
        )
    return other.name


def _describe_reference(path: Path, what: str) -> dict:
    return {"what": what, "file": str(path), "sha256": artifacts.sha256(path)}


def _source_model_digest(path: Path) -> str | None:
    """The trained model a flatbuffer was made from, as its manifest (`<name>.json`) records it."""
    manifest = artifacts.read_json(path.with_suffix(".json"), default=None)
    return (manifest or {}).get("source_model", {}).get("sha256")


def _reference(cfg: EvalConfig, run: Path, targets: dict, images, pixels) -> tuple:
    """Predictions agreement is measured against, and what they came from: with --tflite only
    --reference (else none); otherwise float32 (a target, which then serves itself, or the run
    folder's float32.tflite, else its Keras model)."""

    def from_tflite(path: Path, what: str) -> tuple:
        clf = harness.Classifier(path, threads=cfg.threads, batch_size=cfg.batch_size, input_range=pixels)
        return clf.predict(images).argmax(1), _describe_reference(path, what)

    if cfg.tflite:
        return from_tflite(Path(cfg.reference), "--reference flatbuffer") if cfg.reference else (None, None)
    if "float32" in targets:
        return None, None  # its own pass fills these in
    if (run / "float32.tflite").is_file():
        return from_tflite(run / "float32.tflite", "float32 flatbuffer")
    if (run / artifacts.MODEL_FILE).is_file():
        pred = models.predict_classes(models.load_trained(run), data.scale(images, pixels).numpy())
        return pred, _describe_reference(run / artifacts.MODEL_FILE, "Keras float model")
    return None, None


FLAGS = flags.FLAGS


def _define_flags() -> None:
    cli.define_flags(EvalConfig)


def main(argv):
    del argv
    results = evaluate(cli.config_from_flags(EvalConfig, modes="mode"))
    for r in results:
        agree = f"{r['agreement']:.4f}" if r["agreement"] is not None else "-"
        p50 = f"p50 {r['latency_us']['p50']:8.1f} us  " if "latency_us" in r else ""
        line = (
            f"{r['name']:18s} acc {r['accuracy']:.4f}  agree {agree}  {r['size_bytes']:>9,d} B  "
            f"{p50}{r['examples']} images of {r['eval_dataset']} in "
            f"{r['throughput']['harness_s']:.3f} s"
        )
        if "naive_loop" in r:
            line += f"  (image-by-image loop {r['naive_loop']['seconds']:.2f} s)"
        print(line)


if __name__ == "__main__":
    cli.run(main, _define_flags)
