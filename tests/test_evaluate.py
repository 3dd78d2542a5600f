"""tfq.evaluate: the harness against a plain loop, input quantization, delegation, bad models."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import error_lines
from tfq import convert, data, evaluate
from tfq.core.artifacts import TfqError
from tfq.core.backend import keras
from tfq.quant import modes
from tfq.runtimes import harness


@pytest.fixture(scope="module")
def mnist_test(data_root, cache):
    return data.to_numpy(data.load("mnist", root=data_root, cache=cache).test, limit=400)


@pytest.mark.parametrize("mode", ["float32", "int8", "int16x8"])
def test_harness_accuracy_equals_the_image_by_image_loop(converted, mnist_test, mode):
    x, y = mnist_test
    path = converted[0] / f"{mode}.tflite"
    batched = harness.Classifier(path, batch_size=64).predict(x).argmax(1)
    np.testing.assert_array_equal(batched, harness.naive_predictions(path, x))


@pytest.mark.parametrize("mode", ["int8", "int16x8", "float32"])
def test_the_yardstick_quantizes_every_pixel_value_as_the_harness_does(converted, mode):
    """Truncating instead of rounding put 63 of 256 pixel values one step low on int8."""
    clf = harness.Classifier(converted[0] / f"{mode}.tflite")
    pixels = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)
    np.testing.assert_array_equal(harness.naive_input(pixels, clf.input), clf.prepare(pixels))


def test_inputs_are_quantized_with_the_models_own_scale_and_zero_point(converted, trained, data_root, cache):
    image = np.zeros((1, 28, 28, 1), np.uint8)
    image[0, :6, 0, 0] = [0, 1, 127, 128, 254, 255]
    run = converted[0]
    # int8: scale 1/255, zero point -128 -> pixel - 128, exactly
    q8 = harness.Classifier(run / "int8.tflite").prepare(image)
    assert q8.dtype == np.int8 and q8[0, :6, 0, 0].tolist() == [-128, -127, -1, 0, 126, 127]
    # int16: symmetric, zero point 0
    c16 = harness.Classifier(run / "int16x8.tflite")
    scale, zero_point = c16.input["quantization"]
    q16 = c16.prepare(image)
    assert q16.dtype == np.int16 and zero_point == 0
    np.testing.assert_array_equal(q16[0, :6, 0, 0], np.round(np.array([0, 1, 127, 128, 254, 255]) / 255 / scale))
    # uint8 (legacy io): scale 1/255, zero point 0 -> the pixel itself
    (u8,) = convert.convert(
        convert.ConvertConfig(
            dataset="mnist",
            model="cnn",
            modes=("int8",),
            io_type="uint8",
            num_calibration=50,
            artifacts=str(trained),
            data_root=str(data_root),
            cache_dir=str(cache),
        )
    )
    cu8 = harness.Classifier(run / u8["file"])
    qu8 = cu8.prepare(image)
    assert qu8.dtype == np.uint8 and qu8[0, :6, 0, 0].tolist() == [0, 1, 127, 128, 254, 255]
    x, _ = data.to_numpy(data.load("mnist", root=data_root, cache=cache).test, limit=200)
    reference = harness.Classifier(run / "float32.tflite").predict(x).argmax(1)
    for clf in (cu8, c16):
        assert np.mean(clf.predict(x).argmax(1) == reference) >= 0.95


def test_delegation_report_names_ops_outside_xnnpack(converted):
    run = converted[0]
    float32 = harness.Classifier(run / "float32.tflite").delegation()
    assert float32["xnnpack"] and float32["fully_delegated"] and float32["ops_outside_delegate"] == []
    int16 = harness.Classifier(run / "int16x8.tflite").delegation()
    assert not int16["xnnpack"] and "CONV_2D" in int16["ops_outside_delegate"]


def test_cli_writes_eval_json_with_every_measure(run_cli, converted):
    run = converted[0]
    proc = run_cli(
        "evaluate",
        "--mode=int8,float32,int16x8",
        f"--artifacts={run.parent}",
        "--max_eval_examples=500",
        "--latency_runs=200",
        "--processes=2",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads((run / "eval_int8.json").read_text())
    assert r["examples"] == 500 and 0.5 < r["accuracy"] <= 1 and 0.9 <= r["agreement"] <= 1
    assert len(r["per_class_accuracy"]) == 10 and np.array(r["confusion_matrix"]).sum() == 500
    assert r["size_bytes"] == (run / "int8.tflite").stat().st_size and 0 < r["weight_bytes"] < r["size_bytes"]
    assert r["latency_us"]["runs"] == 200 and r["latency_us"]["p50"] > 0
    assert r["threads"] == 1 and r["cpu"] and r["throughput"]["batch_size"] == 256
    assert "ops_outside_delegate" in r and r["xnnpack"] is True
    # only the model XNNPACK does not take is split over processes
    i16 = json.loads((run / "eval_int16x8.json").read_text())
    assert r["throughput"]["processes"] == 1 and i16["throughput"]["processes"] == 2
    assert not i16["xnnpack"] and 0.9 <= i16["agreement"] <= 1


def _tflite(model: keras.Model) -> bytes:
    blob, _ = convert.convert_model(model, modes.MODES["float32"])
    return blob


@pytest.mark.parametrize(
    "content, message",
    [
        (b"garbage that is not a flatbuffer", "is not a TFLite flatbuffer"),
        ("truncated", "damaged TFLite flatbuffer"),
        ("cifar_shaped", "takes images of shape [32, 32, 3], but the dataset's are [28, 28, 1]"),
        ("two_outputs", "is not an image classifier"),
    ],
)
def test_bad_models_give_a_clear_error_and_non_zero_exit(run_cli, converted, tmp_path, content, message):
    if content == "truncated":
        content = (converted[0] / "int8.tflite").read_bytes()[:5000]
    elif content == "cifar_shaped":
        content = _tflite(keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(), keras.layers.Dense(10)]))
    elif content == "two_outputs":
        inp = keras.Input((28, 28, 1))
        flat = keras.layers.Flatten()(inp)
        content = _tflite(keras.Model(inp, [keras.layers.Dense(10)(flat), keras.layers.Dense(2)(flat)]))
    path = tmp_path / "model.tflite"
    path.write_bytes(content)
    proc = run_cli("evaluate", f"--tflite={path}", f"--artifacts={tmp_path}", "--max_eval_examples=10", timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert len(error_lines(proc.stderr)) == 1 and message in error_lines(proc.stderr)[0]
    assert error_lines(proc.stderr)[0].startswith(f"error: {path} ")  # names the file the user gave
    assert not list(tmp_path.glob("eval_*.json"))


def test_an_unwritable_run_folder_fails_before_anything_is_read(run_cli):
    proc = run_cli("evaluate", "--artifacts=/proc/nope", "--mode=all", timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert error_lines(proc.stderr) == ["error: cannot write to /proc/nope/mnist_cnn: No such file or directory"]


def test_missing_mode_file_names_the_command_that_makes_it(tmp_path):
    with pytest.raises(TfqError, match="python -m tfq.convert --mode=int8 --dataset=mnist --model=cnn"):
        evaluate.evaluate(evaluate.EvalConfig(artifacts=str(tmp_path)))
    with pytest.raises(TfqError, match="unknown mode 'int3'"):
        evaluate.evaluate(evaluate.EvalConfig(modes=("int3",), artifacts=str(tmp_path)))


def test_confusion_matrix_rows_are_true_labels_and_columns_predictions():
    labels = np.array([0, 0, 1, 2, 2, 2])
    pred = np.array([0, 1, 1, 2, 2, 0])
    reference = np.array([0, 1, 0, 2, 1, 0])
    m = evaluate.metrics(pred, labels, 3, reference)
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    assert m["per_class_accuracy"] == pytest.approx([0.5, 1.0, 2 / 3])
    assert m["accuracy"] == pytest.approx(4 / 6) and m["agreement"] == pytest.approx(4 / 6)


def test_fewer_images_than_one_batch(converted, mnist_test):
    x, _ = mnist_test
    path = converted[0] / "int8.tflite"
    few = harness.Classifier(path, batch_size=256).predict(x[:3])
    assert few.shape == (3, 10)
    np.testing.assert_array_equal(few.argmax(1), harness.naive_predictions(path, x[:3]))


def test_a_tflite_run_takes_a_reference_or_reports_no_agreement(run_cli, converted, tmp_path):
    import shutil

    for mode in ("int8", "float32"):
        shutil.copy(converted[0] / f"{mode}.tflite", tmp_path / f"{mode}.tflite")
    args = (f"--tflite={tmp_path / 'int8.tflite'}", "--max_eval_examples=200", "--latency_runs=10")
    proc = run_cli("evaluate", *args, f"--reference={tmp_path / 'float32.tflite'}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads((tmp_path / "eval_int8.json").read_text())
    assert r["reference"]["file"] == str(tmp_path / "float32.tflite") and 0.9 <= r["agreement"] <= 1
    assert r["vs_reference"]["images"] == 200 and r["tflite_sha256"]
    proc = run_cli("evaluate", *args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads((tmp_path / "eval_int8.json").read_text())
    assert r["agreement"] is None and r["vs_reference"] is None and r["reference"] is None


def test_the_validation_split_is_scored_apart_from_the_test_split(converted, data_root, cache):
    run = converted[0]
    evaluate.evaluate(
        evaluate.EvalConfig(
            modes=("int8",),
            max_eval_examples=100,
            latency_runs=5,
            artifacts=str(run.parent),
            data_root=str(data_root),
            cache_dir=str(cache),
        )
    )
    test_before = (run / "eval_int8.json").read_bytes()
    (r,) = evaluate.evaluate(
        evaluate.EvalConfig(
            modes=("int8",),
            split="validation",
            max_eval_examples=300,
            latency_runs=5,
            artifacts=str(run.parent),
            data_root=str(data_root),
            cache_dir=str(cache),
        )
    )
    assert r["split"] == "validation" and r["examples"] == 300 and (run / "val_int8.json").is_file()
    assert (run / "eval_int8.json").read_bytes() == test_before


def test_eval_dataset_scores_another_datasets_test_split_beside_the_run(converted, data_root, cache):
    run, _ = converted
    ec = evaluate.EvalConfig(
        dataset="mnist",
        model="cnn",
        modes=("int8", "float32"),
        artifacts=str(run.parent),
        eval_dataset="usps",
        max_eval_examples=150,
        data_root=str(data_root),
        cache_dir=str(cache),
    )
    own = {p: p.stat().st_mtime_ns for p in run.glob("eval_*")}
    results = {r["name"]: r for r in evaluate.evaluate(ec)}
    x, y = data.to_numpy(data.load("usps", root=data_root, cache=cache).test, limit=150)
    for name in ("int8", "float32"):
        saved = json.loads((run / f"xeval_usps_{name}.json").read_text())
        assert saved["eval_dataset"] == "usps" and saved["dataset"] == "mnist" and saved["examples"] == 150
        assert "latency_us" not in saved
        pred = np.load(run / f"xeval_usps_{name}.npy")
        direct = harness.Classifier(run / f"{name}.tflite").predict(x).argmax(1)
        np.testing.assert_array_equal(pred, direct)
        assert saved["accuracy"] == pytest.approx((direct == y).mean())
    assert results["float32"]["agreement"] == 1.0 and results["int8"]["vs_reference"]["images"] == 150
    assert {p: p.stat().st_mtime_ns for p in run.glob("eval_*")} == own  # the run's own test results untouched


def test_eval_dataset_through_emnist_digits_on_tfds_mock_data(converted, mock_root, tmp_path):
    """EMNIST cannot be reached here: the whole path runs on tfds' mock data instead."""
    import tensorflow_datasets as tfds

    run, _ = converted
    with tfds.testing.mock_data(num_examples=60):
        results = evaluate.evaluate(
            evaluate.EvalConfig(
                dataset="mnist",
                model="cnn",
                modes=("float32", "int8"),
                artifacts=str(run.parent),
                eval_dataset="emnist_digits",
                data_root=str(mock_root),
                cache_dir=str(tmp_path / "cache"),
            )
        )
    saved = json.loads((run / "xeval_emnist_digits_int8.json").read_text())
    assert saved["examples"] == 60 and saved["eval_dataset"] == "emnist_digits"
    assert saved["data_source"]["description"].startswith("tfds emnist/digits")
    assert {r["name"] for r in results} == {"float32", "int8"}


def test_eval_dataset_must_share_classes_and_shape(converted, tmp_path):
    run, _ = converted
    for other, message in (
        ("cifar10", "a mnist model cannot be scored on it"),
        ("fashion_mnist", "classes or image shape"),
        ("kmnist", "unknown dataset 'kmnist'"),
    ):
        with pytest.raises(TfqError, match=message):
            evaluate.evaluate(
                evaluate.EvalConfig(
                    dataset="mnist", model="cnn", modes=("int8",), artifacts=str(run.parent), eval_dataset=other
                )
            )
    with pytest.raises(TfqError, match="--split=validation does not go with it"):
        evaluate.evaluate(
            evaluate.EvalConfig(
                dataset="mnist",
                model="cnn",
                modes=("int8",),
                artifacts=str(run.parent),
                eval_dataset="usps",
                split="validation",
            )
        )


def test_a_tflite_of_its_own_is_fed_the_input_range_asked_and_records_it(run_cli, converted, mnist_test, tmp_path):
    import shutil

    path = tmp_path / "float32.tflite"
    shutil.copy(converted[0] / "float32.tflite", path)
    args = (f"--tflite={path}", "--max_eval_examples=200", "--latency_runs=5")
    unit = run_cli("evaluate", *args)
    assert unit.returncode == 0, unit.stderr[-2000:]
    unit_accuracy = json.loads((tmp_path / "eval_float32.json").read_text())["accuracy"]
    signed = run_cli("evaluate", *args, "--input_range=-1,1")
    assert signed.returncode == 0, signed.stderr[-2000:]
    r = json.loads((tmp_path / "eval_float32.json").read_text())
    x, y = mnist_test
    expected = float((harness.naive_predictions(path, x[:200], (-1.0, 1.0)) == y[:200]).mean())
    assert r["input_range"] == [-1.0, 1.0] and r["accuracy"] == pytest.approx(expected)
    assert abs(r["accuracy"] - unit_accuracy) > 0.05, (r["accuracy"], unit_accuracy)


def test_a_float_tflite_near_chance_warns_and_names_the_input_range(run_cli, tmp_path):
    """A file that answers the same class for every image scores about 10% on MNIST."""
    from tfq.core.backend import tf

    inputs = keras.Input((28, 28, 1))
    dense = keras.layers.Dense(10, activation="softmax", kernel_initializer="zeros")
    model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    dense.bias.assign(np.arange(10, dtype=np.float32))
    (tmp_path / "constant.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    proc = run_cli(
        "evaluate", f"--tflite={tmp_path / 'constant.tflite'}", "--max_eval_examples=200", "--latency_runs=5"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    warning = [line for line in proc.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warning) == 1 and "constant.tflite" in warning[0] and "near chance" in warning[0], proc.stderr[-2000:]
    assert "0..1" in warning[0] and "--input_range=LOW,HIGH" in warning[0]
