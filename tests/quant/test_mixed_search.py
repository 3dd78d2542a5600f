"""tfq.quant.mixed_search: weight layers found in the float file, recipes per layer, what the file holds read
back, the ladder per objective, and the bounded greedy search (on real files and on a model of one)."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

from tfq import data
from tfq.core.artifacts import TfqError
from tfq.quant import aeq, mixed_search
from tfq.runtimes import flatbuffer

CNN_LAYERS = ["conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "probs"]


@pytest.fixture(scope="module")
def float_cnn(converted):
    run, _ = converted
    return (run / "float32.tflite").read_bytes()


def test_layers_are_the_weight_ops_with_their_keras_names_and_sizes(float_cnn):
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils as u

    found = mixed_search.layers(float_cnn)
    assert [layer.name for layer in found] == CNN_LAYERS
    assert [layer.op for layer in found] == ["CONV_2D"] * 6 + ["FULLY_CONNECTED"]
    # 3x3 convolutions, 1 -> 32 -> 32 -> 64 -> 64 -> 128 -> 128 channels, then 128 -> 10
    assert [layer.params for layer in found] == [
        9 * 32,
        9 * 32 * 32,
        9 * 32 * 64,
        9 * 64 * 64,
        9 * 64 * 128,
        9 * 128 * 128,
        128 * 10,
    ]
    assert found[0].macs == 28 * 28 * 32 * 9 and found[-1].macs == 1280
    graph = u.read_model(float_cnn).subgraphs[0]
    scopes = [u.get_op_scope(op, graph.tensors) for op in graph.operators]
    for layer in found:  # each layer's rule matches its own op and no other
        rule = mixed_search.recipe({**dict.fromkeys(CNN_LAYERS, "int8"), layer.name: "a16w8"}, found)[-1]
        assert [s for s in scopes if re.search(rule["regex"], s)] == [layer.scope]


def test_a_uniform_assignment_is_the_uniform_recipe(float_cnn):
    found = mixed_search.layers(float_cnn)
    ops = {layer.op for layer in found}
    for rung in ("w4", "int8", "a16w8"):
        # the rung's recipe file, less its rules for ops the CNN lacks (a8w4's int8 DEPTHWISE_CONV_2D rule)
        applies = [r for r in aeq.load(aeq.RECIPES / mixed_search.RUNG[rung].recipe) if r["operation"] in ("*", *ops)]
        assert mixed_search.recipe(dict.fromkeys(CNN_LAYERS, rung), found) == applies
    assert mixed_search.recipe(dict.fromkeys(CNN_LAYERS, "float"), found) == []
    rules = mixed_search.recipe({**dict.fromkeys(CNN_LAYERS, "int8"), "probs": "float", "conv1_1": "a16w8"}, found)
    assert [r["regex"] for r in rules][0] == ".*" and len(rules) == 3
    assert rules[1]["op_config"]["activation_tensor_config"]["num_bits"] == 16
    assert rules[2]["algorithm_key"] == aeq.NO_QUANTIZE


def test_every_layer_holds_its_rung_in_a_real_mixed_file(float_cnn, data_root, cache):
    found = mixed_search.layers(float_cnn)
    splits = data.load("mnist", root=data_root, cache=cache, max_eval=64)
    images, labels = data.to_numpy(splits.val)
    scorer = mixed_search.Scorer(float_cnn, found, data.calibration_samples(splits, 20), images, labels)
    assignment = dict(zip(CNN_LAYERS, ["float", "w4", "int8", "a16w8", "w4", "int8", "float"]))
    blob = scorer.build(assignment)
    held = mixed_search.read_back(blob, found, "mixed.tflite")
    assert {name: v["rung"] for name, v in held.items()} == assignment
    assert held["conv1_2"]["weights"] == "int4" and held["conv2_2"]["input"] == "int16"
    assert {"QUANTIZE", "DEQUANTIZE"} <= set(flatbuffer.read(blob).op_counts())  # the precision boundaries
    assert scorer.correct(blob).shape == (64,) and scorer.correct(blob).mean() > 0.5  # LiteRT ran it
    before = scorer.evaluations
    scorer.build(dict(assignment)), scorer.correct(scorer.build(dict(assignment)))
    assert scorer.evaluations == before  # made and scored once
    with pytest.raises(TfqError, match="mixed.tflite: no CONV_2D writes conv1_1's output"):
        mixed_search.read_back(blob, [dataclasses.replace(found[0], output="another model's tensor")], "mixed.tflite")
    # a rule the quantizer skipped shows up as a layer that does not hold its rung
    with pytest.raises(
        TfqError, match="did not apply the recipe: conv1_1 holds float32 weights / float32 activations, not int8"
    ):
        mixed_search.check(blob, {**assignment, "conv1_1": "int8"}, found, "mixed.tflite")


def test_the_ladder_keeps_only_rungs_that_buy_accuracy_with_cost():
    size = {"w4": 162_024, "int8": 306_032, "a16w8": 307_904, "float": 1_157_900}
    latency = {"w4": 344, "int8": 90, "a16w8": 12_128, "float": 314}  # measured, cifar10 cnn
    assert mixed_search.ladder(size) == ["w4", "int8", "a16w8", "float"]
    assert mixed_search.ladder(latency) == ["int8", "float"]


class _Model:
    """A stand-in scorer: each layer's rung costs a known drop, and the drops add up."""

    def __init__(self, layers, drops, sizes):
        self.layers, self.drops, self.sizes, self.seen = layers, drops, sizes, set()

    @property
    def evaluations(self):
        return len(self.seen)

    def drop_pts(self, assignment, default=None):
        self.seen.add(tuple(sorted(assignment.items())))
        size = sum(
            self.sizes[layer.name] * mixed_search.RUNG[assignment[layer.name]].weight_bits for layer in self.layers
        )
        return sum(self.drops[n][r] for n, r in assignment.items()), b"x" * size


def _sensitivity(layers, drops):
    zero = {"size_bytes": 0, "latency_us": 0}
    return {
        "rungs": {
            "w4": {**zero, "size_bytes": 1},
            "int8": {**zero, "size_bytes": 2},
            "a16w8": {**zero, "size_bytes": 3},
            "float": {**zero, "size_bytes": 8},
        },
        "layers": [
            {
                "name": layer.name,
                "schemes": {s: {"only_float_recovery_pts": drops[layer.name][s]} for s in ("w4", "int8")},
            }
            for layer in layers
        ],
    }


def test_the_search_meets_the_budget_with_the_fewest_bytes_it_can_find_and_a_bounded_number_of_files():
    layers = [mixed_search.Layer(n, "CONV_2D", n, n, p, p) for n, p in (("a", 100), ("b", 1000), ("c", 10000))]
    # "a" is tiny and sensitive, "c" is big and robust: a 1-point budget keeps only "a" above 4 bits
    drops = {
        "a": {"w4": 3.0, "int8": 0.2, "a16w8": 0.1, "float": 0.0},
        "b": {"w4": 0.5, "int8": 0.1, "a16w8": 0.05, "float": 0.0},
        "c": {"w4": 0.3, "int8": 0.1, "a16w8": 0.05, "float": 0.0},
    }
    model = _Model(layers, drops, {layer.name: layer.params for layer in layers})
    sens = _sensitivity(layers, drops)
    found = mixed_search.search(model, sens, 1.0, "size")
    assert found["assignment"] == {"a": "int8", "b": "w4", "c": "w4"}
    assert found["path"][0]["action"] == "start: every layer w4" and not found["path"][0]["within_budget"]
    assert model.drop_pts(found["assignment"])[0] <= 1.0
    bound = 2 * len(layers) * (len(mixed_search.RUNGS) - 1) + len(layers) + 1
    assert len(found["path"]) <= bound and found["files_scored"] == model.evaluations
    # a budget of zero with these drops leaves every layer in float, the one assignment that meets it
    zero = mixed_search.search(_Model(layers, drops, {layer.name: layer.params for layer in layers}), sens, 0.0, "size")
    assert zero["assignment"] == dict.fromkeys("abc", "float")
    assert len(zero["path"]) <= bound
    # a budget the uniform 4-bit model meets: nothing to raise
    loose = mixed_search.search(
        _Model(layers, drops, {layer.name: layer.params for layer in layers}), sens, 4.0, "size"
    )
    assert loose["assignment"] == dict.fromkeys("abc", "w4") and len(loose["path"]) == 1
    # a sensitivity that ranks "b" first misleads the climb; the backward pass undoes that raise
    misled = _sensitivity(layers, {**drops, "a": {"w4": 0.1, "int8": 0.1}, "b": {"w4": 5.0, "int8": 0.1}})
    found = mixed_search.search(
        _Model(layers, drops, {layer.name: layer.params for layer in layers}), misled, 1.0, "size"
    )
    assert [step["action"] for step in found["path"]] == [
        "start: every layer w4",
        "raise b w4 -> int8",
        "raise a w4 -> int8",
        "try a int8 -> w4",
        "try b int8 -> w4",
    ]
    assert found["assignment"] == {"a": "int8", "b": "w4", "c": "w4"}
    with pytest.raises(TfqError, match="--objective=speed"):
        mixed_search.search(model, sens, 1.0, "speed")


def test_predictions_of_a_file_with_int16_activations_match_in_one_process_and_many(float_cnn, data_root, cache):
    from tfq.runtimes.harness import Classifier

    found = mixed_search.layers(float_cnn)
    splits = data.load("mnist", root=data_root, cache=cache, max_eval=300)
    images, labels = data.to_numpy(splits.val)
    scorer = mixed_search.Scorer(float_cnn, found, data.calibration_samples(splits, 20), images, labels)
    blob = scorer.build({**dict.fromkeys(CNN_LAYERS, "int8"), "conv2_1": "a16w8"})
    one = Classifier(blob).predict(images).argmax(1)
    np.testing.assert_array_equal(mixed_search.predict(blob, images), one)
