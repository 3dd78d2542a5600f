"""Every flatbuffer of a run under TFLite Micro: `python -m tfq.micro --dataset=mnist --model=cnn`.

Expected (MNIST CNN, int8): it runs, with a 56,992-byte tensor arena, and gives the class LiteRT
gives on all but 2 of the 10,000 test images (XNNPACK rounds differently); the float16,
dynamic-range, weight-only and int4-fully-connected files do not run, each reported with the op
that TFLite Micro rejects.

For each file: the smallest tensor arena in which it both allocates and runs a real test image (the
recording allocator's total as the first guess, then real loads and invokes in child processes
decide: see `tflm.smallest_arena`), the ops it uses, then the test split (or its
first `--max_examples` images) image by image through TFLite Micro's reference kernels with that
arena: accuracy, and agreement with LiteRT on the same images from the same file (a paired test of
the two accuracies beside it). Flash is the flatbuffer's bytes, RAM its arena; `PARTS` says which
common microcontroller sizes each fits. Writes `<run>/micro.json`.

Host seconds per image are TFLite Micro's reference kernels on this CPU, not a microcontroller's
latency. The arena is what the model needs; an app adds its own stack and buffers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import time
from pathlib import Path

import numpy as np
from absl import flags

from tfq import data, evaluate, models
from tfq.core import artifacts, cli, console, stats
from tfq.core.artifacts import TfqError
from tfq.runtimes import flatbuffer, harness, litert, tflm

MICRO_JSON = "micro.json"
AS_WRITTEN_EXAMPLES = 200  # enough to tell a file TFLite Micro misreads (about 10% agreement) from one it reads


@dataclasses.dataclass(frozen=True)
class Part:
    name: str
    memory: str  # "flash" (the flatbuffer) or "ram" (the tensor arena)
    bytes: int


KB = 1024
PARTS = (
    Part("256 KB flash", "flash", 256 * KB),
    Part("1 MB flash", "flash", 1024 * KB),
    Part("64 KB RAM", "ram", 64 * KB),
    Part("256 KB RAM", "ram", 256 * KB),
)
"""Common microcontroller sizes (e.g. Cortex-M4 parts with 256 KB or 1 MB of flash, 64 or 256 KB of RAM)."""


@dataclasses.dataclass
class MicroConfig(cli.Run):
    modes: tuple[str, ...] = cli.setting(
        ("all",), "File stems of the run folder to run (int8, qat_int8, ...), or all.", flag="mode"
    )
    max_examples: int = cli.setting(0, "Run only the first N test images (0: the whole test split).")
    output: str = cli.setting(
        MICRO_JSON, "Result file name in the run folder (benchmarks/micro_full.sh: micro_full.json)."
    )
    processes: int = cli.setting(0, "Worker processes, each with its own interpreter (0: one per core).")


def fits(size_bytes: int, arena_bytes: int | None) -> dict[str, bool | None]:
    """Which of `PARTS` a model fits: its flatbuffer in flash, its arena in RAM."""
    used = {"flash": size_bytes, "ram": arena_bytes}
    return {p.name: None if used[p.memory] is None else used[p.memory] <= p.bytes for p in PARTS}


def tensor_types(fb: flatbuffer.Flatbuffer, index: int) -> str:
    """`op 9: int8 input, int4 weights`: what the op at `index` was handed."""
    op = fb.ops[index]
    ins = [fb.tensors[i] for i in op.inputs if i >= 0]
    acts = sorted({t.dtype for t in ins if not t.constant})
    consts = sorted({t.dtype for t in ins if t.constant and int(np.prod(t.shape or (1,))) > 8})
    return ", ".join(
        [*([f"{'/'.join(acts)} input"] if acts else []), *([f"{'/'.join(consts)} weights"] if consts else [])]
    )


def probe(blob: bytes, fb: flatbuffer.Flatbuffer, example: np.ndarray | None = None) -> dict:
    """Whether TFLite Micro loads the file (and, given one prepared image, runs it), and if so its
    smallest arena; if not, the op and why."""
    try:
        arena, account = tflm.smallest_arena(blob, example)
    except tflm.MicroError as e:
        return _cannot(e, fb)
    return {"runs": True, "arena_bytes": arena, "recorded_arena": account}


def _cannot(e: tflm.MicroError, fb: flatbuffer.Flatbuffer) -> dict:
    op = e.op or (re.search(r"TFLite Micro's (\w+) kernel", str(e)) or [None, None])[1]
    where = f" ({tensor_types(fb, e.index)})" if e.index is not None and e.index < len(fb.ops) else ""
    return {"runs": False, "unsupported_op": op, "error": f"{e}{where}"}


def run_images(
    blob: bytes,
    fb: flatbuffer.Flatbuffer,
    images: np.ndarray,
    labels: np.ndarray,
    processes: int,
    litert_predictions: np.ndarray | None,
    input_range=None,
) -> tuple[dict, np.ndarray | None]:
    """Probe the bytes, then (if they run) the images through TFLite Micro with the smallest arena:
    accuracy, and agreement with LiteRT's classes (`litert_predictions`, or LiteRT run here on
    these very bytes). Returns the result and LiteRT's classes."""
    clf = harness.Classifier(blob, label="model bytes", input_range=input_range)
    x = clf.prepare(images)
    found = probe(blob, fb, x[:1])
    if not found["runs"]:
        return found, litert_predictions
    started = time.perf_counter()
    try:
        raw = tflm.run_in_processes(blob, found["arena_bytes"], x, processes)
    except tflm.MicroError as e:
        return _cannot(e, fb), litert_predictions
    seconds = time.perf_counter() - started
    pred = raw.argmax(1)  # a positive output scale keeps the order of the scores
    reference = "saved by evaluate for this file (eval_<name>.npy)"
    if litert_predictions is None:
        delegation = clf.delegation()
        litert_predictions = harness.dequantize(
            clf.invoke_prepared(x, 1 if delegation["xnnpack"] else litert.cores()), clf.output
        ).argmax(1)
        reference = f"LiteRT run here on the same bytes (sha256 {hashlib.sha256(blob).hexdigest()[:16]})"
    return {
        **found,
        "examples": int(len(labels)),
        "accuracy": float((pred == labels).mean()),
        "litert_accuracy": float((litert_predictions == labels).mean()),
        "litert_reference": reference,
        "agreement_with_litert": float((pred == litert_predictions).mean()),
        "disagreements": int((pred != litert_predictions).sum()),
        "vs_litert": stats.paired(litert_predictions == labels, pred == labels),
        "host_ms_per_image": 1000 * seconds * processes / len(labels),
    }, litert_predictions


def measure(
    name: str,
    path: Path,
    images: np.ndarray,
    labels: np.ndarray,
    processes: int,
    litert_predictions: np.ndarray | None,
    input_range=None,
) -> dict:
    """One file under TFLite Micro. A file with weights at `Buffer.offset` (ai-edge-quantizer's)
    is first run as written on `AS_WRITTEN_EXAMPLES` images, then measured with its buffers moved
    inline (`flatbuffer.inline_buffers`), the bytes an app would flash, against LiteRT run on those
    same inlined bytes (which must give the saved classes of the file as written, if there are any)."""
    blob = path.read_bytes()
    fb = flatbuffer.read(blob, label=str(path))
    entry = {
        "name": name,
        "file": str(path),
        "tflite_sha256": artifacts.sha256(path),
        "size_bytes": fb.size_bytes,
        "ops": fb.op_counts(),
        "activation_dtypes": sorted(fb.dtypes("activations")),
        "weight_dtypes": sorted(fb.dtypes("weights")),
    }
    if fb.offset_buffers:
        k = min(AS_WRITTEN_EXAMPLES, len(labels))
        entry["as_written"], _ = run_images(
            blob,
            fb,
            images[:k],
            labels[:k],
            processes,
            None if litert_predictions is None else litert_predictions[:k],
            input_range,
        )
        saved, moved = litert_predictions, fb.offset_buffers
        blob = flatbuffer.inline_buffers(blob, label=str(path))
        fb = flatbuffer.read(blob, label=f"{path}, buffers inlined")
        entry["buffers_inlined"] = {"offset_buffers": moved, "sha256": hashlib.sha256(blob).hexdigest()}
        result, inlined = run_images(blob, fb, images, labels, processes, None, input_range)
        entry["buffers_inlined"]["litert_same_classes_as_saved"] = (
            None if saved is None or inlined is None else bool(np.array_equal(saved, inlined))
        )
    else:
        result, _ = run_images(blob, fb, images, labels, processes, litert_predictions, input_range)
    entry.update(result)
    entry["flash_bytes"] = len(blob)
    entry["fits"] = fits(len(blob), entry.get("arena_bytes"))
    return entry


def _litert_predictions(path: Path, examples: int, full: int, source: dict) -> np.ndarray | None:
    """LiteRT's classes for the first `examples` test images from `evaluate`'s saved pass over the
    whole test split of this very file, if there is one."""
    saved = evaluate.saved_predictions(path, full, source)
    return None if saved is None else saved[:examples].astype(np.int64)


def micro(cfg: MicroConfig, report_unsupported: bool = False) -> dict:
    """Measure the chosen files of a run under TFLite Micro; writes and returns `<run>/micro.json`.
    A named mode that TFLite Micro cannot run is an error; with `all` (or `report_unsupported`,
    as the pipeline asks) it is reported with the op it lacks."""
    data.get(cfg.dataset, cfg.image_size)  # a known dataset; its run's shape once the run (or an import) is there
    models.check(cfg)
    cli.check_at_least(cfg, 0, "max_examples", "processes")
    if Path(cfg.output).name != cfg.output or not cfg.output.endswith(".json"):
        raise TfqError(f"--output={cfg.output}: a .json file name (it goes in the run folder)")
    run = artifacts.check_writable(models.run_of(cfg))
    spec = data.spec_of(cfg)
    pixels = models.input_range(run, cfg.input_range)
    targets = evaluate.target_files(evaluate.EvalConfig(dataset=cfg.dataset, model=cfg.model, modes=cfg.modes), run)
    named = "all" not in cfg.modes and not report_unsupported
    if named:  # before reading any data: what fails to load (what fails to run is caught below)
        for _, path in targets:
            blob = path.read_bytes()
            found = probe(blob, flatbuffer.read(blob, label=str(path)))
            if not found["runs"]:
                raise TfqError(f"{path}: TFLite Micro cannot run it: {found['error']}")
    splits = data.load_of(cfg)
    images, labels = data.to_numpy(splits.test)
    full = len(labels)
    examples = min(cfg.max_examples or full, full)
    images, labels = images[:examples], labels[:examples]
    processes = cfg.processes or litert.cores()
    source = splits.source.to_json()
    variants, seen = [], {}
    for name, path in console.progress(
        targets, f"TFLite Micro {artifacts.run_dir(cfg.artifacts, cfg.dataset, cfg.model).name}"
    ):
        digest = artifacts.sha256(path)
        if digest in seen:  # the same bytes give the same answers: measured once
            variants.append({**seen[digest], "name": name, "file": str(path), "same_bytes_as": seen[digest]["name"]})
            continue
        entry = measure(
            name, path, images, labels, processes, _litert_predictions(path, examples, full, source), pixels
        )
        seen[digest] = entry
        variants.append(entry)
    result = {
        "dataset": cfg.dataset,
        "model": cfg.model,
        "examples": examples,
        "input_range": list(pixels),
        "test_examples": full,
        "num_classes": spec.num_classes,
        "processes": processes,
        "data_source": source,
        "parts": [dataclasses.asdict(p) for p in PARTS],
        "runtime": _runtime_version(),
        "cpu": harness.cpu_model(),
        "variants": variants,
    }
    if named:
        failed = [v for v in variants if not v["runs"]]
        if failed:
            raise TfqError(f"{failed[0]['file']}: TFLite Micro cannot run it: {failed[0]['error']}")
    artifacts.write_json(run / cfg.output, result)
    return result


def _runtime_version() -> str:
    from importlib.metadata import version

    return f"tflite-micro {version('tflite-micro')}"


def headline(result: dict) -> str:
    """The pipeline's one line for this stage: how many files ran, int8's arena and agreement."""
    runs = [v for v in result["variants"] if v["runs"]]
    int8 = next((v for v in runs if v["name"] == "int8"), None)
    return f"{len(runs)}/{len(result['variants'])} run" + (
        f"; int8: {int8['arena_bytes']:,d}-byte arena, {100 * int8['agreement_with_litert']:.2f}% agreement "
        f"with LiteRT on {int8['examples']:,d} images"
        if int8
        else ""
    )


FLAGS = flags.FLAGS


def _define_flags() -> None:
    cli.define_flags(MicroConfig)


def _mark(ok) -> str:
    return "-" if ok is None else ("yes" if ok else "no")


def main(argv):
    del argv
    result = micro(cli.config_from_flags(MicroConfig, modes="mode"))
    print(f"TFLite Micro, {result['examples']:,d} test images of {result['dataset']} ({result['runtime']})")
    print(
        f"{'file':22s} {'flash B':>10s} {'arena B':>9s} {'accuracy':>9s} {'agree':>8s}  "
        + "  ".join(p.name for p in PARTS)
    )
    for v in result["variants"]:
        if v["runs"]:
            print(
                f"{v['name']:22s} {v['flash_bytes']:10,d} {v['arena_bytes']:9,d} {100 * v['accuracy']:8.2f}% "
                f"{100 * v['agreement_with_litert']:7.2f}%  "
                + "  ".join(f"{_mark(v['fits'][p.name]):>{len(p.name)}s}" for p in PARTS)
            )
        else:
            print(f"{v['name']:22s} {v['flash_bytes']:10,d}  does not run: {v['error']}")


if __name__ == "__main__":
    cli.run(main, _define_flags)
