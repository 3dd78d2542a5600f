"""The LiteRT harness: run any classifier .tflite on images the way a device app would.

Inputs are scaled exactly as in training (`data.scale`), then quantized with the model's own
input scale and zero point when the model takes int8, uint8 or int16; outputs are dequantized
with the output's. The test set goes through in fixed-size batches (`resize_tensor_input`) when
the graph allows it, one image at a time otherwise. Used by the evaluate stage and every stage that
scores a file.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from tfq import data
from tfq.core import cli, console
from tfq.core.artifacts import TfqError
from tfq.runtimes import flatbuffer, litert

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

    def __init__(
        self,
        model: str | os.PathLike | bytes,
        *,
        threads: int = 1,
        batch_size: int = 256,
        input_shape: tuple[int, ...] | None = None,
        num_classes: int | None = None,
        xnnpack: bool = True,
        label: str | None = None,
        input_range: tuple[float, float] | None = None,
    ):
        content = model if isinstance(model, (bytes, bytearray)) else _read(model)
        self.label = label or ("model bytes" if isinstance(model, (bytes, bytearray)) else str(model))
        self.flatbuffer = flatbuffer.read(content, label=self.label)
        self.content, self.threads = bytes(content), threads
        self.xnnpack = xnnpack
        with console.quiet():  # LiteRT's "INFO: Created TensorFlow Lite XNNPACK delegate"
            try:
                self.interpreter = litert.batched_interpreter(
                    self.content, batch_size, threads=threads, xnnpack=xnnpack, label=self.label
                )
            except litert.LiteRTError as e:
                raise TfqError(str(e)) from None
        inputs, outputs = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise TfqError(
                f"{self.label} is not an image classifier: it has {len(inputs)} inputs "
                f"and {len(outputs)} outputs (expected one image in, one score vector out)"
            )
        self.input, self.output = inputs[0], outputs[0]
        shape = tuple(int(d) for d in self.input["shape"])
        if len(shape) != 4 or len(self.output["shape"]) != 2:
            raise TfqError(
                f"{self.label} is not an image classifier: input shape {list(shape)}, "
                f"output shape {list(self.output['shape'])}"
            )
        if input_shape is not None and shape[1:] != tuple(input_shape):
            raise TfqError(
                f"{self.label} takes images of shape {list(shape[1:])}, but the dataset's are {list(input_shape)}"
            )
        if num_classes is not None and int(self.output["shape"][-1]) != num_classes:
            raise TfqError(
                f"{self.label} outputs {int(self.output['shape'][-1])} scores, "
                f"but the dataset has {num_classes} classes"
            )
        self.image_shape = shape[1:]
        self.batch_size = shape[0]
        # Every uint8 pixel has one scaled-and-quantized value: a 256-entry table makes `prepare`
        # one indexing pass instead of a float round trip over the whole test set.
        self.input_range = cli.pixel_range(input_range)
        self._pixel_table = quantize(data.scale(np.arange(256, dtype=np.uint8), self.input_range).numpy(), self.input)

    def prepare(self, images: np.ndarray) -> np.ndarray:
        """uint8 images -> the model's input tensor values (scaled, then quantized if it is integer)."""
        if images.dtype != np.uint8:
            raise TfqError(f"expected uint8 images, got {images.dtype}")
        return self._pixel_table[images]

    def invoke_prepared(self, x: np.ndarray, processes: int = 1) -> np.ndarray:
        """Raw outputs for already prepared inputs, in batches of `batch_size` (last one padded);
        with `processes` > 1, split over that many worker processes (see `tfq.runtimes.litert`)."""
        if processes > 1 and len(x) > self.batch_size:
            try:
                return litert.run_in_processes(
                    self.content, x, processes=processes, batch_size=self.batch_size, xnnpack=self.xnnpack
                )
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
        return {
            "xnnpack": bool(delegates),
            "delegate_partitions": len(delegates),
            "ops_outside_delegate": sorted(n["op_name"] for n in outside),
            "fully_delegated": bool(delegates) and not outside,
        }


def interleaved_latency_us(
    classifiers: dict[str, Classifier], image: np.ndarray, *, runs: int = 200, rounds: int = 5, warmup: int = 20
) -> dict[str, dict]:
    """Batch-1 latency of invoke() alone for several models, measured round-robin.

    One p50 per model from one pass is at the mercy of whatever else the machine does in that
    second (a 27% "slowdown" vanished on a rerun). Here every model gets `runs / rounds` timed
    invokes per round, the models take turns (in a rotated order each round), and each model's
    result is the median of its per-round p50s with their spread, so a passing slowdown hits
    every model alike or shows up as spread. Each model runs on a fresh batch-1 interpreter.
    """
    singles = {}
    for name, clf in classifiers.items():
        single = Classifier(
            clf.content,
            threads=clf.threads,
            batch_size=1,
            xnnpack=clf.xnnpack,
            label=clf.label,
            input_range=clf.input_range,
        )
        single.interpreter.set_tensor(single.input["index"], single.prepare(image[None, ...]))
        for _ in range(warmup):
            single.interpreter.invoke()
        singles[name] = single
    per_round = max(1, runs // rounds)
    times = {name: np.empty((rounds, per_round)) for name in singles}
    names = list(singles)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            invoke, row = singles[name].interpreter.invoke, times[name][r]
            for i in range(per_round):
                t0 = time.perf_counter_ns()
                invoke()
                row[i] = (time.perf_counter_ns() - t0) / 1000
    out = {}
    for name, t in times.items():
        round_p50 = np.percentile(t, 50, axis=1)
        out[name] = {
            "p50": float(np.median(round_p50)),
            "round_p50": [float(v) for v in round_p50],
            "spread": [float(round_p50.min()), float(round_p50.max())],
            "p90": float(np.percentile(t, 90)),
            "p99": float(np.percentile(t, 99)),
            "mean": float(t.mean()),
            "runs": int(t.size),
            "rounds": rounds,
            "warmup": warmup,
        }
    return out


def naive_input(images: np.ndarray, inp: dict, input_range=None) -> np.ndarray:
    """The tutorials' input quantization: scale to [LOW, HIGH] ([0, 1] by default), then round and clip
    to the input dtype."""
    lo, hi = cli.pixel_range(input_range)
    x = images.astype(np.float32) * (hi - lo) / 255.0 + lo
    if inp["dtype"] != np.float32:
        scale, zero_point = inp["quantization"]
        info = np.iinfo(inp["dtype"])
        x = np.clip(np.round(x / scale + zero_point), info.min, info.max)  # round, never truncate
    return x.astype(inp["dtype"])


def naive_predictions(model: str | os.PathLike, images: np.ndarray, input_range=None) -> np.ndarray:
    """The TensorFlow tutorials' loop: one image at a time, quantizing each by hand (rounded and
    clipped, as the converter's own quantize op does). A yardstick written apart from `quantize`."""
    with console.quiet():
        interpreter = Interpreter(model_path=str(model))
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    preds = []
    for image in images:
        interpreter.set_tensor(inp["index"], naive_input(image[None, ...], inp, input_range))
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


def _read(path: str | os.PathLike) -> bytes:
    try:
        return Path(path).read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        raise TfqError(f"{path} does not exist") from None
