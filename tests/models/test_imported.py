"""tfq.models.imported: a user's own Keras model (`--model_file`) in place of training, with the pixel
range it takes (`--input_range`) applied wherever pixels enter, and one-line errors for files that
are not such a model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import STUDY, STUDY_EXPORTS, STUDY_STAGES, error_lines, pipeline_cli
from tfq.core import artifacts

RAW = "--input_range=0,255"


def _digits_net(data_root, cache, folder: Path, rescale: bool = False) -> Path:
    """A Functional model as a user writes one: residual Add, a depthwise convolution with BatchNorm and
    ReLU6, a 1x1 projection; it takes raw 0..255 pixels (`rescale`: through a Rescaling layer, which
    tfmot cannot quantize). Trained briefly here."""
    from tfq import data
    from tfq.core.backend import keras, tf

    tf.keras.utils.set_random_seed(0)
    splits = data.load("mnist", root=data_root, cache=cache, max_train=3000, max_eval=200)
    x, y = data.to_numpy(splits.train)
    inputs = keras.Input((28, 28, 1))
    h = keras.layers.Rescaling(1 / 255)(inputs) if rescale else inputs
    h = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(h)
    r = keras.layers.DepthwiseConv2D(3, padding="same")(h)
    r = keras.layers.BatchNormalization()(r)
    r = keras.layers.ReLU(6.0)(r)
    r = keras.layers.Conv2D(16, 1)(r)
    h = keras.layers.ReLU()(keras.layers.Add()([h, r]))
    h = keras.layers.Flatten()(keras.layers.MaxPooling2D()(h))
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(h))
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x.astype(np.float32), y, epochs=4, batch_size=64, verbose=0)
    path = folder / ("rescaled_net.keras" if rescale else "digits_net.keras")
    model.save(path)
    return path


@pytest.fixture(scope="module")
def user_model(tmp_path_factory, data_root, cache) -> Path:
    return _digits_net(data_root, cache, tmp_path_factory.mktemp("user-model"))


def _flat_model(folder: Path, shape, classes: int, name: str) -> Path:
    from tfq.core.backend import keras

    inputs = keras.Input(shape)
    model = keras.Model(inputs, keras.layers.Dense(classes, activation="softmax")(keras.layers.Flatten()(inputs)))
    path = folder / name
    model.save(path)
    return path


def _plain_hdf5(folder: Path) -> Path:
    """An HDF5 file that holds arrays, not a Keras model: what a user may mistake for one."""
    import h5py

    path = folder / "weights_only.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("dense/kernel", data=np.zeros((784, 10), np.float32))
    return path


def _keras3_file(folder: Path) -> Path:
    """A .keras archive as Keras 3 writes one (its metadata and config keys; tfq never imports Keras 3)."""
    import zipfile

    config = {
        "module": "keras",
        "class_name": "Sequential",
        "config": {
            "name": "sequential",
            "layers": [
                {"module": "keras.layers", "class_name": "InputLayer", "config": {"batch_shape": [None, 28, 28, 1]}},
                {"module": "keras.layers", "class_name": "Flatten", "config": {"name": "flatten"}},
                {"module": "keras.layers", "class_name": "Dense", "config": {"name": "dense", "units": 10}},
            ],
        },
    }
    path = folder / "keras3.keras"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("metadata.json", json.dumps({"keras_version": "3.15.1", "date_saved": "2026-12-08@00:28:23"}))
        z.writestr("config.json", json.dumps(config))
    return path


# class names sort into label order, as tfds' ImageFolder and Keras' image_dataset_from_directory number them
DIGITS = ("0-zero", "1-one", "2-two", "3-three", "4-four", "5-five", "6-six", "7-seven", "8-eight", "9-nine")


def _digit_folder(root: Path, data_root, cache) -> Path:
    """MNIST slices as a user's image folder holds them: 32x32 RGB PNGs in one folder per class name."""
    from PIL import Image

    from tfq import data

    splits = data.load("mnist", root=data_root, cache=cache, max_train=600, max_eval=200)
    for split, ds in (("train", splits.train), ("test", splits.test)):
        for i, (image, label) in enumerate(zip(*data.to_numpy(ds))):
            (root / split / DIGITS[label]).mkdir(parents=True, exist_ok=True)
            rgb = Image.fromarray(image[..., 0]).convert("RGB").resize((32, 32), Image.BILINEAR)
            rgb.save(root / split / DIGITS[label] / f"{i}.png")
    return root


def test_a_users_residual_depthwise_model_on_raw_pixels_and_an_image_folder_runs_through_the_pipeline_to_the_report(
    user_model, tmp_path, data_root, cache
):
    """The user's model takes 28x28x1: the folder's 32x32 RGB images are read at that size and channel count."""
    folder = _digit_folder(tmp_path / "handwritten", data_root, cache)
    settings = {k: v for k, v in STUDY.items() if k not in ("models", "datasets")}
    args = (f"--datasets=folder:{folder}", f"--model_file={user_model}", RAW)
    proc = pipeline_cli(tmp_path / "a", data_root, cache, *args, settings=settings)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "a" / "handwritten_digits_net"
    made = json.loads((run / artifacts.TRAIN_JSON).read_text())
    assert made["imported"]["source_sha256"] == artifacts.sha256(user_model)
    assert made["input_range"] == [0.0, 255.0] and made["test_examples"] == STUDY["max_eval_examples"]
    assert made["image_shape"] == [28, 28, 1] and made["labels"] == list(DIGITS)
    assert made["data_source"]["kind"] == "folder"
    assert made["test_accuracy"] > 0.6, made  # fed the range it was trained on
    manifests = [json.loads(p.read_text()) for p in run.glob("*.json") if p.with_suffix(".tflite").is_file()]
    assert len(manifests) >= 18 and all(m.get("input_range") == [0.0, 255.0] for m in manifests if "mode" in m)
    evals = {p.stem: json.loads(p.read_text()) for p in run.glob("eval_*.json")}
    assert all(e["input_range"] == [0.0, 255.0] for e in evals.values())
    # float32.tflite on the same test images scores what the Keras model scored at import
    assert evals["eval_float32"]["accuracy"] == pytest.approx(made["test_accuracy"], abs=0.011)
    mixed = [p.with_suffix(".json") for p in run.glob("mixed_*.tflite")]
    outputs = {p.stem: json.loads(p.read_text()) for p in mixed}
    outputs |= {s: json.loads((run / f"{s}.json").read_text()) for s in ("micro", "generalize", "sweep", "sensitivity")}
    assert mixed and all(out["input_range"] == [0.0, 255.0] for out in outputs.values())
    # and fed so: this model scores near chance (8.5% on MNIST) when fed 0..1
    assert outputs["sweep"]["float_accuracy_grid"] > 0.5 and outputs["sensitivity"]["float_val_accuracy"] > 0.5
    shifted = {v["name"]: v for v in outputs["generalize"]["shift"]["variants"]}
    assert shifted["float32"]["accuracy"]["clean"] >= 0.375, shifted["float32"]["accuracy"]  # 6 of 16 images
    # TFLite Micro fed 0..1 would push the int8 file's input to its zero point and part from LiteRT's answers
    micro = {v["name"]: v for v in json.loads((run / "micro.json").read_text())["variants"]}
    assert micro["int8"]["litert_reference"].startswith("saved by evaluate"), micro["int8"]
    assert micro["int8"]["agreement_with_litert"] >= 0.9, micro["int8"]
    bundle = json.loads((run / "export/int8_android/model.json").read_text())
    assert bundle["input"]["pixel_scale"] == 1.0 and bundle["input"]["pixel_offset"] == 0.0
    assert (run / "export/int8_android/labels.txt").read_text().split() == list(DIGITS)
    assert (
        "#define TFQ_INT8_PIXEL_SCALE 1.0f\n#define TFQ_INT8_PIXEL_OFFSET 0.0f"
        in (run / "export/int8_c/int8.h").read_text()
    )
    sens = json.loads((run / "sensitivity.json").read_text())
    depthwise = [row for row in sens["layers"] if row["op"] == "DEPTHWISE_CONV_2D"]
    assert depthwise and all(row["schemes"]["w4"]["held_as"] == "int8" for row in depthwise)
    report = (tmp_path / "a" / "report" / "report.md").read_text()
    assert (
        f"| digits_net | 8,506 | {made['macs']:,d} | {100 * made['test_accuracy']:.2f}% (200 images) | imported |"
        in report
    )
    # a rerun finds every stage current, the import included
    again = pipeline_cli(tmp_path / "a", data_root, cache, *args, settings=settings)
    assert again.returncode == 0, again.stderr[-2000:]
    for stage in (*STUDY_STAGES, *STUDY_EXPORTS):
        assert f"[handwritten_digits_net] {stage}: current, skipped" in again.stdout, (stage, again.stdout[-2000:])
    assert "[report] report: current, skipped" in again.stdout


def test_a_layer_tfmot_cannot_quantize_makes_qat_not_possible_and_the_rest_of_the_study_runs(
    tmp_path, data_root, cache
):
    model = _digits_net(data_root, cache, tmp_path, rescale=True)
    settings = {k: v for k, v in STUDY.items() if k not in ("models", "cross_datasets", "export_modes")}
    proc = pipeline_cli(tmp_path / "a", data_root, cache, f"--model_file={model}", RAW, settings=settings)
    assert proc.returncode == 0, proc.stderr[-3000:]
    said = [line for line in proc.stdout.splitlines() if "qat: not possible on this run" in line]
    assert len(said) == 1 and "tfmot cannot quantize" in said[0] and "Rescaling" in said[0], proc.stdout[-3000:]
    run = tmp_path / "a" / "mnist_rescaled_net"
    assert not (run / "qat_int8.tflite").exists() and (run / "eval_int8.json").is_file()
    assert (run / "sweep.json").is_file() and (run / "micro.json").is_file() and (run / "generalize.json").is_file()
    report = (tmp_path / "a" / "report" / "report.md").read_text()
    assert (
        "## Stages not possible on a run" in report and "| mnist_rescaled_net | qat | tfmot cannot quantize" in report
    )
    again = pipeline_cli(tmp_path / "a", data_root, cache, f"--model_file={model}", RAW, settings=settings)
    assert "qat: not possible on this run (recorded)" in again.stdout, again.stdout[-2000:]


def test_the_input_range_decides_the_score_and_later_stages_keep_the_runs_own(user_model, tmp_path, run_cli):
    common = ("--dataset=mnist", f"--artifacts={tmp_path}", "--max_eval_examples=200", f"--model_file={user_model}")
    unit = run_cli("train", *common, "--run_name=unit")
    raw = run_cli("train", *common, "--run_name=raw", RAW)
    assert unit.returncode == 0 and raw.returncode == 0, unit.stderr[-2000:] + raw.stderr[-2000:]
    acc = {n: json.loads((tmp_path / f"mnist_{n}" / artifacts.TRAIN_JSON).read_text()) for n in ("unit", "raw")}
    assert acc["unit"]["input_range"] == [0.0, 1.0] and acc["raw"]["input_range"] == [0.0, 255.0]
    assert acc["raw"]["test_accuracy"] > acc["unit"]["test_accuracy"] + 0.05, acc
    mismatch = (
        "error: --input_range=0,1 does not fit mnist_raw, whose model takes 0,255 (recorded in its train.json); "
        "python -m tfq.train --model_file=... --input_range=... imports it at another"
    )
    wrong = run_cli("convert", "--dataset=mnist", "--model=raw", f"--artifacts={tmp_path}", "--input_range=0,1")
    assert wrong.returncode == 1 and error_lines(wrong.stderr) == [mismatch]
    # the same with the file named again: a later stage does not re-import it at another range
    wrong = run_cli("convert", *common, "--run_name=raw", "--mode=int8", "--input_range=0,1")
    assert wrong.returncode == 1 and error_lines(wrong.stderr) == [mismatch], wrong.stderr[-1500:]
    assert json.loads((tmp_path / "mnist_raw" / artifacts.TRAIN_JSON).read_text()) == acc["raw"]
    assert not list((tmp_path / "mnist_raw").glob("*.tflite"))
    # a later stage given the file again, without a range, keeps the one recorded at import
    again = run_cli("convert", *common, "--run_name=raw", "--mode=int8")
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((tmp_path / "mnist_raw" / "int8.json").read_text())["input_range"] == [0.0, 255.0]
    assert json.loads((tmp_path / "mnist_raw" / artifacts.TRAIN_JSON).read_text()) == acc["raw"]  # not re-imported


def test_a_savedmodel_folder_imports_as_its_keras_file_does(user_model, tmp_path, run_cli):
    from tfq.core.backend import keras

    saved = tmp_path / "digits_savedmodel"
    keras.models.load_model(user_model).save(saved, save_format="tf")
    common = ("--dataset=mnist", f"--artifacts={tmp_path / 'a'}", "--max_eval_examples=200", RAW)
    runs = {}
    for name, path in (("keras", user_model), ("savedmodel", saved)):
        proc = run_cli("train", *common, f"--model_file={path}", f"--run_name={name}")
        assert proc.returncode == 0, proc.stderr[-2000:]
        runs[name] = json.loads((tmp_path / "a" / f"mnist_{name}" / artifacts.TRAIN_JSON).read_text())
    from tfq.models import imported

    assert runs["savedmodel"]["imported"]["source_sha256"] == imported.source_digest(saved)
    assert runs["savedmodel"]["imported"]["format"] == "SavedModel"
    assert runs["savedmodel"]["test_accuracy"] == runs["keras"]["test_accuracy"] > 0.6, runs
    assert (tmp_path / "a" / "mnist_savedmodel" / artifacts.MODEL_FILE).is_file()


def test_a_float_result_near_chance_warns_and_names_the_input_range(tmp_path, run_cli):
    """A model that answers the same class for every image scores about 10% on MNIST."""
    from tfq.core.backend import keras

    inputs = keras.Input((28, 28, 1))
    dense = keras.layers.Dense(10, activation="softmax", kernel_initializer="zeros")
    model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    dense.bias.assign(np.arange(10, dtype=np.float32))
    model.save(tmp_path / "constant.keras")
    proc = run_cli(
        "train",
        "--dataset=mnist",
        f"--artifacts={tmp_path}",
        "--max_eval_examples=200",
        "--model_file=" + str(tmp_path / "constant.keras"),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    warning = [line for line in proc.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warning) == 1 and "near chance" in warning[0] and "0..1" in warning[0]
    assert "--input_range=LOW,HIGH" in warning[0]
    assert json.loads((tmp_path / "mnist_constant" / artifacts.TRAIN_JSON).read_text())["near_chance"] is True


@pytest.mark.parametrize(
    "make, dataset, message",
    [
        (lambda d: d / "missing.keras", "mnist", "--model_file={p}: no such file or folder"),
        (lambda d: d / "notes.txt", "mnist", "--model_file={p}: expected a .keras or .h5 file or a SavedModel folder"),
        (lambda d: d, "mnist", "--model_file={p}: a folder must be a SavedModel (it has no saved_model.pb)"),
        (lambda d: d / "broken.keras", "mnist", "--model_file={p} is not a tf_keras model"),
        (_plain_hdf5, "mnist", "--model_file={p} is not a tf_keras model"),
        (
            _keras3_file,
            "mnist",
            "--model_file={p} was saved by Keras 3.15.1; tfq reads tf_keras (Keras 2) models: save it with tf_keras, "
            "or convert it to a float .tflite and pass --float_tflite",
        ),
        (
            lambda d: _flat_model(d, (28, 28, 1), 10, "digits.keras"),
            "cifar10",
            "--model_file={p} takes images of shape [28, 28, 1] and outputs 10 scores, but cifar10 has images of "
            "shape [32, 32, 3] and 10 classes",
        ),
        (
            lambda d: _flat_model(d, (28, 28, 1), 5, "five.h5"),
            "mnist",
            "--model_file={p} takes images of shape [28, 28, 1] and outputs 5 scores, but mnist has images of "
            "shape [28, 28, 1] and 10 classes",
        ),
    ],
    ids=[
        "missing",
        "not-a-model-suffix",
        "folder-without-savedmodel",
        "corrupt",
        "hdf5-without-a-model",
        "saved-by-keras-3",
        "wrong-shape",
        "wrong-classes",
    ],
)
def test_files_that_are_not_a_fitting_model_are_one_line_errors_that_leave_no_run(
    make, dataset, message, tmp_path, run_cli
):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a model")
    (folder / "broken.keras").write_bytes(b"PK\x03\x04 truncated")
    path = make(folder)
    out = tmp_path / "artifacts"
    proc = run_cli("train", f"--dataset={dataset}", f"--artifacts={out}", f"--model_file={path}")
    lines = error_lines(proc.stderr)
    assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: " + message.format(p=path)), lines
    assert not out.exists() or not any(out.rglob("*"))


def test_run_name_and_input_range_flags_that_do_not_fit_are_one_line_errors(tmp_path, run_cli):
    cases = {
        ("--run_name=mine",): "error: --run_name=mine names an imported model: it needs --model_file",
        ("--input_range=1,0",): "error: --input_range=1,0: expected LOW,HIGH with LOW < HIGH",
        ("--input_range=0,1,2",): "error: --input_range=0,1,2: expected LOW,HIGH with LOW < HIGH",
    }
    for args, expected in cases.items():
        proc = run_cli("train", "--dataset=mnist", f"--artifacts={tmp_path}", *args)
        assert proc.returncode == 1 and error_lines(proc.stderr) == [expected], proc.stderr[-1500:]
    assert not any(tmp_path.rglob("*"))


def _float_tflite(model_file: Path, out: Path, quantize: bool = False) -> Path:
    """The user's own float .tflite, made as a user makes one (the TFLite converter); `quantize`: with
    dynamic-range int8 weights instead, a file that is not a float model."""
    from tfq.core.backend import keras, tf

    converter = tf.lite.TFLiteConverter.from_keras_model(keras.models.load_model(model_file))
    if quantize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    out.write_bytes(converter.convert())
    return out


def test_a_float_tflite_starts_a_run_whose_stages_run_or_say_why_they_cannot(user_model, tmp_path, data_root, cache):
    tflite = _float_tflite(user_model, tmp_path / "digits.tflite")
    settings = {k: v for k, v in STUDY.items() if k not in ("models", "cross_datasets")}
    args = (f"--float_tflite={tflite}", RAW, "--export_modes=int8,aeq_a8w8")
    proc = pipeline_cli(tmp_path / "a", data_root, cache, *args, settings=settings)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "a" / "mnist_digits"
    made = json.loads((run / artifacts.TRAIN_JSON).read_text())
    assert made["imported"]["format"] == "float .tflite" and made["imported"]["source_sha256"] == artifacts.sha256(
        tflite
    )
    assert artifacts.sha256(run / "float32.tflite") == artifacts.sha256(tflite) and not (run / "model.keras").exists()
    assert made["test_accuracy"] > 0.6 and made["input_range"] == [0.0, 255.0], made
    # the TFLite converter's modes need the Keras model; ai-edge-quantizer's start from the float file
    assert not (run / "int8.tflite").exists() and (run / "aeq_a8w4.tflite").is_file()
    evals = {p.stem: json.loads(p.read_text()) for p in run.glob("eval_*.json")}
    assert evals["eval_float32"]["accuracy"] == pytest.approx(made["test_accuracy"], abs=1e-9)
    assert {"eval_aeq_a8w8", "eval_aeq_a8w4", "eval_aeq_dyn_w4"} <= set(evals) and "eval_int8" not in evals
    state = json.loads((run / "pipeline.json").read_text())
    for stage in ("qat", "sweep", "export int8 c", "export int8 android"):  # the study's --export_modes=int8 too
        assert "starts from a float .tflite (digits.tflite)" in state[stage]["not_possible"], state[stage]
    for stage in ("convert", "evaluate", "sensitivity", "mixed", "micro", "generalize", "export aeq_a8w8 android"):
        assert "not_possible" not in state[stage], (stage, state[stage])
    assert not (run / "export" / "int8_c").exists()
    assert len(json.loads((run / "micro.json").read_text())["variants"]) >= 13
    assert (run / "export/aeq_a8w8_android/labels.txt").read_text().split() == list("0123456789")
    report = (tmp_path / "a" / "report" / "report.md").read_text()
    assert "| mnist_digits | qat | mnist_digits starts from a float .tflite" in report
    for mode in ("float32", "aeq_a8w8", "aeq_a8w4"):  # its files' rows, with their measured accuracies
        assert f"| digits | {mode} | {100 * evals[f'eval_{mode}']['accuracy']:.2f}% |" in report, mode


def test_a_float_tflite_that_is_not_a_fitting_float_classifier_is_one_line_and_leaves_no_run(
    user_model, tmp_path, run_cli
):
    (tmp_path / "junk.tflite").write_bytes(b"TFL3 not really")
    quantized = _float_tflite(user_model, tmp_path / "dynamic.tflite", quantize=True)
    out = tmp_path / "artifacts"
    cases = [
        (
            ("--dataset=mnist", f"--float_tflite={tmp_path / 'junk.tflite'}"),
            f"error: --float_tflite={tmp_path / 'junk.tflite'}",
        ),
        (
            ("--dataset=mnist", f"--float_tflite={quantized}"),
            f"error: --float_tflite={quantized} holds int8 weights: it is quantized already",
        ),
        (
            ("--dataset=cifar10", f"--float_tflite={_float_tflite(user_model, tmp_path / 'd.tflite')}"),
            f"error: --float_tflite={tmp_path / 'd.tflite'} takes images of shape [28, 28, 1], but the dataset's "
            "are [32, 32, 3]",
        ),
        (
            ("--dataset=mnist", f"--float_tflite={user_model}"),
            f"error: --float_tflite={user_model}: expected a .tflite file",
        ),
        (("--dataset=mnist", f"--float_tflite={quantized}", f"--model_file={user_model}"), "error: --float_tflite="),
    ]
    for args, start in cases:
        proc = run_cli("train", f"--artifacts={out}", *args)
        lines = error_lines(proc.stderr)
        assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith(start), (args, proc.stderr[-1500:])
        assert not out.exists() or not any(out.rglob("*"))
    # a run that started from a float .tflite: a converter mode is one line saying why not
    fine = run_cli(
        "train",
        f"--artifacts={out}",
        "--dataset=mnist",
        f"--float_tflite={tmp_path / 'd.tflite'}",
        RAW,
        "--max_eval_examples=100",
    )
    assert fine.returncode == 0, fine.stderr[-2000:]
    proc = run_cli("convert", f"--artifacts={out}", "--dataset=mnist", "--model=d", "--mode=int8")
    assert proc.returncode == 1 and error_lines(proc.stderr) == [
        "error: mnist_d starts from a float .tflite (d.tflite), and this needs a Keras model (the TFLite "
        "converter's modes, QAT and the sweep do; give --model_file for them)"
    ], proc.stderr[-1500:]
    assert not (out / "mnist_d" / "int8.tflite").exists()
