"""The LiteRT harness: run any classifier .tflite on images the way a device app would.

Inputs are scaled exactly as in training (`data.scale`), then quantized with the model's own
input scale and zero point when the model takes int8, uint8 or int16; outputs are dequantized
with the output's. The test set goes through in fixed-size batches (`resize_tensor_input`) when
the graph allows it, one image at a time otherwise.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
from absl import flags
from ai_edge_litert.interpreter import Interpreter

from tfq import artifacts, cli, console, data, flatbuffer, litert, models, modes, stats
from tfq.artifacts import TfqError

_INT_TYPES = {np.dtype(np.int8), np.dtype(np.uint8), np.dtype(np.int16)}


def quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    """Float input -> the model's input dtype, with its scale and zero point."""
    dtype = np.dtype(detail["dtype"])
    if dtype not in _INT_TYPES:
        return x.astype(dtype, copy=False)
    scale, zero_point = detail["quantization"]
    if not scale:
        raise TfqError(f"input {detail['name']!r} is {dtype} but has no quantization scale")
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, detail: dict) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    if dtype not in _INT_TYPES:
        return q.astype(np.float32, copy=False)
    scale, zero_point = detail["quantization"]
    return (q.astype(np.float32) - zero_point) * scale


class Classifier:
    """One .tflite image classifier in a LiteRT interpreter."""

    def __init__(self, model: str | os.PathLike | bytes, *, threads: int = 1, batch_size: int = 256,
                 input_shape: tuple[int, ...] | None = None, num_classes: int | None = None,
                 xnnpack: bool = True, label: str | None = None):
        content = model if isinstance(model, (bytes, bytearray)) else _read(model)
        self.label = label or ("model bytes" if isinstance(model, (bytes, bytearray)) else str(model))
        self.flatbuffer = flatbuffer.read(content, label=self.label)
        self.content, self.threads = bytes(content), threads
        self.xnnpack = xnnpack
        with console.quiet():  # LiteRT's "INFO: Created TensorFlow Lite XNNPACK delegate"
            try:
                self.interpreter = litert.batched_interpreter(self.content, batch_size, threads=threads,
                                                              xnnpack=xnnpack, label=self.label)
            except litert.LiteRTError as e:
                raise TfqError(str(e)) from None
        inputs, outputs = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise TfqError(f"{self.label} is not an image classifier: it has {len(inputs)} inputs "
                           f"and {len(outputs)} outputs (expected one image in, one score vector out)")
        self.input, self.output = inputs[0], outputs[0]
        shape = tuple(int(d) for d in self.input["shape"])
        if len(shape) != 4 or len(self.output["shape"]) != 2:
            raise TfqError(f"{self.label} is not an image classifier: input shape {list(shape)}, "
                           f"output shape {list(self.output['shape'])}")
        if input_shape is not None and shape[1:] != tuple(input_shape):
            raise TfqError(f"{self.label} takes images of shape {list(shape[1:])}, "
                           f"but the dataset's are {list(input_shape)}")
        if num_classes is not None and int(self.output["shape"][-1]) != num_classes:
            raise TfqError(f"{self.label} outputs {int(self.output['shape'][-1])} scores, "
                           f"but the dataset has {num_classes} classes")
        self.image_shape = shape[1:]
        self.batch_size = shape[0]
        # Every uint8 pixel has one scaled-and-quantized value: a 256-entry table makes `prepare`
        # one indexing pass instead of a float round trip over the whole test set.
        self._pixel_table = quantize(data.scale(np.arange(256, dtype=np.uint8)).numpy(), self.input)

    def prepare(self, images: np.ndarray) -> np.ndarray:
        """uint8 images -> the model's input tensor values (scaled, then quantized if it is integer)."""
        if images.dtype != np.uint8:
            raise TfqError(f"expected uint8 images, got {images.dtype}")
        return self._pixel_table[images]

    def invoke_prepared(self, x: np.ndarray, processes: int = 1) -> np.ndarray:
        """Raw outputs for already prepared inputs, in batches of `batch_size` (last one padded);
        with `processes` > 1, split over that many worker processes (see `tfq.litert`)."""
        if processes > 1 and len(x) > self.batch_size:
            try:
                return litert.run_in_processes(self.content, x, processes=processes,
                                               batch_size=self.batch_size, xnnpack=self.xnnpack)
            except litert.LiteRTError as e:
                raise TfqError(f"{self.label}: {e}") from None
        return litert.run_batches(self.interpreter, x)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Class scores (dequantized) for uint8 images."""
        return dequantize(self.invoke_prepared(self.prepare(images)), self.output)

    def delegation(self) -> dict:
        """Which ops XNNPACK took and which ran as plain LiteRT kernels outside it."""
        nodes = self.interpreter._get_ops_details()  # noqa: SLF001 - the only view of the execution plan
        delegates = [n for n in nodes if n["op_name"] == "DELEGATE"]
        provided = {int(t) for n in delegates for t in n["outputs"]}
        needed = {int(d["index"]) for d in self.interpreter.get_output_details()}
        needed |= {int(t) for n in delegates for t in n["inputs"]}
        outside: list[dict] = []
        changed = True
        while changed:  # walk back from what the delegates and the graph outputs need
            changed = False
            for n in nodes:
                if n["op_name"] == "DELEGATE" or n in outside:
                    continue
                if any(int(t) in needed and int(t) not in provided for t in n["outputs"]):
                    outside.append(n)
                    needed |= {int(t) for t in n["inputs"] if t >= 0}
                    changed = True
        return {"xnnpack": bool(delegates), "delegate_partitions": len(delegates),
                "ops_outside_delegate": sorted(n["op_name"] for n in outside),
                "fully_delegated": bool(delegates) and not outside}


def interleaved_latency_us(classifiers: dict[str, Classifier], image: np.ndarray, *, runs: int = 200,
                           rounds: int = 5, warmup: int = 20) -> dict[str, dict]:
    """Batch-1 latency of invoke() alone for several models, measured round-robin.

    One p50 per model from one pass is at the mercy of whatever else the machine does in that
    second (a 27% "slowdown" vanished on a rerun). Here every model gets `runs / rounds` timed
    invokes per round, the models take turns (in a rotated order each round), and each model's
    result is the median of its per-round p50s with their spread, so a passing slowdown hits
    every model alike or shows up as spread. Each model runs on a fresh batch-1 interpreter.
    """
    singles = {}
    for name, clf in classifiers.items():
        single = Classifier(clf.content, threads=clf.threads, batch_size=1, xnnpack=clf.xnnpack, label=clf.label)
        single.interpreter.set_tensor(single.input["index"], single.prepare(image[None, ...]))
        for _ in range(warmup):
            single.interpreter.invoke()
        singles[name] = single
    per_round = max(1, runs // rounds)
    times = {name: np.empty((rounds, per_round)) for name in singles}
    names = list(singles)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            invoke, row = singles[name].interpreter.invoke, times[name][r]
            for i in range(per_round):
                t0 = time.perf_counter_ns()
                invoke()
                row[i] = (time.perf_counter_ns() - t0) / 1000
    out = {}
    for name, t in times.items():
        round_p50 = np.percentile(t, 50, axis=1)
        out[name] = {"p50": float(np.median(round_p50)), "round_p50": [float(v) for v in round_p50],
                     "spread": [float(round_p50.min()), float(round_p50.max())],
                     "p90": float(np.percentile(t, 90)), "p99": float(np.percentile(t, 99)),
                     "mean": float(t.mean()), "runs": int(t.size), "rounds": rounds, "warmup": warmup}
    return out


def naive_input(images: np.ndarray, inp: dict) -> np.ndarray:
    """The tutorials' input quantization: scale to [0, 1], then round and clip to the input dtype."""
    x = images.astype(np.float32) / 255.0
    if inp["dtype"] != np.float32:
        scale, zero_point = inp["quantization"]
        info = np.iinfo(inp["dtype"])
        x = np.clip(np.round(x / scale + zero_point), info.min, info.max)  # round, never truncate
    return x.astype(inp["dtype"])


def naive_predictions(model: str | os.PathLike, images: np.ndarray) -> np.ndarray:
    """The TensorFlow tutorials' loop: one image at a time, quantizing each by hand (rounded and
    clipped, as the converter's own quantize op does). A yardstick written apart from `quantize`."""
    with console.quiet():
        interpreter = Interpreter(model_path=str(model))
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    preds = []
    for image in images:
        interpreter.set_tensor(inp["index"], naive_input(image[None, ...], inp))
        interpreter.invoke()
        preds.append(int(np.argmax(interpreter.get_tensor(out["index"])[0])))
    return np.array(preds)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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
class EvalConfig:
    dataset: str = "mnist"
    model: str = "cnn"
    modes: tuple[str, ...] = ("int8",)
    tflite: str | None = None
    reference: str | None = None  # with --tflite: the .tflite whose predictions agreement is against
    artifacts: str = "artifacts"
    threads: int = 1
    processes: int = 0  # 0: every core; only for models XNNPACK does not take (see tfq.litert)
    batch_size: int = 256
    latency_runs: int = 200
    latency_rounds: int = 5
    split: str = "test"  # "validation": for choosing settings (calibration count, ...), never the test split
    max_eval_examples: int = 0
    compare_naive: bool = False
    eval_dataset: str | None = None  # score on this dataset's test split (same classes and image shape)
    data_root: str | None = None
    cache_dir: str | None = None


def target_files(cfg: EvalConfig, run: Path) -> list[tuple[str, Path]]:
    """(name, .tflite path) pairs to evaluate: the modes' files, or one --tflite file."""
    if cfg.tflite:
        return [(Path(cfg.tflite).stem, Path(cfg.tflite))]
    names = list(cfg.modes)
    if "all" in names:
        names = sorted(p.stem for p in run.glob("*.tflite")) if run.is_dir() else []
        if not names:
            raise TfqError(f"no .tflite files in {run}; make them with: python -m tfq.convert "
                           f"--dataset={cfg.dataset} --model={cfg.model} --mode=all")
    out = []
    for name in names:
        path = run / f"{name}.tflite"
        if not path.is_file():
            if not name.startswith(tuple(modes.KNOWN)):
                raise TfqError(f"unknown mode {name!r}; choose one of: {', '.join(modes.KNOWN)}, all")
            maker = "qat" if name == "qat_int8" else f"convert --mode={name}"
            raise TfqError(f"no {path}; make it with: python -m tfq.{maker} --dataset={cfg.dataset} "
                           f"--model={cfg.model}")
        out.append((name, path))
    return out


def evaluate(cfg: EvalConfig) -> list[dict]:
    """Evaluate each target on the test split; writes eval_<name>.json beside each file."""
    spec = data.get(cfg.dataset)
    models.get(cfg.model)
    cli.check_at_least(cfg, 1, "threads", "batch_size", "latency_runs", "latency_rounds")
    cli.check_at_least(cfg, 0, "processes", "max_eval_examples")
    run = artifacts.run_dir(cfg.artifacts, cfg.dataset, cfg.model)
    if not cfg.tflite:
        artifacts.check_writable(run)
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
    classifiers = {name: Classifier(path, threads=cfg.threads, batch_size=cfg.batch_size,
                                    input_shape=spec.shape, num_classes=spec.num_classes)
                   for name, path in targets}
    splits = data.load(cross or cfg.dataset, root=cfg.data_root, cache=cfg.cache_dir,
                       max_eval=cfg.max_eval_examples or None)
    images, labels = data.to_numpy(splits.test if cfg.split == "test" else splits.val)
    # float32 goes first when it is a target: its own pass then serves as the agreement reference.
    targets.sort(key=lambda t: t[0] != "float32")
    reference, reference_info = _reference(cfg, run, dict(targets), images)
    results, predictions = [], {}
    for name, path in targets:
        clf = classifiers[name]
        delegation = clf.delegation()
        processes = 1 if delegation["xnnpack"] else (cfg.processes or litert.cores())
        t0 = time.perf_counter()
        x = clf.prepare(images)
        t1 = time.perf_counter()
        raw = clf.invoke_prepared(x, processes)
        t2 = time.perf_counter()
        pred = dequantize(raw, clf.output).argmax(1)
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
            "vs_reference": None if reference is None or is_reference else stats.paired(reference == labels,
                                                                                       pred == labels),
            "split": cfg.split,
            "examples": int(len(labels)),
            "size_bytes": fb.size_bytes,
            "weight_bytes": fb.weight_bytes,
            "throughput": {"batch_size": clf.batch_size, "processes": processes, "images_per_s": len(labels) / (t3 - t0),
                           "harness_s": t3 - t0, "invoke_s": t2 - t1,
                           "overhead_ratio": (t3 - t0) / max(t2 - t1, 1e-9)},
            "threads": cfg.threads,
            "cpu": cpu_model(),
            **delegation,
            "activation_dtypes": sorted(fb.dtypes("activations")),
            "data_source": splits.source.to_json(),
        }
        if cfg.compare_naive:
            t0 = time.perf_counter()
            naive = naive_predictions(path, images)
            naive_s = time.perf_counter() - t0
            result["naive_loop"] = {"seconds": naive_s, "accuracy": float((naive == labels).mean()),
                                    "speedup": naive_s / result["throughput"]["harness_s"]}
        results.append(result)
    # latency does not depend on the images: measured with the run's own test split, not again here
    latency = None if cross else interleaved_latency_us(classifiers, images[0], runs=cfg.latency_runs,
                                                        rounds=cfg.latency_rounds)
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
    if (result.get("tflite_sha256") != artifacts.sha256(path) or result.get("examples") != examples
            or result.get("split") != "test" or result.get("data_source") != json.loads(json.dumps(source, default=str))
            or not npy.is_file() or artifacts.sha256(npy) != saved.get("sha256")):
        return None
    return np.load(npy)


def cross_dataset(cfg: EvalConfig) -> str | None:
    """The other dataset of --eval_dataset, checked to share the run's classes and image shape."""
    if not cfg.eval_dataset or cfg.eval_dataset == cfg.dataset:
        return None
    own, other = data.get(cfg.dataset), data.get(cfg.eval_dataset)
    if (own.labels, own.shape) != (other.labels, other.shape):
        raise TfqError(f"--eval_dataset={other.name}: its classes or image shape ({other.shape}) are not "
                       f"{own.name}'s ({own.shape}); a {own.name} model cannot be scored on it")
    return other.name


def _describe_reference(path: Path, what: str) -> dict:
    return {"what": what, "file": str(path), "sha256": artifacts.sha256(path)}


def _source_model_digest(path: Path) -> str | None:
    """The trained model a flatbuffer was made from, as its manifest (`<name>.json`) records it."""
    manifest = artifacts.read_json(path.with_suffix(".json"), default=None)
    return (manifest or {}).get("source_model", {}).get("sha256")


def _reference(cfg: EvalConfig, run: Path, targets: dict, images) -> tuple:
    """Predictions agreement is measured against, and what they came from: with --tflite only
    --reference (else none); otherwise float32 (a target, which then serves itself, or the run
    folder's float32.tflite, else its Keras model)."""
    def from_tflite(path: Path, what: str) -> tuple:
        clf = Classifier(path, threads=cfg.threads, batch_size=cfg.batch_size)
        return clf.predict(images).argmax(1), _describe_reference(path, what)

    if cfg.tflite:
        return from_tflite(Path(cfg.reference), "--reference flatbuffer") if cfg.reference else (None, None)
    if "float32" in targets:
        return None, None  # its own pass fills these in
    if (run / "float32.tflite").is_file():
        return from_tflite(run / "float32.tflite", "float32 flatbuffer")
    if (run / artifacts.MODEL_FILE).is_file():
        pred = models.predict_classes(models.load_trained(run), data.scale(images).numpy())
        return pred, _describe_reference(run / artifacts.MODEL_FILE, "Keras float model")
    return None, None


def _read(path: str | os.PathLike) -> bytes:
    try:
        return Path(path).read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        raise TfqError(f"{path} does not exist") from None


FLAGS = flags.FLAGS


def _define_flags() -> None:
    cli.define_common_flags()
    flags.DEFINE_list("mode", ["int8"], "Modes to evaluate (their <mode>.tflite), or all.")
    flags.DEFINE_string("tflite", None, "Evaluate this .tflite classifier instead of a mode's file.")
    flags.DEFINE_string("reference", None, "With --tflite: measure agreement (and the paired test) against this "
                        ".tflite's predictions; without it, no agreement is reported.")
    flags.DEFINE_integer("threads", 1, "Interpreter threads.")
    flags.DEFINE_integer("processes", 0, "Worker processes for the accuracy pass of models XNNPACK does not "
                         "take, e.g. 16x8 (0: one per core). XNNPACK models use one process.")
    flags.DEFINE_integer("batch_size", 256, "Batch for the accuracy pass (models with a dynamic batch).")
    flags.DEFINE_integer("latency_runs", 200, "Timed batch-1 invokes per model (after 20 warm-up runs).")
    flags.DEFINE_integer("latency_rounds", 5, "Rounds the models take turns in for latency (runs split evenly).")
    flags.DEFINE_integer("max_eval_examples", 0, "Use only this many test examples (0: all).")
    flags.DEFINE_enum("split", "test", list(SPLIT_PREFIX), "Score on the test split (eval_<mode>.json) or on the "
                      "validation split (val_<mode>.json), where settings are chosen.")
    flags.DEFINE_boolean("compare_naive", False, "Also time the tutorials' image-by-image loop.")
    flags.DEFINE_string("eval_dataset", None, "Score on this dataset's test split instead (same classes and "
                        "image shape, e.g. emnist_digits or usps for an MNIST run): xeval_<dataset>_<mode>.json; "
                        "no latency.")


def main(argv):
    del argv
    results = evaluate(cli.config_from_flags(EvalConfig, modes="mode"))
    for r in results:
        agree = f"{r['agreement']:.4f}" if r["agreement"] is not None else "-"
        p50 = f"p50 {r['latency_us']['p50']:8.1f} us  " if "latency_us" in r else ""
        line = (f"{r['name']:18s} acc {r['accuracy']:.4f}  agree {agree}  {r['size_bytes']:>9,d} B  "
                f"{p50}{r['examples']} images of {r['eval_dataset']} in "
                f"{r['throughput']['harness_s']:.3f} s")
        if "naive_loop" in r:
            line += f"  (image-by-image loop {r['naive_loop']['seconds']:.2f} s)"
        print(line)


if __name__ == "__main__":
    _define_flags()
    cli.run(main)
