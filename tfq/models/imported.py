"""A user's own Keras model in place of a trained one (`--model_file`): checked against the dataset,
copied into its run folder with a train.json that records where it came from and what it scores.

The run is `<dataset>_<file stem>` (or `<dataset>_<--run_name>`); every stage then reads it as it reads
a run tfq trained. The pixel range the model takes (`--input_range`) is recorded in train.json and
applied by every stage from there (`input_range`).
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

from tfq import data
from tfq.core import artifacts, cli, stats
from tfq.core.artifacts import TfqError
from tfq.core.backend import keras, versions

TFLITE, FLOAT_TFLITE = ".tflite", "float32.tflite"
FORMATS = {".keras": "tf_keras native", ".h5": "HDF5", ".hdf5": "HDF5", TFLITE: "float .tflite"}  # and SavedModel
CHANCE_MARGIN = 2.0  # a float32 test accuracy under this many times chance prints a warning


def source_digest(path: Path) -> str:
    """sha256 of the model file, or of every file of a SavedModel folder (names and contents)."""
    if path.is_file():
        return artifacts.sha256(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode() + b"\0" + bytes.fromhex(artifacts.sha256(f)))
    return h.hexdigest()


def check_path(path: str | Path) -> Path:
    """`path` if it can hold a tf_keras model (a .keras or .h5 file, a SavedModel folder), else a one-line error."""
    path = Path(path)
    if not path.exists():
        raise TfqError(f"--model_file={path}: no such file or folder")
    if path.is_file() and path.suffix not in FORMATS:
        raise TfqError(f"--model_file={path}: expected a .keras or .h5 file or a SavedModel folder (or --float_tflite)")
    if path.is_dir() and not (path / "saved_model.pb").is_file():
        raise TfqError(f"--model_file={path}: a folder must be a SavedModel (it has no saved_model.pb)")
    return path


def load_user_model(path: str | Path) -> keras.Model:
    """The tf_keras model at `path` (.keras, .h5 or a SavedModel folder), or a one-line error."""
    path = check_path(path)
    saved_by = _keras_version(path)
    if saved_by.startswith("3."):
        raise TfqError(
            f"--model_file={path} was saved by Keras {saved_by}; tfq reads tf_keras (Keras 2) models: save it "
            "with tf_keras, or convert it to a float .tflite and pass --float_tflite"
        )
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as e:  # noqa: BLE001 - tf_keras raises many types for a foreign or corrupt file
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise TfqError(f"--model_file={path} is not a tf_keras model ({type(e).__name__}: {first})") from None
    if not isinstance(model, keras.Model) or len(model.inputs) != 1 or len(model.outputs) != 1:
        raise TfqError(f"--model_file={path}: expected a Keras model with one image input and one score output")
    return model


def _keras_version(path: Path) -> str:
    """The Keras version a .keras archive records in its metadata.json ("" for other files)."""
    if path.suffix != ".keras" or not zipfile.is_zipfile(path):
        return ""
    try:
        with zipfile.ZipFile(path) as z:
            return str(json.loads(z.read("metadata.json")).get("keras_version", ""))
    except (KeyError, ValueError, zipfile.BadZipFile, AttributeError):
        return ""


def check_fits(model: keras.Model, spec: data.Dataset, label: str) -> None:
    """A one-line error naming both sides when the model's input shape or class count is not the dataset's."""
    takes = tuple(model.input_shape[1:])
    scores = model.output_shape[-1]
    if takes != tuple(spec.shape) or scores != spec.num_classes:
        raise TfqError(
            f"{label} takes images of shape {list(takes)} and outputs {scores} scores, but {spec.name} has images "
            f"of shape {list(spec.shape)} and {spec.num_classes} classes"
        )


def _folder_shape(takes: tuple, dataset: str) -> tuple[int, ...] | None:
    """An image folder is read at the user's model's input size (tfq's datasets keep their own)."""
    if not data.folder.is_folder(dataset):
        return None
    if len(takes) != 3 or None in takes or min(takes) < 1:
        raise TfqError(f"the model takes images of shape {list(takes)}: give --image_size=HEIGHT,WIDTH for {dataset}")
    return tuple(int(v) for v in takes)


def held_name(source: Path) -> str:
    """The run's copy of an imported model: model.keras, or float32.tflite for a float .tflite."""
    return FLOAT_TFLITE if source.suffix == TFLITE else artifacts.MODEL_FILE


def from_tflite(run: Path) -> bool:
    """Whether the run started from a float .tflite (`--float_tflite`): it has no Keras model."""
    made = artifacts.read_json(Path(run) / artifacts.TRAIN_JSON, default={})
    return made.get("imported", {}).get("format") == FORMATS[TFLITE]


def is_imported(run: Path) -> bool:
    return "imported" in artifacts.read_json(run / artifacts.TRAIN_JSON, default={})


def input_range(run: Path, asked: tuple[float, ...] | None = None) -> tuple[float, float]:
    """The pixel range the run's model takes, as recorded when it was trained or imported ([0, 1] for
    runs from before the setting); `asked` (a stage's --input_range) must agree with it."""
    made = artifacts.read_json(run / artifacts.TRAIN_JSON, default={})
    recorded = cli.pixel_range(made.get("input_range"))
    if asked is not None and tuple(asked) != recorded:
        raise TfqError(
            f"--input_range={','.join(f'{v:g}' for v in asked)} does not fit {run.name}, whose model takes "
            f"{','.join(f'{v:g}' for v in recorded)} (recorded in its {artifacts.TRAIN_JSON})"
            + (
                "; python -m tfq.train --model_file=... --input_range=... imports it at another"
                if "imported" in made
                else ""
            )
        )
    return recorded


def warn_if_chance(accuracy: float, num_classes: int, pixels: tuple[float, float], label: str) -> bool:
    """A warning on stderr when a float model scores near chance: most often the wrong pixel range."""
    if accuracy >= CHANCE_MARGIN / num_classes:
        return False
    print(
        f"warning: {label} scores {100 * accuracy:.2f}% on float32, near chance ({100 / num_classes:.1f}%): "
        f"it was fed pixels scaled to {pixels[0]:g}..{pixels[1]:g}; if the model takes another range, "
        "say so with --input_range=LOW,HIGH (e.g. 0,255 or -1,1)",
        file=sys.stderr,
        flush=True,
    )
    return True


def _max_eval(cfg) -> int:
    return int(getattr(cfg, "max_eval_examples", 0) or 0)


def ensure(cfg) -> None:
    """A stage other than train given --model_file: import it unless the run already holds this very
    file; another --input_range for it stops with one line (the files made at the recorded range would
    no longer fit), since its range, test slice and tfq's code are the train stage's to renew."""
    run = artifacts.run_dir(cfg.artifacts, cfg.dataset, cfg.model)
    made = artifacts.read_json(run / artifacts.TRAIN_JSON, default={})
    held = made.get("imported", {}).get("source_sha256")
    if not (
        held and held == source_digest(check_path(cfg.model_file)) and (run / held_name(Path(cfg.model_file))).is_file()
    ):
        import_model(cfg)
    elif cfg.input_range is not None:
        input_range(run, tuple(cfg.input_range))


def import_model(cfg) -> dict:
    """Copy `cfg.model_file` into its run folder and test it there; returns the train.json written.
    Skipped (the recorded train.json returned) when the run already holds this very file, tested on
    the same data with the same pixel range."""
    source = Path(cfg.model_file)
    data.get(cfg.dataset, cfg.image_size)  # a known dataset (an image folder that reads) before the model loads
    run = artifacts.run_dir(cfg.artifacts, cfg.dataset, cfg.model)
    digest = source_digest(check_path(source))
    source_key = data.source_key(cfg.dataset, cfg.data_root, cfg.cache_dir)
    made = artifacts.read_json(run / artifacts.TRAIN_JSON, default={})
    if made and "imported" not in made:
        raise TfqError(f"{run} holds a model tfq trained; name the import another way (--run_name)")
    same_file = made.get("imported", {}).get("source_sha256") == digest
    # no range asked: this file's recorded one (a later stage given --model_file keeps it), else [0, 1]
    pixels = cli.pixel_range(cfg.input_range or (same_file and made.get("input_range")))
    copy = run / held_name(source)
    if (
        same_file
        and tuple(made.get("input_range", ())) == pixels
        and made.get("data_source_key") == source_key
        and made.get("code") == artifacts.code_digest()
        and made.get("versions") == versions()
        and made.get("max_eval_examples") == _max_eval(cfg)
        and copy.is_file()
        and made.get("model_sha256") == artifacts.sha256(copy)
        and (not cfg.image_size or made.get("image_shape", [])[: len(cfg.image_size)] == list(cfg.image_size))
    ):
        return made
    if source.suffix == TFLITE:
        return _import_tflite(cfg, source, run, digest, source_key, pixels)
    model = load_user_model(source)
    spec = data.get(cfg.dataset, cfg.image_size or _folder_shape(tuple(model.input_shape[1:]), cfg.dataset))
    check_fits(model, spec, f"--model_file={source}")
    _decodes(cfg, spec)
    artifacts.check_writable(run)  # only now: a file that does not load leaves no run folder behind
    from tfq import models  # its predictions and MACs count; models imports this module

    started = time.time()
    splits = _splits(cfg, spec)
    correct, val_correct = (
        _right(s, lambda x: models.predict_classes(model, data.scale(x, pixels).numpy())) for s in splits[1:]
    )
    try:
        with artifacts.atomic_path(copy) as tmp:
            model.save(tmp)
    except Exception as e:  # noqa: BLE001 - a revived SavedModel may not save as .keras
        raise TfqError(f"--model_file={source}: tf_keras cannot save it as {artifacts.MODEL_FILE} ({e})") from None
    try:
        macs = models.macs(model)
    except (AttributeError, ValueError, TypeError):  # a layer called twice has no single output shape
        macs = None
    return _record(
        cfg,
        source,
        run,
        digest,
        source_key,
        pixels,
        spec,
        splits[0],
        correct,
        val_correct,
        started,
        params=int(model.count_params()),
        macs=macs,
    )


def _decodes(cfg, spec) -> None:
    """An image folder's every image decodes at the model's shape before the run folder exists."""
    if spec.folder:
        data.check_available(cfg.dataset, cfg.data_root, cfg.cache_dir, spec.shape)


def _splits(cfg, spec):
    """(source, test, validation) of the dataset, at the model's shape where the data is a folder."""
    splits = data.load(
        cfg.dataset,
        root=cfg.data_root,
        cache=cfg.cache_dir,
        max_eval=_max_eval(cfg) or None,
        shape=spec.shape if data.resizable(cfg.dataset) else None,
    )
    return splits.source, splits.test, splits.val


def _right(split, predict):
    """Per image of `split`, whether `predict` (uint8 images -> classes) gives its label."""
    images, labels = data.to_numpy(split)
    return predict(images) == labels


def _import_tflite(cfg, source: Path, run: Path, digest: str, source_key: str, pixels) -> dict:
    """A float .tflite (`--float_tflite`): checked to be a float image classifier that fits the data, copied
    in as the run's float32.tflite with its manifest, and tested there through LiteRT."""
    from tfq.runtimes import flatbuffer, harness

    label = f"--float_tflite={source}"
    blob = source.read_bytes()
    fb = flatbuffer.read(blob, label=label)
    quantized = sorted(fb.dtypes("weights") - {"float32", "int32"})
    if quantized:
        raise TfqError(
            f"{label} holds {'/'.join(quantized)} weights: it is quantized already; tfq quantizes from the float model"
        )
    inputs = fb.io()["inputs"]
    if len(inputs) != 1 or inputs[0]["dtype"] != "float32":
        raise TfqError(f"{label}: expected one float32 image input, found {[i['dtype'] for i in inputs]}")
    spec = data.get(cfg.dataset, cfg.image_size or _folder_shape(tuple(inputs[0]["shape"][1:]), cfg.dataset))
    clf = harness.Classifier(
        blob, input_shape=spec.shape, num_classes=spec.num_classes, label=label, input_range=pixels
    )
    _decodes(cfg, spec)
    artifacts.check_writable(run)  # only now: a file that does not fit leaves no run folder behind
    started = time.time()
    splits = _splits(cfg, spec)
    correct, val_correct = (_right(s, lambda x: clf.predict(x).argmax(1)) for s in splits[1:])
    manifest = {
        "mode": "float32",
        "file": FLOAT_TFLITE,
        "description": f"your own float .tflite ({source.name}), as given",
        "size_bytes": len(blob),
        "converter": {"tool": "none: the run started from this file", "source": str(source.resolve())},
        "calibration_samples": 0,
        "input_range": list(pixels),
        "convert_time_s": 0.0,
        "flatbuffer": fb.summary(),
        "source_model": {"path": str(run / FLOAT_TFLITE), "sha256": digest},
        "versions": versions(),
    }
    with artifacts.atomic_paths(run / FLOAT_TFLITE, run / "float32.json") as (blob_tmp, json_tmp):
        blob_tmp.write_bytes(blob)
        artifacts.write_json(json_tmp, manifest)
    params = sum(int(np.prod(t.shape or (1,))) for t in fb.tensors if t.constant and t.dtype == "float32")
    return _record(
        cfg,
        source,
        run,
        digest,
        source_key,
        pixels,
        spec,
        splits[0],
        correct,
        val_correct,
        started,
        params=params,
        macs=None,
    )


def _record(
    cfg, source, run, digest, source_key, pixels, spec, data_source, correct, val_correct, started, *, params, macs
):
    """Write and return the run's train.json for an imported model."""
    accuracy = float(correct.mean())
    result = {
        "dataset": cfg.dataset,
        "model": cfg.model,
        "imported": {
            "source": str(source.resolve()),
            "source_sha256": digest,
            "format": FORMATS.get(source.suffix, "SavedModel") if source.is_file() else "SavedModel",
        },
        "input_range": list(pixels),
        "test_accuracy": accuracy,
        "test_accuracy_interval": stats.wilson_interval(int(correct.sum()), len(correct)),
        "val_accuracy": float(val_correct.mean()),
        "near_chance": warn_if_chance(accuracy, spec.num_classes, pixels, f"{source.name} on {cfg.dataset}"),
        "epochs": 0,
        "history": {},
        "test_examples": int(len(correct)),
        "max_eval_examples": _max_eval(cfg),
        "wall_time_s": round(time.time() - started, 1),
        "params": params,
        "macs": macs,
        "data_source": data_source.to_json(),
        "data_source_key": source_key,
        **data.recorded(spec),
        "versions": versions(),
        "code": artifacts.code_digest(),
        "model_sha256": artifacts.sha256(run / held_name(source)),
    }
    artifacts.write_json(run / artifacts.TRAIN_JSON, result)
    return result
