"""The run folder `artifacts/<dataset>_<model>/`, its file names, atomic writes and manifests.

Stages hand each other files through this folder, never globals. Every write goes to a
temporary file in the same folder and is renamed into place, so a crash or a bad input never
leaves a half-written model, flatbuffer or JSON behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

MODEL_FILE = "model.keras"  # the trained float model (tf_keras native format)
TRAIN_JSON = "train.json"


class TfqError(Exception):
    """An error a user can act on: printed as one line, exit status 1, no traceback."""


class NotPossible(TfqError):
    """A stage that cannot be done on this run's model (a layer a tool cannot handle): alone, an error;
    in the pipeline, recorded with its reason while the other stages go on."""


def run_dir(artifacts: str | os.PathLike, dataset: str, model: str) -> Path:
    """`<artifacts>/<dataset>_<model>`: where every stage of one dataset/model pair writes."""
    return Path(artifacts) / f"{dataset_label(dataset)}_{model}"


def dataset_label(dataset: str) -> str:
    """A dataset's part of a run folder's name: its own, or for a user's image folder (`folder:PATH`)
    the folder's name, and for any tfds dataset (`tfds:NAME`) `tfds-NAME`, kept to letters, digits, '-'
    and '.' ('_' separates dataset from model)."""
    kind, sep, rest = dataset.partition(":")
    if not sep or kind not in ("folder", "tfds"):
        return dataset
    name = Path(rest).expanduser().resolve().name if kind == "folder" else f"tfds-{rest}"
    return re.sub(r"[^A-Za-z0-9.-]+", "-", name).strip("-.") or kind


TEMP_PREFIX = ".tmp."  # every file on its way to its final name starts so (see remove_stale_temps)


def _temp_beside(final: Path, suffix: str | None = None) -> Path:
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f"{TEMP_PREFIX}{final.name}.", suffix=suffix or final.suffix)
    os.close(fd)
    os.unlink(tmp)  # writers such as keras' save() want to create the file themselves
    return Path(tmp)


def _discard(tmp: Path) -> None:
    if tmp.is_dir():
        shutil.rmtree(tmp, ignore_errors=True)
    elif tmp.exists():
        tmp.unlink()


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike, suffix: str | None = None):
    """Yield a temporary path beside `final`; rename it into place only if the block succeeds."""
    final = Path(final)
    tmp = _temp_beside(final, suffix)
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        _discard(tmp)


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete what a killed writer left under `folder` (temporary files never renamed into place);
    call it only where no other process is writing. Returns what it removed."""
    stale = sorted(Path(folder).rglob(f"{TEMP_PREFIX}*")) if Path(folder).is_dir() else []
    for path in stale:
        _discard(path)
    return stale


def check_writable(folder: str | os.PathLike) -> Path:
    """Make `folder` and prove a file can be created in it, before any data is read or model trained."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-check.")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise TfqError(f"cannot write to {folder}: {e.strerror or e}") from None
    return folder


@contextlib.contextmanager
def new_or_kept(folder: str | os.PathLike):
    """`check_writable(folder)` for a block that may fail before it writes anything (an image that does
    not decode, a model that does not fit): a folder made here and still empty then is removed again."""
    folder = Path(folder)
    made = not folder.exists()
    folder = check_writable(folder)
    try:
        yield folder
    except BaseException:
        if made and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        raise


@contextlib.contextmanager
def atomic_paths(*finals: str | os.PathLike):
    """Like `atomic_path` for several files that belong together (a model and its manifests):
    none is renamed into place until every one was written, so a failure leaves none of them;
    then they are renamed in the order given, so a manifest listed last never lands before its file."""
    finals = [Path(f) for f in finals]
    tmps: list[Path] = []
    try:
        for final in finals:
            tmps.append(_temp_beside(final))
        yield tmps
        for tmp, final in zip(tmps, finals):
            os.replace(tmp, final)
    finally:
        for tmp in tmps:
            _discard(tmp)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_json(path: str | os.PathLike, obj) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n")
    return Path(path)


_REQUIRED = object()


def read_json(path: str | os.PathLike, default=_REQUIRED) -> dict:
    """A JSON manifest; `default` when the file is missing (if given), a TfqError when it is corrupt."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        if default is not _REQUIRED:
            return default
        raise TfqError(f"{path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TfqError(f"{path} is not valid JSON ({e})") from None


def code_digest(package: str | os.PathLike | None = None) -> str:
    """sha256 over tfq's own source files and recipes, every subpackage included, so results made by
    other code are not taken as current."""
    h = hashlib.sha256()
    here = Path(package) if package else Path(__file__).parents[1]
    for path in sorted([*here.rglob("*.py"), *here.rglob("recipes/*.json")]):  # recipes make files too
        h.update(str(path.relative_to(here)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _jsonable(o):
    """numpy scalars/arrays and paths in manifests."""
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, os.PathLike):
        return os.fspath(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")
