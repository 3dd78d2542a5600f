"""tfq.qat: QAT fine-tuning, its int8 flatbuffer and the equally fine-tuned PTQ control."""

import json
import re

import numpy as np
import pytest

from tests.conftest import error_lines
from tfq import data, qat
from tfq.core import artifacts
from tfq.core.artifacts import TfqError
from tfq.core.backend import keras
from tfq.runtimes import flatbuffer


@pytest.fixture(scope="module")
def qat_result(trained, data_root, cache):
    return qat.qat(
        qat.QatConfig(
            dataset="mnist",
            model="cnn",
            epochs=1,
            max_train_examples=1000,
            max_eval_examples=300,
            num_calibration=50,
            artifacts=str(trained),
            data_root=str(data_root),
            cache_dir=str(cache),
        )
    )


def test_qat_int8_is_integer_only_with_the_int8_io_contract(qat_result, trained):
    run = trained / "mnist_cnn"
    fb = flatbuffer.read(run / "qat_int8.tflite")
    assert fb.dtypes("all") <= {"int8", "int32"} and fb.float_ops() == []
    inp, out = fb.tensors[fb.inputs[0]], fb.tensors[fb.outputs[0]]
    assert inp.dtype == "int8" and out.dtype == "int8"
    assert inp.scales[0] == pytest.approx(1 / 255, rel=0.05)  # learned range of [0, 1] inputs
    assert json.loads((run / "qat_int8.json").read_text())["size_bytes"] == fb.size_bytes


def test_qat_records_an_equally_trained_control(qat_result):
    acc = qat_result["accuracy"]
    assert set(acc) == {"float_before", "float_finetuned", "ptq_int8_of_finetuned", "qat_int8"}
    assert all(0.5 < v <= 1.0 for v in acc.values())  # chance is 0.1
    assert qat_result["qat_gain_over_ptq"] == pytest.approx(acc["qat_int8"] - acc["ptq_int8_of_finetuned"])
    assert len(qat_result["qat"]["history"]["loss"]) == len(qat_result["control"]["history"]["loss"]) == 1
    assert qat_result["test_examples"] == 300


def test_the_saved_qat_model_reloads(qat_result, trained):
    model = qat.load_qat_model(trained / "mnist_cnn" / qat.QAT_MODEL_FILE)
    assert any("quant" in type(layer).__name__.lower() for layer in model.layers)


def test_qat_without_a_trained_model_names_the_command(run_cli, tmp_path):
    proc = run_cli("qat", "--dataset=cifar10", "--model=mlp", f"--artifacts={tmp_path}", timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "python -m tfq.train --dataset=cifar10 --model=mlp" in error_lines(proc.stderr)[0]


@pytest.mark.parametrize(
    "args, message",
    [
        (("--batch_size=0",), "--batch_size=0: must be at least 1"),
        (("--num_calibration=0",), "--num_calibration=0: must be at least 1"),
        (("--learning_rate=-1",), "--learning_rate=-1.0: must be above 0"),
        (("--artifacts=/proc/nope",), "cannot write to /proc/nope/mnist_cnn"),
    ],
)
def test_every_flag_is_checked_before_fine_tuning(with_flags, trained, args, message, capsys):
    """Against a real trained model: a bad flag used only by the control still stops QAT up front."""
    before = sorted(p.name for p in (trained / "mnist_cnn").iterdir())
    with pytest.raises(TfqError, match=re.escape(message)):
        with_flags(qat.QatConfig, qat.qat, f"--artifacts={trained}", "--max_train_examples=500", *args)
    assert "Epoch" not in capsys.readouterr().out
    assert sorted(p.name for p in (trained / "mnist_cnn").iterdir()) == before


def test_both_arms_see_the_same_batches_and_dropout_seeds(data_root, cache, monkeypatch, tmp_path):
    """The control trained on another order and other crops when one pipeline served both fits:
    record the very datasets each arm's fit is handed, batch by batch, and each arm's dropout seed."""
    import numpy as np

    from tfq import train
    from tfq.models import fitting

    handed, seeds = [], []
    real_epoch, real_fit = data.training_epoch, fitting.fit_epochs

    def recording_epoch(*args, **kw):
        ds = real_epoch(*args, **kw)
        handed.append([x.numpy() for x, _ in ds])  # the same object is iterated again by fit: no reshuffle
        return ds

    def recording_fit(model, *args, **kw):
        seeds.append(
            [
                layer._random_generator._seed
                for layer in model.submodules  # noqa: SLF001
                if isinstance(layer, keras.layers.Dropout)
            ]
        )
        return real_fit(model, *args, **kw)

    monkeypatch.setattr(data, "training_epoch", recording_epoch)
    monkeypatch.setattr(qat, "fit_epochs", recording_fit)
    root = tmp_path / "a"
    train.train(
        train.TrainConfig(
            dataset="cifar10",
            model="mlp",
            mlp_hidden=(16,),
            epochs=1,
            max_train_examples=256,
            max_eval_examples=64,
            artifacts=str(root),
            data_root=str(data_root),
            cache_dir=str(cache),
        )
    )
    handed.clear()
    qat.qat(
        qat.QatConfig(
            dataset="cifar10",
            model="mlp",
            epochs=2,
            batch_size=64,
            max_train_examples=256,
            max_eval_examples=64,
            num_calibration=16,
            artifacts=str(root),
            data_root=str(data_root),
            cache_dir=str(cache),
        )
    )
    assert len(handed) == 4  # QAT epochs 1 and 2, then the control's
    for a, b in zip(handed[:2], handed[2:]):
        assert len(a) == len(b) == 4
        for xa, xb in zip(a, b):
            np.testing.assert_array_equal(xa, xb)
    assert not np.array_equal(handed[0][0], handed[1][0])  # epoch 2 is reshuffled and re-augmented
    assert len(seeds) == 2 and seeds[0] == seeds[1] and len(seeds[0]) == 1


def test_qat_records_paired_tests_on_the_same_images(qat_result):
    for key in ("qat_vs_ptq", "qat_vs_float_finetuned"):
        t = qat_result[key]
        assert t["images"] == 300 and t["only_reference_right"] + t["only_other_right"] <= 300
    acc = qat_result["accuracy"]  # the counts and the two accuracies come from the same 300 images
    t = qat_result["qat_vs_ptq"]
    assert t["only_other_right"] - t["only_reference_right"] == round(
        300 * (acc["qat_int8"] - acc["ptq_int8_of_finetuned"])
    )


def test_qat_refuses_a_flatbuffer_with_float_ops(qat_result, trained, monkeypatch, data_root, cache):
    """TFLITE_BUILTINS lets unquantized layers fall back to float; qat() must fail, not record it."""
    from tfq import convert, models
    from tfq.quant import modes

    real = convert.convert_model
    float_model = models.load_trained(trained / "mnist_cnn")

    def float_for_qat(model, mode, **kw):  # a converter that left every op in float
        return real(float_model, modes.MODES["float32"]) if mode.name == "qat_int8" else real(model, mode, **kw)

    monkeypatch.setattr(convert, "convert_model", float_for_qat)
    before = (trained / "mnist_cnn" / "qat_int8.tflite").read_bytes()
    with pytest.raises(
        TfqError, match="qat_int8.tflite: --mode=qat_int8 promises int8 input and output, but the file takes float32"
    ):
        qat.qat(
            qat.QatConfig(
                dataset="mnist",
                model="cnn",
                epochs=1,
                max_train_examples=200,
                max_eval_examples=50,
                num_calibration=20,
                artifacts=str(trained),
                data_root=str(data_root),
                cache_dir=str(cache),
            )
        )
    assert (trained / "mnist_cnn" / "qat_int8.tflite").read_bytes() == before  # nothing replaced


def test_the_same_file_alone_or_after_other_work_in_the_process(trained, run_cli, tmp_path, data_root, cache):
    """Seeds and determinism are set at the start of the stage: what ran before cannot leak in."""
    import shutil

    from tfq import train
    from tfq.core import artifacts

    for name in ("after_training", "alone"):
        (tmp_path / name / "mnist_cnn").mkdir(parents=True)
        shutil.copy(trained / "mnist_cnn" / "model.keras", tmp_path / name / "mnist_cnn" / "model.keras")
    small = dict(epochs=1, max_train_examples=400, max_eval_examples=100, num_calibration=20, seed=0)
    train.train(
        train.TrainConfig(
            model="mlp",
            epochs=1,
            max_train_examples=300,
            max_eval_examples=50,
            seed=11,
            artifacts=str(tmp_path / "other"),
            data_root=str(data_root),
            cache_dir=str(cache),
        )
    )
    qat.qat(
        qat.QatConfig(
            dataset="mnist",
            model="cnn",
            artifacts=str(tmp_path / "after_training"),
            data_root=str(data_root),
            cache_dir=str(cache),
            **small,
        )
    )
    proc = run_cli("qat", f"--artifacts={tmp_path / 'alone'}", *(f"--{k}={v}" for k, v in small.items()))
    assert proc.returncode == 0, proc.stderr[-2000:]
    digests = {
        name: artifacts.sha256(tmp_path / name / "mnist_cnn" / "qat_int8.tflite")
        for name in ("after_training", "alone")
    }
    assert digests["after_training"] == digests["alone"]


@pytest.fixture(scope="module")
def low_bit_result(trained, converted, data_root, cache):  # converted: the run's float32.tflite is there
    qat.qat(
        qat.QatConfig(
            dataset="mnist",
            model="cnn",
            epochs=1,
            max_train_examples=1000,
            max_eval_examples=300,
            num_calibration=50,
            low_bit=("w4a8", "w4a4"),
            low_bit_epochs=2,
            artifacts=str(trained),
            data_root=str(data_root),
            cache_dir=str(cache),
        )
    )
    return json.loads((trained / "mnist_cnn" / qat.LOW_BIT_JSON).read_text())


def test_low_bit_qat_against_ptq_at_the_same_widths(low_bit_result, trained):
    r = low_bit_result
    assert set(r["schemes"]) == {"w4a8", "w4a4"} and r["epochs"] == 2
    assert len(r["control_history"]["loss"]) == 2 and r["control_time_s"] > 0  # its own control, not the int8 one
    for e in r["schemes"].values():
        assert len(e["history"]["loss"]) == 2
        assert e["qat_vs_ptq"]["images"] == e["qat_vs_float_finetuned"]["images"] == r["test_examples"] == 300
        assert 0.5 < e["accuracy"]["qat_keras"] <= 1 and 0.1 < e["accuracy"]["ptq_simulated"] <= 1
    shipped = r["schemes"]["w4a8"]["shipped"]
    assert shipped["weight_dtypes"] == ["int32", "int4"]
    # the a8w4 file computes with the QAT model's own 4-bit weights: it keeps its predictions
    assert shipped["agreement_with_qat_keras"] >= 0.97
    # like with like: the shipped file and the PTQ file each against the run's float32 file
    float_file = trained / "mnist_cnn" / "float32.tflite"
    assert shipped["float32_sha256"] == artifacts.sha256(float_file)
    e = r["schemes"]["w4a8"]
    for key, acc in (
        ("vs_float32_file", e["accuracy"]["qat_shipped_a8w4"]),
        ("ptq_file_vs_float32_file", e["accuracy"]["ptq_a8w4_file"]),
    ):
        t = shipped[key]
        assert t["images"] == 300 and t["ci95_pts"][0] <= t["delta_pts"] <= t["ci95_pts"][1]
        float_acc = acc - t["delta_pts"] / 100  # the same float32 file under both
        assert 0.5 < float_acc <= 1
    assert shipped["vs_float32_file"]["delta_pts"] - shipped["ptq_file_vs_float32_file"]["delta_pts"] == pytest.approx(
        shipped["vs_ptq_file"]["delta_pts"]
    )
    assert "shipped" not in r["schemes"]["w4a4"]  # no kernel takes 4-bit activations


def _four_bit_twin(float_model: keras.Model) -> keras.Model:
    """The float twin of `float_model`'s w4a8 QAT model, checked: every kernel on its own 4-bit grid
    (per channel for conv, per tensor for Dense) and every BatchNorm statistic kept."""
    twin = qat.float_twin(qat._n_bit_model(float_model, 4, 8), float_model, 4)
    for layer in twin.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kernel = layer.kernel.numpy().reshape(-1, layer.filters)
            assert max(len(set(kernel[:, c])) for c in range(layer.filters)) <= 15  # 4 bits, narrow range
        elif isinstance(layer, keras.layers.Dense):
            assert len(set(layer.kernel.numpy().ravel())) <= 15  # one grid for the whole tensor
    bn = [layer.name for layer in twin.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert bn and all(
        (twin.get_layer(n).moving_variance.numpy() == float_model.get_layer(n).moving_variance.numpy()).all()
        for n in bn
    )
    return twin


def test_float_twin_holds_the_qat_weights_on_their_own_grids(trained):
    from tfq import models

    _four_bit_twin(models.load_trained(trained / "mnist_cnn"))


def test_qat_from_the_first_step(run_cli, trained):
    proc = run_cli("qat_scratch", "--model=mlp", "--scheme=int8", f"--artifacts={trained}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads((trained / "mnist_mlp" / "qat_scratch_int8.json").read_text())
    assert r["train_config"]["epochs"] == 2 and r["train_config"]["max_train_examples"] == 3000  # the float run's
    assert {"float32", "qat_from_scratch_keras", "qat_from_scratch_int8_file"} <= set(r["accuracy"])
    assert r["accuracy"]["qat_from_scratch_int8_file"] > 0.8
    assert flatbuffer.read(trained / "mnist_mlp" / "qat_scratch_int8.tflite").float_ops() == []
    # the CNN's short float run needed its BatchNorm statistics re-estimated: no fair comparison
    proc = run_cli("qat_scratch", "--model=cnn", f"--artifacts={trained}")
    assert proc.returncode == 1 and "too short for its BatchNorm statistics" in error_lines(proc.stderr)[0]


def test_the_float_twin_of_a_4_bit_qat_model_holds_its_weights_on_their_own_grids(tiny):
    twin = _four_bit_twin(tiny.model)
    assert not np.array_equal(twin.get_layer("conv").kernel.numpy(), tiny.model.get_layer("conv").kernel.numpy())


def test_the_float_twin_rounds_depthwise_kernels_to_the_grid_qat_trained_them_on():
    # tfmot quantizes a DepthwiseConv2D's `depthwise_kernel` with one range (its last axis is the
    # depth multiplier); a twin that left it at the latent floats shipped weights QAT never used
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.DepthwiseConv2D(3, use_bias=False, name="dw"),
            keras.layers.BatchNormalization(name="dw_bn"),
            keras.layers.ReLU(6.0, name="dw_relu"),
            keras.layers.Conv2D(8, 1, name="pw"),
            keras.layers.GlobalAveragePooling2D(name="pool"),
            keras.layers.Dense(10, activation="softmax", name="probs"),
        ]
    )
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 1, (32, 16, 16, 3)).astype(np.float32), rng.integers(0, 10, 32)
    qat_model = qat._n_bit_model(model, 4, 8)
    qat_model.compile("adam", "sparse_categorical_crossentropy")
    qat_model.fit(x, y, batch_size=32, epochs=1, verbose=0)  # one step sets the kernels' ranges
    trained = {v.name: v.numpy() for v in qat_model.weights}
    twin = qat.float_twin(qat_model, model, 4)
    kernel, latent = twin.get_layer("dw").depthwise_kernel.numpy(), trained["dw/depthwise_kernel:0"]
    lo, hi = trained["quant_dw/depthwise_kernel_min:0"], trained["quant_dw/depthwise_kernel_max:0"]
    assert lo.shape == (1,) and 4 < len(np.unique(kernel)) <= 15  # one 4-bit narrow-range grid
    assert np.abs(kernel - latent).max() <= (hi - lo)[0] / 14 / 2 + 1e-6
    assert np.abs(twin.predict(x, verbose=0) - qat_model.predict(x, verbose=0)).max() < 0.01


def test_a_low_bit_scheme_tfmot_cannot_apply_is_recorded_with_its_reason_and_the_int8_qat_is_kept(tiny, monkeypatch):
    def refuse(model, weight_bits, activation_bits):
        raise artifacts.NotPossible(f"tfmot cannot quantize the model at w{weight_bits}a{activation_bits}: layer odd")

    monkeypatch.setattr(qat, "_n_bit_model", refuse)
    cfg = qat.QatConfig(dataset="mnist", model="cnn", low_bit=("w4a8", "w4a4"), input_range=(0.0, 1.0))
    correct = tiny.model.predict(tiny.images / 255.0, verbose=0).argmax(-1) == tiny.labels
    out = qat._low_bit(cfg, tiny.model, tiny.model, correct, tiny.calibration, None, tiny.images, tiny.labels)
    assert out["float_finetuned"] == 1.0 and out["schemes"] == {
        "w4a8": {
            "weight_bits": 4,
            "activation_bits": 8,
            "not_possible": "tfmot cannot quantize the model at w4a8: layer odd",
        },
        "w4a4": {
            "weight_bits": 4,
            "activation_bits": 4,
            "not_possible": "tfmot cannot quantize the model at w4a4: layer odd",
        },
    }
