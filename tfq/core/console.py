"""What tfq prints, and what it keeps back of the libraries' chatter.

A default run prints one line per stage, Keras' per-epoch lines and tfq's own results. The
libraries around it print much more that reads like trouble on a healthy machine: TensorFlow's
C++ start-up lines and `failed call to cuInit` (on a machine that has no GPU and needs none),
tfds' download progress bars for files that are only read from disk, the converter's
`fully_quantize: 0 ...` and `UserWarning`s, LiteRT's `Created TensorFlow Lite XNNPACK delegate`.
Much of it is written by C++ straight to file descriptors 1 and 2, past Python's `sys.stdout`, so
`quiet()` points those descriptors at a temporary file around the calls that make it; if the
block fails with anything but a `TfqError`, what it printed is replayed to stderr, so nothing a
crash said is lost.

`TFQ_VERBOSE=1`, or `--verbosity` / `-v` on the command line, brings everything back. Loops that
take more than a few seconds (files, layers, schemes, shifted sets) show a progress bar on a terminal
(`progress`), drawn on the terminal's own descriptor so `quiet()` never swallows it, and nothing in a
log or a pipe.
This module imports neither TensorFlow nor tfq's other modules: `backend` uses it before
TensorFlow loads.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import warnings

VERBOSE_ENV = "TFQ_VERBOSE"
_TERMINAL = None  # a copy of stderr's descriptor, taken while it is still the terminal (see `progress`)

# Python warnings that say nothing a tfq user can act on.
_QUIET_WARNINGS = (
    r"Statistics for quantized inputs were expected",  # the converter, for every int8 model
    r"You are saving your model as an HDF5 file",  # tfmot's QAT wrappers only round-trip HDF5
    r"Compiled the loaded model, but the compiled metrics have yet to be built",
)


def verbose() -> bool:
    """True when the user asked for the libraries' logs."""
    if os.environ.get(VERBOSE_ENV, "").strip() not in ("", "0"):
        return True
    args = sys.argv[1:]
    for i, a in enumerate(args):  # absl's --verbosity/-v: 0 (INFO) or more asks for the logs, -1 is its default
        name, eq, value = a.partition("=")
        if name in ("--verbosity", "-v", "--v"):
            value = value if eq else (args[i + 1] if i + 1 < len(args) else "")
            try:
                return int(value) >= 0
            except ValueError:
                return False
    return False


def configure() -> None:
    """Before TensorFlow loads: its C++ log level, and the Python warnings to drop."""
    if verbose():
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # hides cuInit and NodeDef "errors" too
    for message in _QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message)


@contextlib.contextmanager
def quiet():
    """Send what the block writes to file descriptors 1 and 2 to a temporary file."""
    if verbose():
        yield
        return
    try:
        log = tempfile.TemporaryFile()
    except OSError:  # no usable temp folder: keep the chatter rather than fail
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = (os.dup(1), os.dup(2))
    with log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        replay = False
        try:
            yield
        except BaseException as e:
            from tfq.core.artifacts import TfqError  # imports nothing heavy

            replay = not isinstance(e, TfqError)
            raise
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            if replay:
                log.seek(0)
                sys.stderr.write(log.read().decode(errors="replace"))
                sys.stderr.flush()


def progress(items, what: str, *, total: int | None = None, unit: str = "file"):
    """`items`, with a progress bar (tqdm) on the terminal while they are worked through; the bar goes
    away when the loop ends, so what stays on screen is the run's own lines. Off when stderr is not a
    terminal (CI, a log file, a pipe) or TFQ_PROGRESS=0."""
    global _TERMINAL
    if os.environ.get("TFQ_PROGRESS", "1") == "0" or not sys.stderr.isatty():
        return items
    from tqdm import tqdm

    if _TERMINAL is None:
        _TERMINAL = os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1)
    return tqdm(items, desc=what, total=total, unit=f" {unit}", leave=False, file=_TERMINAL, dynamic_ncols=True)
