"""tfq.quant.simulate: folding is exact, the weight grids are TFLite's, and 8-bit simulation reproduces
real int8 files (the converter's min/max and ai-edge-quantizer's moving-average calibration)."""

from __future__ import annotations

import numpy as np
import pytest

from tfq import data, models, sweep
from tfq.core.artifacts import TfqError
from tfq.quant import aeq
from tfq.quant.simulate import FAILED, PASSED, Scheme, Simulator, fake_quant_weights
from tfq.runtimes import harness


@pytest.fixture(scope="module")
def mnist(data_root, cache):
    splits = data.load("mnist", root=data_root, cache=cache, max_eval=1000)
    images, labels = data.to_numpy(splits.test)
    return splits, images, labels


@pytest.mark.parametrize("model", ["cnn", "mlp"])
def test_folded_float_chain_computes_the_keras_model(trained, mnist, model):
    splits, images, _ = mnist
    keras_model = models.load_trained(trained / f"mnist_{model}")
    sim = Simulator(keras_model, data.calibration_samples(splits, 50))
    x = data.scale(images[:200]).numpy()
    np.testing.assert_allclose(sim.predict(x, Scheme()), keras_model.predict(x, verbose=0), atol=1e-4)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_weight_grids(bits):
    kernel = np.random.default_rng(0).normal(size=(3, 3, 4, 6)).astype(np.float32)
    sym = fake_quant_weights(kernel, bits, symmetric=True, per_channel=True)
    for c in range(kernel.shape[-1]):
        levels = np.unique(sym[..., c])
        assert len(levels) <= 2**bits - 1  # narrow range: -(2^(b-1)-1) .. 2^(b-1)-1
        step = np.abs(kernel[..., c]).max() / (2 ** (bits - 1) - 1)
        np.testing.assert_allclose(levels / step, np.round(levels / step), atol=1e-3)
        assert np.abs(sym[..., c]).max() == pytest.approx(np.abs(kernel[..., c]).max(), rel=1e-5)
    per_tensor = fake_quant_weights(kernel, bits, symmetric=False, per_channel=False)
    assert len(np.unique(per_tensor)) <= 2**bits
    assert np.abs(per_tensor - kernel).max() <= (kernel.max() - kernel.min()) / (2**bits - 1)


def test_bad_schemes_are_clear_errors():
    with pytest.raises(TfqError, match="simulated bits must be 2 to 16, not 1"):
        Scheme(weight_bits=1)
    with pytest.raises(TfqError, match="activation range 'kl'"):
        Scheme(activation_bits=8, activation_range="kl")


def _real(path, images):
    clf = harness.Classifier(path)
    return clf.predict(images).argmax(1)


@pytest.mark.parametrize(
    "name, scheme",
    [
        ("int8", Scheme(8, True, True, 8, False, "minmax")),
        ("aeq_a8w8", Scheme(8, True, True, 8, False, "ema")),
    ],
)
def test_8bit_simulation_reproduces_the_real_file_where_float_does_not(converted, mnist, name, scheme):
    """An 8-bit file agrees with the float model on almost every test image, so the test images
    alone hardly test the simulation. Blends of two digits sit near the decision boundary, where
    the file parts from float32 often enough to tell a faithful simulation from the float model."""
    run, manifests = converted
    splits, images, labels = mnist
    wide = images.astype(np.uint16)
    blends = [((wide + np.roll(wide, k, axis=0)) // 2).astype(np.uint8) for k in (1, 7, 31)]
    x, y = np.concatenate([images, *blends]), np.concatenate([labels] * 4)
    calibration = data.calibration_samples(splits, manifests[name]["calibration_samples"])  # convert's seed 0
    sim = Simulator(models.load_trained(run), calibration)
    scaled = data.scale(x).numpy()
    simulated, floated = sim.predict(scaled, scheme).argmax(1), sim.predict(scaled, Scheme()).argmax(1)
    real = _real(run / f"{name}.tflite", x)
    check = sweep.compare_with_file(real, simulated, floated, y)
    assert check["informative"] and check["verdict"] == PASSED, check  # within tolerance, better than float
    ignored = sweep.compare_with_file(real, floated, floated, y)  # a "simulation" that ignores the scheme
    assert ignored["informative"] and ignored["verdict"] == FAILED and ignored["passed"] is False, ignored


def test_moving_average_ranges_are_ai_edge_quantizers(converted, mnist):
    """The input tensor's range from ai-edge-quantizer's own calibrator equals the simulation's."""
    from ai_edge_quantizer import quantizer

    run, _ = converted
    splits, _, _ = mnist
    calibration = data.calibration_samples(splits, 40)
    float_blob = (run / "float32.tflite").read_bytes()
    qt = quantizer.Quantizer(bytearray(float_blob), aeq.load(aeq.RECIPES / "aeq_a8w8.json"))
    key, name = aeq._signature(float_blob)  # noqa: SLF001
    qsvs = qt.calibrate({key: [{name: x[None]} for x in calibration]}, num_threads=1)
    sim = Simulator(models.load_trained(run), calibration)
    logits = [k for k in qsvs if "probs" in k and "BiasAdd" in k]
    assert logits  # the Dense output, before softmax
    lo, hi = sim.stats[-1]["ema"]
    assert float(np.min(qsvs[logits[-1]]["min"])) == pytest.approx(lo, rel=1e-4, abs=1e-5)
    assert float(np.max(qsvs[logits[-1]]["max"])) == pytest.approx(hi, rel=1e-4, abs=1e-5)
