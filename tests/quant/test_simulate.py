"""tfq.quant.simulate: folding is exact, the weight grids are TFLite's, and 8-bit simulation reproduces
real int8 files (the converter's min/max and ai-edge-quantizer's moving-average calibration)."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from tfq import data, models, sweep
from tfq.core.artifacts import TfqError
from tfq.quant import aeq
from tfq.quant.simulate import FAILED, PASSED, Scheme, Simulator, channels_last, fake_quant_weights
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


def _graph_model(name: str, seed: int = 0, randomize: bool = True):
    """A models-table graph model at 32x32x3 with random weights and (`randomize`) random BatchNorm
    statistics, so folding is exercised, and logits spread so the int8 softmax rarely ties."""
    from tfq.core.backend import keras, tf

    tf.keras.utils.set_random_seed(seed)
    kwargs = {"resnet8": {"resnet_widths": (8, 16, 16)}, "mobilenet": {"alpha": 0.25}}[name]
    model = models.build(name, (32, 32, 3), 10, **kwargs)
    if not randomize:
        return model
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights(
                [rng.uniform(0.5, 1.5, n), rng.normal(0, 0.1, n), rng.normal(0, 0.1, n), rng.uniform(0.5, 2, n)]
            )
    probs = model.get_layer("probs")
    probs.kernel.assign(probs.kernel * 8.0)
    return model


def _images(n: int, seed: int) -> np.ndarray:
    """Smooth random uint8 images: tinted, upsampled noise (neighbouring pixels correlate as in photographs)."""
    from tfq.core.backend import tf

    rng = np.random.default_rng(seed)
    tint = rng.uniform(0.1, 1.0, (n, 1, 1, 3))  # each image its own colour and brightness
    coarse = (rng.uniform(0, 255, (n, 8, 8, 3)) * tint).astype(np.float32)
    return np.clip(tf.image.resize(coarse, (32, 32)).numpy(), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("name", ["resnet8", "mobilenet"])
def test_folded_float_graph_computes_the_keras_model(name):
    """Residual Add, 1x1 projections, depthwise convolutions, ReLU6 and average pooling: the folded
    graph computes what the Keras model computes."""
    model = _graph_model(name)
    x = data.scale(_images(64, 1)).numpy()
    sim = Simulator(model, x[:32])
    np.testing.assert_allclose(sim.predict(x, Scheme()), model.predict(x, verbose=0), atol=1e-4)


def test_depthwise_weights_get_one_grid_per_channel():
    """A depthwise kernel (h, w, in, multiplier) is quantized per in*multiplier channel, as TFLite's."""
    from tfq.core.backend import keras

    model = _graph_model("mobilenet")
    sim = Simulator(model, data.scale(_images(8, 1)).numpy())
    sim._set_weights(Scheme(weight_bits=3))  # noqa: SLF001
    step = next(s for s in sim.steps if isinstance(s.layer, keras.layers.DepthwiseConv2D))
    kernel = step.layer.depthwise_kernel.numpy()
    h, w, c, m = kernel.shape
    for channel in kernel.reshape(h * w, c * m).T:
        assert len(np.unique(channel)) <= 2**3 - 1
        scale = np.abs(channel).max() / 3
        np.testing.assert_allclose(channel / scale, np.round(channel / scale), atol=1e-3)


@functools.lru_cache(maxsize=2)
def _trained_graph(name: str):
    """A graph model briefly trained on nine classes from colour and brightness (which channel is
    brightest, which third of the mean brightness): real decision boundaries, images near them; with
    its 4,000 held-out images (uint8 and scaled), their labels, and its real int8 file."""
    from tfq import convert
    from tfq.core.backend import keras
    from tfq.quant.modes import get_mode

    model = _graph_model(name, randomize=False)
    images = _images(6000, 2)
    scaled = data.scale(images).numpy()
    means = scaled.mean(axis=(1, 2))
    terciles = np.digitize(means.mean(1), np.quantile(means.mean(1), [1 / 3, 2 / 3]))
    labels = 3 * means.argmax(1) + terciles
    for layer in model.layers:  # BatchNorm's moving statistics must catch up within 250 steps
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(scaled[4000:], labels[4000:], epochs=4, batch_size=32, verbose=0)
    blob, _ = convert.convert_model(model, get_mode("int8"), calibration=scaled[:100])
    return model, images[:4000], scaled[:4000], labels[:4000], blob


@pytest.mark.parametrize("name", ["resnet8", "mobilenet"])
def test_8bit_simulation_of_a_graph_model_reproduces_its_real_int8_file(name):
    """Where the converter's int8 file parts from float32 on a residual or depthwise model, the
    simulation follows the file: on far more of those images than float32 does."""
    model, images, scaled, labels, blob = _trained_graph(name)
    real = harness.Classifier(blob).predict(images).argmax(1)
    sim = Simulator(model, scaled[:100])
    simulated = sim.predict(scaled, Scheme(8, True, True, 8, False, "minmax")).argmax(1)
    floated = sim.predict(scaled, Scheme()).argmax(1)
    # the study-scale tolerance (0.15 points) is about one standard error of the gap at 4,000 images, so
    # the test asks what the simulation is for: where float32 and the file part, it follows the file
    check = sweep.compare_with_file(real, simulated, floated, labels)
    assert check["informative"] and check["agreement"] >= 0.99, check
    assert check["sim_only_agrees"] >= 3 * check["float_only_agrees"] and check["better_than_float_p"] < 1e-3, check
    ignored = sweep.compare_with_file(real, floated, floated, labels)  # a "simulation" that ignores the scheme
    assert ignored["sim_only_agrees"] == ignored["float_only_agrees"] == 0 and ignored["verdict"] == FAILED, ignored


def test_every_activation_grid_of_a_residual_int8_file_is_one_the_simulation_calibrated():
    """Each int8 activation tensor of the converter's ResNet-8 file (scale, zero point) is one of the
    simulation's min/max grids, the ADD inputs included: the converter's calibrator records the input of
    an ADD computed last, and read only by it, after the ADD has run (`Simulator._widen_add_inputs`)."""
    from tfq.runtimes import flatbuffer

    model, _, scaled, _, blob = _trained_graph("resnet8")
    sim = Simulator(model, scaled[:100])
    grids = []
    for k in range(len(sim.stats)):
        lo, hi = sim._range(k, 8, False, "minmax")  # noqa: SLF001
        grids.append(((hi - lo) / 255, round(-128 - lo / ((hi - lo) / 255))))
    fb = flatbuffer.read(blob)
    real = {
        (t.scales[0], t.zero_points[0])
        for t in fb.tensors
        if t.dtype == "int8" and not t.constant and len(t.scales) == 1 and t.scales[0] != 1 / 256  # not softmax's
    }
    assert len(real) >= 12
    unmatched = [r for r in real if not any(abs(r[0] - g[0]) <= 1e-4 * r[0] and abs(r[1] - g[1]) <= 1 for g in grids)]
    assert not unmatched, (unmatched, grids)


@pytest.mark.parametrize(
    "layer, message",
    [
        ("separable", "simulation does not model SeparableConv2D layers (sep)"),
        ("nested", "simulation takes a flat model; inner is a nested model"),
    ],
)
def test_layers_the_simulation_cannot_model_are_named_in_one_line(layer, message):
    from tfq.core.backend import keras

    inputs = keras.Input((8, 8, 3))
    if layer == "separable":
        x = keras.layers.SeparableConv2D(4, 3, name="sep")(inputs)
    else:
        x = keras.Sequential([keras.layers.Conv2D(4, 3)], name="inner")(inputs)
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(x))
    with pytest.raises(TfqError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Simulator(keras.Model(inputs, outputs), np.zeros((2, 8, 8, 3), np.float32))


def test_four_bit_schemes_can_hold_depthwise_kernels_as_ai_edge_quantizers_files_do():
    """ai-edge-quantizer has no int4 depthwise kernel: its a8w4 files hold depthwise weights in int8 and its
    weight-only w4 files leave them float, while the other kernels take 4 bits."""
    from tfq.core.backend import keras

    model = _graph_model("mobilenet")
    sim = Simulator(model, data.scale(_images(8, 1)).numpy())
    depthwise = next(s for s in sim.steps if isinstance(s.layer, keras.layers.DepthwiseConv2D))
    pointwise = next(s for s in sim.steps if type(s.layer) is keras.layers.Conv2D)

    def on_grid(channels, bits) -> bool:  # symmetric narrow range: multiples of max|w| / (2^(b-1) - 1)
        return all(
            np.allclose(
                c / (np.abs(c).max() / (2 ** (bits - 1) - 1)),
                np.round(c / (np.abs(c).max() / (2 ** (bits - 1) - 1))),
                atol=1e-3,
            )
            for c in channels
        )

    for held, bits in (("int8", 8), ("float", None), ("same", 4)):
        sim._set_weights(Scheme(weight_bits=4, depthwise=held))  # noqa: SLF001
        dw = channels_of(depthwise.layer, depthwise.layer.depthwise_kernel.numpy())
        assert on_grid(channels_of(pointwise.layer, pointwise.layer.kernel.numpy()), 4)
        if bits is None:
            np.testing.assert_array_equal(depthwise.layer.depthwise_kernel.numpy(), sim.kernels[id(depthwise)])
        else:
            assert on_grid(dw, bits) and (bits == 4 or not on_grid(dw, 4))
    assert Scheme(weight_bits=4, depthwise="int8").name == "w4sc_dwint8"


def channels_of(layer, kernel: np.ndarray) -> list[np.ndarray]:
    """Each quantized channel's values (a depthwise kernel's in*multiplier channels: TFLite's layout)."""
    flat = channels_last(layer, kernel)
    return list(flat.reshape(-1, flat.shape[-1]).T)
