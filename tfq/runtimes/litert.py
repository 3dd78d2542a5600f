"""LiteRT interpreter plumbing for the harness: build, batch, invoke, and split across processes.

Models that XNNPACK does not take (16x8 above all) run on LiteRT's reference integer kernels,
which use one core whatever `num_threads` says: 10,000 CIFAR-10 images took 113 s at 16x8 against
1.2 s at int8. Their accuracy pass is split over worker processes, one contiguous slice each, so
all cores work; the outputs are the same numbers in the same order.

This module imports only numpy and LiteRT, never the `tfq` package (which loads TensorFlow), so a
worker is this file run by path and starts in a tenth of a second instead of the 2-5 s a
multiprocessing child takes to re-import TensorFlow and the parent's main module.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType


class LiteRTError(RuntimeError):
    """LiteRT could not load or run a model."""


def make_interpreter(
    content: bytes, *, threads: int = 1, xnnpack: bool = True, label: str = "model bytes"
) -> Interpreter:
    resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        interpreter = Interpreter(model_content=content, num_threads=threads, experimental_op_resolver_type=resolver)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise LiteRTError(f"{label}: LiteRT cannot load it ({str(e).splitlines()[0][:200]})") from None
    return interpreter


def batched_interpreter(
    content: bytes, batch_size: int, *, threads: int = 1, xnnpack: bool = True, label: str = "model bytes"
) -> Interpreter:
    """An interpreter whose input takes `batch_size` images if the graph allows it (dynamic batch
    dimension); otherwise the graph's own batch."""
    interpreter = make_interpreter(content, threads=threads, xnnpack=xnnpack, label=label)
    detail = interpreter.get_input_details()[0]
    signature = detail.get("shape_signature", detail["shape"])
    if batch_size <= 1 or int(signature[0]) != -1:
        return interpreter
    try:
        interpreter.resize_tensor_input(detail["index"], [batch_size, *detail["shape"][1:]])
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError):
        return make_interpreter(content, threads=threads, xnnpack=xnnpack, label=label)
    return interpreter


def run_batches(interpreter: Interpreter, x: np.ndarray) -> np.ndarray:
    """Raw outputs for prepared inputs, in batches of the interpreter's input batch (last one padded)."""
    inp, outp = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    b, n = int(inp["shape"][0]), len(x)
    out = np.empty((n, int(outp["shape"][-1])), np.dtype(outp["dtype"]))
    set_input, invoke, get_output = interpreter.set_tensor, interpreter.invoke, interpreter.get_tensor
    for start in range(0, n, b):
        chunk = x[start : start + b]
        if len(chunk) < b:
            chunk = np.concatenate([chunk, np.zeros((b - len(chunk), *chunk.shape[1:]), chunk.dtype)])
        set_input(inp["index"], chunk)
        invoke()
        out[start : start + b] = get_output(outp["index"])[: n - start]
    return out


def run_in_processes(
    content: bytes, x: np.ndarray, *, processes: int, batch_size: int, xnnpack: bool = True
) -> np.ndarray:
    """`run_batches` over `processes` fresh interpreters in worker processes, one slice each."""
    return split_over_processes(
        __file__, content, x, processes, [str(batch_size), str(int(xnnpack))], "LiteRT", LiteRTError
    )


def split_over_processes(
    script: str, content: bytes, x: np.ndarray, processes: int, args: list[str], what: str, error: type[Exception]
) -> np.ndarray:
    """Run `python -P script model *args in.npy out.npy` on `processes` contiguous slices of `x` at
    once and join the outputs in order; `error` (naming `what`) if a worker fails."""
    slices = [s for s in np.array_split(x, processes) if len(s)]
    with tempfile.TemporaryDirectory(prefix="tfq-workers-") as tmp:
        model = Path(tmp) / "model.tflite"
        model.write_bytes(content)
        workers = []
        for i, part in enumerate(slices):
            np.save(Path(tmp) / f"in{i}.npy", part)
            workers.append(
                subprocess.Popen(
                    # -P: keep the script's folder off sys.path, so no tfq module can shadow a stdlib one
                    [
                        sys.executable,
                        "-P",
                        script,
                        str(model),
                        *args,
                        str(Path(tmp) / f"in{i}.npy"),
                        str(Path(tmp) / f"out{i}.npy"),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        try:
            for w in workers:
                _, err = w.communicate()
                if w.returncode:
                    lines = [line for line in err.splitlines() if line.strip()] or ["no message"]
                    raise error(f"a {what} worker process failed (exit {w.returncode}): {lines[-1][:200]}")
        finally:  # on failure, no worker outlives the folder it reads from
            for w in workers:
                if w.poll() is None:
                    w.kill()
                    w.wait()
        return np.concatenate([np.load(Path(tmp) / f"out{i}.npy") for i in range(len(slices))])


def cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _worker_main(model: str, batch_size: str, xnnpack: str, inputs: str, outputs: str) -> None:
    content = Path(model).read_bytes()
    interpreter = batched_interpreter(content, int(batch_size), xnnpack=xnnpack == "1")
    np.save(outputs, run_batches(interpreter, np.load(inputs)))


if __name__ == "__main__":
    _worker_main(*sys.argv[1:])
