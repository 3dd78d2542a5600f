"""tfq.models: shapes, parameter and MAC counts, layers that quantize and delegate well."""

import numpy as np
import pytest

from tfq import models
from tfq.core.artifacts import TfqError
from tfq.core.backend import keras


@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3)])
@pytest.mark.parametrize("name", list(models.MODELS))
def test_builders_map_images_to_class_probabilities(name, shape):
    model = models.build(name, shape, 10)
    assert isinstance(model, keras.Model) and model.input_shape == (None, *shape)
    probs = model.predict(np.random.default_rng(0).random((3, *shape), np.float32), verbose=0)
    assert probs.shape == (3, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_mlp_parameter_and_mac_counts_match_its_layers():
    model = models.build("mlp", (28, 28, 1), 10, hidden=(512, 256))
    dense_macs = 784 * 512 + 512 * 256 + 256 * 10
    assert model.count_params() == dense_macs + 512 + 256 + 10
    assert models.macs(model) == dense_macs


def test_cnn_counts_follow_widths_and_stay_microcontroller_sized():
    model = models.build("cnn", (28, 28, 1), 10, widths=(8, 16), convs_per_stage=1)
    convs = 9 * 1 * 8 + 9 * 8 * 16
    bn = 4 * (8 + 16)
    assert model.count_params() == convs + bn + 16 * 10 + 10
    assert models.macs(model) == 28 * 28 * 9 * 1 * 8 + 14 * 14 * 9 * 8 * 16 + 16 * 10
    default = models.build("cnn", (32, 32, 3), 10)
    assert default.count_params() < 300_000  # under 300 KB of int8 weights


def test_resnet8_is_mlperf_tinys_reference_in_parameters_macs_and_layers():
    """mlcommons/tiny's ResNet-8 on CIFAR-10: 78,666 parameters, 12.5 M multiply-accumulates; 1x1
    projection shortcuts on the two strided stacks only, each residual an Add then ReLU."""
    model = models.build("resnet8", (32, 32, 3), 10)
    assert model.count_params() == 78_666
    assert models.macs(model) == 12_501_632
    names = [layer.name for layer in model.layers]
    assert [n for n in names if n.endswith("_shortcut")] == ["stack2_shortcut", "stack3_shortcut"]
    assert sum(isinstance(layer, keras.layers.Add) for layer in model.layers) == 3
    assert model.get_layer("stack3_add").output_shape == (None, 8, 8, 64)
    for s in (1, 2, 3):  # Add then ReLU; the shortcut (identity or 1x1 projection) carries the stack's input
        relu, add = model.get_layer(f"stack{s}_relu"), model.get_layer(f"stack{s}_add")
        assert relu.input is add.output
        before = model.get_layer("stem_relu" if s == 1 else f"stack{s - 1}_relu").output
        if s == 1:
            shortcut = before
        else:
            assert model.get_layer(f"stack{s}_shortcut").input is before
            shortcut = model.get_layer(f"stack{s}_shortcut").output
        assert add.input[0] is shortcut and add.input[1] is model.get_layer(f"stack{s}_conv2_bn").output
    narrow = models.build("resnet8", (28, 28, 1), 10, resnet_widths=(8, 16, 32))
    assert narrow.get_layer("stack3_conv2").filters == 32 and narrow.output_shape == (None, 10)


def test_mobilenet_is_depthwise_separable_and_its_macs_count_depthwise_per_channel():
    default = models.build("mobilenet", (32, 32, 3), 10)
    assert (default.count_params(), models.macs(default)) == (215_146, 7_307_776)  # docs/models.md's
    assert default.get_layer("pw8").output_shape == (None, 4, 4, 256)  # three stride-2 blocks: 32 -> 4
    model = models.build("mobilenet", (32, 32, 3), 10, alpha=0.25)
    depthwise = [layer for layer in model.layers if isinstance(layer, keras.layers.DepthwiseConv2D)]
    assert len(depthwise) == len(models.MOBILENET_BLOCKS)
    assert all(isinstance(model.get_layer(f"pw{b}"), keras.layers.Conv2D) for b in range(1, len(depthwise) + 1))
    assert {float(layer.max_value) for layer in model.layers if isinstance(layer, keras.layers.ReLU)} == {6.0}
    assert model.get_layer("pw8").filters == 128  # 512 x 0.25
    dw1 = model.get_layer("dw1")  # 8 channels at 32x32: 9 MACs per output value, not 9 x channels
    one = keras.Model(model.input, dw1.output)
    stem = 32 * 32 * 9 * 3 * 8
    assert models.macs(one) == stem + 32 * 32 * 8 * 9


def test_models_avoid_layers_that_split_the_delegated_graph():
    for name in models.MODELS:
        kinds = {type(layer).__name__ for layer in models.build(name, (28, 28, 1), 10).layers}
        assert "Reshape" not in kinds and "Lambda" not in kinds


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(TfqError, match="mlp, cnn"):
        models.get("resnet")
