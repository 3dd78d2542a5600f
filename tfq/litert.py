"""LiteRT interpreter plumbing for the harness: build, batch, invoke, and split across processes.

Models that XNNPACK does not take (16x8 above all) run on LiteRT's reference integer kernels,
which use one core whatever `num_threads` says: 10,000 CIFAR-10 images took 117 s at 16x8 against
1.3 s at int8. Their accuracy pass is split over worker processes, one contiguous slice each, so
all cores work; the outputs are the same numbers in the same order.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from tfq.artifacts import TfqError


def make_interpreter(content: bytes, *, threads: int = 1, xnnpack: bool = True,
                     label: str = "model bytes") -> Interpreter:
    resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        interpreter = Interpreter(model_content=content, num_threads=threads,
                                  experimental_op_resolver_type=resolver)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise TfqError(f"{label}: LiteRT cannot load it ({str(e).splitlines()[0][:200]})") from None
    return interpreter


def batched_interpreter(content: bytes, batch_size: int, *, threads: int = 1, xnnpack: bool = True,
                        label: str = "model bytes") -> Interpreter:
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
        chunk = x[start:start + b]
        if len(chunk) < b:
            chunk = np.concatenate([chunk, np.zeros((b - len(chunk), *chunk.shape[1:]), chunk.dtype)])
        set_input(inp["index"], chunk)
        invoke()
        out[start:start + b] = get_output(outp["index"])[: n - start]
    return out


def _worker(content: bytes, xnnpack: bool, batch_size: int, x: np.ndarray) -> np.ndarray:
    return run_batches(batched_interpreter(content, batch_size, xnnpack=xnnpack), x)


def run_in_processes(content: bytes, x: np.ndarray, *, processes: int, batch_size: int,
                     xnnpack: bool = True) -> np.ndarray:
    """`run_batches` over `processes` fresh interpreters in spawned workers, one slice each."""
    slices = [s for s in np.array_split(x, processes) if len(s)]
    # spawn, not fork: the parent has TensorFlow's thread pools running, and a forked child
    # inherits their locks in whatever state they were.
    with ProcessPoolExecutor(len(slices), mp_context=multiprocessing.get_context("spawn")) as pool:
        parts = list(pool.map(_worker, *zip(*[(content, xnnpack, batch_size, s) for s in slices])))
    return np.concatenate(parts)


def cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1
