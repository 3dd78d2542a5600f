"""TFLite Micro from Python (PyPI `tflite-micro`): load a flatbuffer into an arena, find the smallest
arena that works, run images, and name what it cannot run.

The Python package wraps the real `tflite::MicroInterpreter` with the reference kernels (no CMSIS-NN
or other optimized ones) and a recording allocator; it is the C++ an app links, minus the board.
It runs one image per `invoke` (batch 1, as on a microcontroller). TFLite Micro reports a failure on
its own log (file descriptors 1/2), not in the exception, so `build` captures that text and turns it
into one line: which op, at which index, and TFLite Micro's own check that failed.

Like `tfq.runtimes.litert`, this module imports only numpy and `tflite_micro`, so a worker process is this
file run by path and starts in a fraction of a second.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import tempfile

import numpy as np

ALIGN = 16  # TFLite Micro aligns every arena allocation to 16 bytes
GENEROUS_ARENA = 16 << 20  # more than any model here needs: a load that fails in it is not about arena


class MicroError(RuntimeError):
    """TFLite Micro cannot load or run a model. `kind`: "arena" (too small), "unsupported" (an op
    or type it lacks: `op` names it, `index` is its place in the graph) or "other"."""

    def __init__(self, message: str, kind: str = "other", op: str | None = None, index: int | None = None):
        super().__init__(message)
        self.kind, self.op, self.index = kind, op, index


@contextlib.contextmanager
def captured(log: list[str]):
    """Append what the block writes to file descriptors 1 and 2 (TFLite Micro's log) to `log`."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = (os.dup(1), os.dup(2))
    with tempfile.TemporaryFile() as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            yield log
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            f.seek(0)
            log.append(f.read().decode(errors="replace"))


_NODE = re.compile(r"Node (\w+) \(number (\d+)\) failed to (prepare|invoke)")
_MISSING = re.compile(r"Didn't find op for builtin opcode '(\w+)'|Failed to get registration from op code (\w+)")
_ARENA = re.compile(
    r"Failed to allocate|Failed to resize buffer|Arena size is too small|"
    r"Failed starting model allocation"
)


def reason(log: str) -> MicroError:
    """TFLite Micro's log of a failed load -> a MicroError that says why in one line."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    node = next((m for m in map(_NODE.search, lines) if m), None)
    if node:
        at = next(i for i, line in enumerate(lines) if _NODE.search(line))
        check = lines[at - 1] if at else ""
        check = re.sub(r"^\S+\.cc(:\d+)? ", "", check)  # drop the source path, keep the check
        return MicroError(
            f"TFLite Micro's {node[1]} kernel (op {node[2]}) fails to {node[3]}: {check}".rstrip(": "),
            "unsupported",
            node[1],
            int(node[2]),
        )
    missing = next((m for m in map(_MISSING.search, lines) if m), None)
    if missing:
        op = missing[1] or missing[2]
        return MicroError(f"TFLite Micro has no {op} kernel", "unsupported", op)
    if any(_ARENA.search(line) for line in lines):
        return MicroError("the tensor arena is too small", "arena")
    return MicroError(f"TFLite Micro cannot load it ({lines[-1][:200] if lines else 'no message'})", "other")


def build(blob: bytes, arena_size: int):
    """A `tflite_micro` interpreter with tensors allocated in an arena of `arena_size` bytes."""
    from tflite_micro.python.tflite_micro import runtime

    log: list[str] = []
    try:
        with captured(log):
            return runtime.Interpreter.from_bytes(blob, arena_size=int(arena_size))
    except (RuntimeError, ValueError):
        raise reason(log[0] if log else "") from None


def generous_arena(blob: bytes) -> int:
    return -(-max(GENEROUS_ARENA, 4 * len(blob)) // ALIGN) * ALIGN


def check(blob: bytes, arena_size: int, example: np.ndarray | None = None) -> dict:
    """Load the model in `arena_size` bytes in a child process and, given a prepared `example`
    (one image), invoke it once: kernels check some types only when they run. Returns the
    recording allocator's account of the arena; a MicroError (its reason read from TFLite
    Micro's log) if the load or the invoke fails or the child crashes."""
    code, log = _child(blob, arena_size, example)
    if code:
        e = reason(log)
        if e.kind == "other" and code < 0:
            raise MicroError(f"TFLite Micro crashed loading it (signal {-code})", "other")
        raise e
    return {part: int(n) for part, n in _RECORDED.findall(log)}


def smallest_arena(blob: bytes, example: np.ndarray | None = None) -> tuple[int, dict]:
    """The fewest bytes (to 16) of tensor arena in which the model loads and, given a prepared
    `example`, runs it (some kernels ask for scratch memory only at invoke), and the recording
    allocator's account of a generous load; a MicroError if it cannot run even in a generous arena
    (an op or type TFLite Micro lacks).

    The recording allocator's total is the first guess; real loads decide, searching up from it (it
    can fall short: 9,616 recorded, 10,336 needed for the MNIST MLP) or down, until one size loads
    and 16 bytes less does not. Every load runs in a child process: short of arena, some kernels
    crash the process rather than return an error (FULLY_CONNECTED segfaults at 5,000 bytes for the
    MNIST MLP). Below the generous size any failure counts as too small."""
    generous = generous_arena(blob)
    account = check(blob, generous, example)
    if "total" not in account:
        raise MicroError("TFLite Micro's recording allocator reported no arena total", "other")
    guess = min(-(-account["total"] // ALIGN) * ALIGN, generous)
    lo, hi, step = 0, generous, ALIGN  # lo fails (or is 0), hi loads
    probe = guess
    while probe < hi:  # up from the guess, doubling the step, to the first size that loads
        if runs_in_child(blob, probe, example):
            hi = probe
            break
        lo, probe, step = probe, probe + step, step * 2
    if lo == 0 and hi > ALIGN:
        if not runs_in_child(blob, hi - ALIGN, example):
            return hi, account  # the usual case: the guess loads and 16 bytes less does not
        hi -= ALIGN
    while hi - lo > ALIGN:
        mid = (lo + hi) // 2 // ALIGN * ALIGN
        lo, hi = (lo, mid) if runs_in_child(blob, mid, example) else (mid, hi)
    return hi, account


def runs_in_child(blob: bytes, arena_size: int, example: np.ndarray | None = None) -> bool:
    """Whether the model allocates in `arena_size` bytes (and runs `example`, if given), tried in a
    child process (which may crash)."""
    return _child(blob, arena_size, example)[0] == 0


def _child(blob: bytes, arena_size: int, example: np.ndarray | None = None) -> tuple[int, str]:
    """(exit code, TFLite Micro's log) of `python -P tflm.py load model arena [example.npy]`."""
    with tempfile.TemporaryDirectory(prefix="tfq-tflm-") as tmp:
        model = os.path.join(tmp, "model.tflite")
        with open(model, "wb") as f:
            f.write(blob)
        args = [sys.executable, "-P", __file__, "load", model, str(arena_size)]
        if example is not None:
            np.save(os.path.join(tmp, "example.npy"), example)
            args.append(os.path.join(tmp, "example.npy"))
        done = subprocess.run(args, capture_output=True, text=True, errors="replace", check=False)
    return done.returncode, done.stdout + done.stderr


_RECORDED = re.compile(r"Arena allocation (total|head|tail) (\d+) bytes")


def run(interpreter, x: np.ndarray) -> np.ndarray:
    """Raw outputs for prepared inputs (already in the model's input dtype), one invoke each."""
    detail = interpreter.get_output_details(0)
    out = np.empty((len(x), int(np.prod(detail["shape"][1:]))), detail["dtype"])
    set_input, invoke, get_output = interpreter.set_input, interpreter.invoke, interpreter.get_output
    for i in range(len(x)):
        set_input(x[i : i + 1], 0)
        invoke()
        out[i] = get_output(0).reshape(-1)
    return out


def run_in_processes(blob: bytes, arena_size: int, x: np.ndarray, processes: int) -> np.ndarray:
    """`run` over `processes` interpreters (each with `arena_size` bytes) in worker processes; a
    failure or crash there is a MicroError with TFLite Micro's reason, not the end of the caller."""
    from tfq.runtimes import litert

    return litert.split_over_processes(__file__, blob, x, processes, [str(arena_size)], "TFLite Micro", MicroError)


def _worker_main(model: str, arena_size: str, inputs: str, outputs: str) -> None:
    log: list[str] = []
    try:
        with open(model, "rb") as f:
            interpreter = build(f.read(), int(arena_size))
        with captured(log):
            out = run(interpreter, np.load(inputs))
    except (MicroError, RuntimeError) as e:
        print(e if isinstance(e, MicroError) else reason(log[0] if log else str(e)), file=sys.stderr)
        sys.exit(1)
    np.save(outputs, out)


def _load_main(model: str, arena_size: str, example: str | None = None) -> None:
    """Load the model (and run `example`) with TFLite Micro's log left on this process's output
    for the parent to read; print the recording allocator's account."""
    from tflite_micro.python.tflite_micro import runtime

    with open(model, "rb") as f:
        interpreter = runtime.Interpreter.from_bytes(f.read(), arena_size=int(arena_size))
    if example is not None:
        run(interpreter, np.load(example))
    interpreter.print_allocations()


if __name__ == "__main__":
    if sys.argv[1] == "load":
        try:
            _load_main(*sys.argv[2:])
        except (RuntimeError, ValueError):
            sys.exit(1)  # the reason is in TFLite Micro's log, above
    else:
        _worker_main(*sys.argv[1:])
