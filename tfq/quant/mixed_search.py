"""Mixed precision: one precision per layer, the smallest (or fastest) file within an accuracy budget.

The ladder of precisions a layer can take is `RUNGS` (data: each rung is the rule of one of
`tfq/quant/recipes/`): 4-bit weights, int8, int16 activations with int8 weights, float. A mixed model is
an assignment of one rung per weight layer (convolution or dense), made into one ai-edge-quantizer
recipe (`recipe`) and so into one real flatbuffer; ops without weights (pooling, softmax) take
the lowest rung in the assignment. Every candidate is calibrated from one min/max calibration of
the float model (the TFLite converter's rule; see `tfq.quant.aeq`) and scored on the validation split.

The search (`search`), bounded by 2 L (R - 1) + L + 1 validation scores for L layers and R rungs,
never by the R^L combinations:
1. The ladder for the objective: the rungs whose uniform model is cheaper than every more precise
   one (size: bytes of the file; latency: its measured batch-1 latency), so each step up buys
   accuracy with cost. On XNNPACK int4 convolutions are slower than int8, so the latency ladder
   drops 4-bit weights.
2. Start with every layer on the cheapest rung. While the validation drop against float32 is over
   the budget, raise one layer by one rung: among the layers on the lowest rung in use, the one
   with the largest sensitivity per unit of cost (sensitivity: the validation accuracy it gives back
   when only it is left in float in a model quantized at that rung, from `tfq.sensitivity`; cost:
   its extra bytes, or its share of the model's multiply-adds times the uniform models' latency
   gap). Every step is a real file, scored.
3. Then one backward pass: each raised layer, latest first, goes back down rung by rung while the
   model stays within the budget (the ranking is an estimate; this undoes the steps it did not
   need). Each of its tries undoes one raise or ends one layer's descent, so it scores at most
   as many files as step 2 raised plus L.
All-float is on every ladder and meets any budget, so the search always ends within it.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import re

import numpy as np

from tfq.core import cli, stats
from tfq.core.artifacts import TfqError
from tfq.quant import aeq
from tfq.runtimes import flatbuffer, litert


@dataclasses.dataclass(frozen=True)
class Rung:
    name: str
    description: str
    recipe: str | None  # the tfq/recipes file whose rule a layer on this rung gets; None: float
    weight_bits: int  # stored bits per weight, for the size estimate
    weight_dtype: str  # what the file must hold for the layer
    activation_dtype: str
    ops: tuple[str, ...] | None = None  # the weight ops that can take it (None: all)


RUNGS: tuple[Rung, ...] = (  # least precise first
    # ai-edge-quantizer's policy has no int4 depthwise convolution: a depthwise layer on w4 holds int8
    Rung(
        "w4",
        "4-bit per-channel weights, int8 activations",
        "aeq_a8w4.json",
        4,
        "int4",
        "int8",
        ("CONV_2D", "FULLY_CONNECTED"),
    ),
    Rung("int8", "int8 per-channel weights, int8 activations", "aeq_a8w8.json", 8, "int8", "int8"),
    Rung("a16w8", "int8 per-channel weights, int16 activations", "aeq_a16w8.json", 8, "int8", "int16"),
    Rung("float", "left in float32", None, 32, "float32", "float32"),
)
RUNG = {r.name: r for r in RUNGS}
OBJECTIVES = ("size", "latency")
WEIGHT_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
CALIBRATION_RULE = "minmax"


def precision(rung: str) -> int:
    return [r.name for r in RUNGS].index(rung)


@dataclasses.dataclass(frozen=True)
class Layer:
    """A weight layer of the float flatbuffer: its Keras name, op, ai-edge-quantizer scope and size."""

    name: str
    op: str
    scope: str  # what a recipe rule's regex is matched against
    output: str  # its output tensor's name
    params: int
    macs: int


def _layer_name(scope: str, index: int) -> str:
    for part in scope.split(";"):
        pieces = part.split("/")
        if len(pieces) >= 2 and pieces[-1].rstrip("0123456789").lower() in (
            "conv2d",
            "matmul",
            "depthwise",
            "tensordot",
            "biasadd",
        ):
            return pieces[-2]
    return f"op{index}"


def layers(float_blob: bytes) -> list[Layer]:
    """The weight layers (convolutions, dense) of a float flatbuffer, in graph order."""
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils

    fb = flatbuffer.read(float_blob, label="float32.tflite")
    graph = tfl_flatbuffer_utils.read_model(float_blob).subgraphs[0]
    out, names = [], set()
    for index, (op, raw) in enumerate(zip(fb.ops, graph.operators)):
        if op.name not in WEIGHT_OPS or len(op.inputs) < 2 or not fb.tensors[op.inputs[1]].constant:
            continue
        w, y = fb.tensors[op.inputs[1]].shape, fb.tensors[op.outputs[0]].shape
        if op.name == "FULLY_CONNECTED":
            macs = int(np.prod(y[:-1] or (1,))) * int(np.prod(w))
        elif op.name == "DEPTHWISE_CONV_2D":
            macs = int(np.prod(y[1:])) * int(w[1] * w[2])
        else:
            macs = int(np.prod(y[1:])) * int(np.prod(w[1:]))
        scope = tfl_flatbuffer_utils.get_op_scope(raw, graph.tensors)
        name = _layer_name(scope, index)
        if name in names:
            name = f"{name}_{index}"
        names.add(name)
        out.append(Layer(name, op.name, scope, fb.tensors[op.outputs[0]].name, int(np.prod(w)), macs))
    if not out:
        raise TfqError("the float model has no convolution or dense layer to quantize")
    return out


def held(rung: str, op: str) -> str:
    """The rung a layer of `op` holds when assigned `rung`: the least precise one at or above it that
    the op can take (a depthwise convolution on w4 holds int8)."""
    return next(r.name for r in RUNGS[precision(rung) :] if r.ops is None or op in r.ops)


def _rule(regex: str, rung: str) -> dict:
    if rung == "float":
        return {"regex": regex, "operation": "*", "algorithm_key": aeq.NO_QUANTIZE}
    rule = copy.deepcopy(aeq.load(aeq.RECIPES / RUNG[rung].recipe)[0])
    rule["regex"] = regex
    return rule


def default_rung(assignment: dict[str, str]) -> str:
    """The rung of the ops without weights: the least precise one in the assignment."""
    return min(assignment.values(), key=precision)


def recipe(assignment: dict[str, str], model_layers: list[Layer], default: str | None = None) -> list[dict]:
    """The ai-edge-quantizer recipe of an assignment {layer name: rung}: one rule for everything
    (`default`, else `default_rung`), then one rule per layer on another rung, matched by its whole
    scope. A later matching rule wins in ai-edge-quantizer."""
    default = default or default_rung(assignment)
    rules = [] if default == "float" else [_rule(".*", default)]
    for layer in model_layers:
        rung = held(assignment[layer.name], layer.op)
        if rung != default:
            rules.append(_rule("^" + re.escape(layer.scope) + "$", rung))
    return rules


def read_back(blob: bytes, model_layers: list[Layer], label: str) -> dict[str, dict]:
    """Each layer's precision as the flatbuffer holds it: the weight and input/output activation
    dtypes of the op that writes the layer's output tensor (ai-edge-quantizer keeps its name), and
    the rung they make (None: no rung of the ladder)."""
    fb = flatbuffer.read(blob, label=label)
    writer = {fb.tensors[op.outputs[0]].name: op for op in fb.ops if op.outputs}
    out = {}
    for layer in model_layers:
        op = writer.get(layer.output)
        if op is None or op.name != layer.op or len(op.inputs) < 2:
            raise TfqError(
                f"{label}: no {layer.op} writes {layer.name}'s output; the file is not a quantized "
                "copy of this float model"
            )
        weights, x, y = (fb.tensors[i].dtype for i in (op.inputs[1], op.inputs[0], op.outputs[0]))
        rung = next((r.name for r in RUNGS if r.weight_dtype == weights and r.activation_dtype == x == y), None)
        out[layer.name] = {"op": op.name, "weights": weights, "input": x, "output": y, "rung": rung}
    return out


def check(blob: bytes, assignment: dict[str, str], model_layers: list[Layer], label: str) -> dict[str, dict]:
    """`read_back`, and a TfqError naming each layer that does not hold its assigned rung (the
    quantizer skips, without a word, a rule it cannot apply to an op)."""
    found = read_back(blob, model_layers, label)
    want = {layer.name: held(assignment[layer.name], layer.op) for layer in model_layers}
    wrong = [
        f"{n} holds {v['weights']} weights / {v['input']} activations, not {want[n]}"
        for n, v in found.items()
        if v["rung"] != want[n]
    ]
    if wrong:
        raise TfqError(f"{label}: ai-edge-quantizer did not apply the recipe: {'; '.join(wrong)}")
    return found


class Scorer:
    """Makes the file of an assignment and scores it on the validation images; each distinct
    recipe is made and scored once (the budget sweep walks the same path)."""

    def __init__(
        self,
        float_blob: bytes,
        model_layers: list[Layer],
        calibration: np.ndarray,
        images: np.ndarray,
        labels: np.ndarray,
        input_range=None,
    ):
        self.float_blob, self.layers, self.images, self.labels = float_blob, model_layers, images, labels
        self.input_range = cli.pixel_range(input_range)
        # min/max over the same images is one number per tensor whatever the recipe; the int8 and the
        # int16 recipes may not reach the same ops, so both are calibrated and merged
        self.calibration = {}
        for rung in ("a16w8", "int8"):
            uniform = recipe(dict.fromkeys((layer.name for layer in model_layers), rung), model_layers)
            self.calibration.update(
                aeq.calibrate(float_blob, uniform, calibration, "mixed precision", CALIBRATION_RULE)
            )
        self._blobs: dict[str, bytes] = {}  # recipe -> file
        self._correct: dict[str, np.ndarray] = {}  # file digest -> right or wrong per image
        self.float_correct = self.correct(float_blob)

    @property
    def evaluations(self) -> int:
        return len(self._correct)

    def build(self, assignment: dict[str, str], default: str | None = None) -> bytes:
        rules = recipe(assignment, self.layers, default)
        if not rules:
            return self.float_blob
        key = json.dumps(rules, sort_keys=True)
        if key not in self._blobs:
            blob = aeq.quantize(self.float_blob, rules, None, "mixed precision", calibration_result=self.calibration)
            check(blob, assignment, self.layers, "mixed precision candidate")
            self._blobs[key] = blob
        return self._blobs[key]

    def correct(self, blob: bytes) -> np.ndarray:
        """Right or wrong, per validation image."""
        key = hashlib.sha256(blob).hexdigest()
        if key not in self._correct:
            self._correct[key] = predict(blob, self.images, self.input_range) == self.labels
        return self._correct[key]

    def drop_pts(self, assignment: dict[str, str], default: str | None = None) -> tuple[float, bytes]:
        blob = self.build(assignment, default)
        return drop_pts(self.float_correct, self.correct(blob)), blob


def predict(blob: bytes, images: np.ndarray, input_range=None) -> np.ndarray:
    """Predicted classes of a flatbuffer for uint8 images; a file with ops outside XNNPACK (int16
    activations run on LiteRT's reference kernels, 100x slower) is split over every core."""
    from tfq.runtimes.harness import Classifier, dequantize  # imports TensorFlow: only when scoring

    clf = Classifier(blob, label="mixed precision candidate", input_range=input_range)
    processes = litert.cores() if "int16" in clf.flatbuffer.dtypes("activations") else 1
    return dequantize(clf.invoke_prepared(clf.prepare(images), processes), clf.output).argmax(1)


def ladder(uniform_cost: dict[str, float]) -> list[str]:
    """The rungs worth climbing for one objective: from float down, each kept rung is cheaper than
    every more precise rung kept (a rung that costs more than a more precise one is never chosen)."""
    kept: list[str] = []
    for rung in reversed(RUNGS):
        if not kept or uniform_cost[rung.name] < min(uniform_cost[k] for k in kept):
            kept.append(rung.name)
    return kept[::-1]


def layer_cost(layer: Layer, rung: str, objective: str, uniform_cost: dict[str, float], total_macs: int) -> float:
    """A layer's share of the cost on a rung: its weight bytes, or its share of the multiply-adds
    times the uniform model's latency."""
    if objective == "size":
        return layer.params * RUNG[rung].weight_bits / 8
    return layer.macs / total_macs * uniform_cost[rung]


def search(scorer: Scorer, sensitivity: dict, budget_pts: float, objective: str, log=None) -> dict:
    """The assignment with the least cost whose validation drop is within `budget_pts` (see the
    module docstring); returns it with the path taken and the number of files scored. `log`, if
    given, gets one line per step."""
    if objective not in OBJECTIVES:
        raise TfqError(f"--objective={objective}: choose one of {', '.join(OBJECTIVES)}")
    if not budget_pts >= 0:
        raise TfqError(f"an accuracy budget of {budget_pts} points: it must be 0 or more")
    uniform_cost = {r: sensitivity["rungs"][r]["size_bytes" if objective == "size" else "latency_us"] for r in RUNG}
    steps = ladder(uniform_cost)
    total_macs = sum(layer.macs for layer in scorer.layers)
    recovery = {
        entry["name"]: {scheme: s["only_float_recovery_pts"] for scheme, s in entry["schemes"].items()}
        for entry in sensitivity["layers"]
    }
    measured = sorted({s for r in recovery.values() for s in r}, key=precision)

    def priority(layer: Layer, rung: str) -> float:
        # the sensitivity measured at this rung, or at the nearest measured rung below it
        scheme = max((s for s in measured if precision(s) <= precision(rung)), key=precision, default=measured[0])
        higher = steps[steps.index(rung) + 1]
        extra = layer_cost(layer, higher, objective, uniform_cost, total_macs) - layer_cost(
            layer, rung, objective, uniform_cost, total_macs
        )
        return max(recovery[layer.name][scheme], 1e-3) / max(extra, 1e-9)

    def within(drop: float) -> bool:  # a drop is a whole number of images: no float-rounding misses
        return drop <= budget_pts + 1e-9

    # each layer starts on the cheapest step it can hold (a depthwise convolution: not w4)
    floor = {layer.name: next(s for s in steps if held(s, layer.op) == s) for layer in scorer.layers}
    assignment = dict(floor)
    path = []
    scored_before = scorer.evaluations

    def record(action: str) -> float:
        drop, blob = scorer.drop_pts(assignment)
        path.append(
            {
                "action": action,
                "assignment": dict(assignment),
                "val_drop_pts": round(drop, 4),
                "size_bytes": len(blob),
                "within_budget": within(drop),
            }
        )
        _log(path[-1])
        return drop

    def _log(step: dict) -> None:
        if log:
            log(
                f"  budget {budget_pts:g} ({objective}): {step['action']}: validation drop "
                f"{step['val_drop_pts']:+.2f} pts, {step['size_bytes']:,d} bytes"
            )

    drop = record(f"start: every layer {steps[0]}")
    raised: list[str] = []
    while not within(drop):
        open_layers = [layer for layer in scorer.layers if assignment[layer.name] != steps[-1]]
        level = min(steps.index(assignment[layer.name]) for layer in open_layers)
        pick = max(
            (layer for layer in open_layers if steps.index(assignment[layer.name]) == level),
            key=lambda layer: priority(layer, steps[level]),
        )
        assignment[pick.name] = steps[level + 1]
        raised.append(pick.name)
        drop = record(f"raise {pick.name} {steps[level]} -> {steps[level + 1]}")
    for name in dict.fromkeys(reversed(raised)):
        while steps.index(assignment[name]) > steps.index(floor[name]):
            current = steps.index(assignment[name])
            trial = {**assignment, name: steps[current - 1]}
            trial_drop, blob = scorer.drop_pts(trial)
            kept = within(trial_drop)
            path.append(
                {
                    "action": f"try {name} {steps[current]} -> {steps[current - 1]}",
                    "assignment": trial,
                    "val_drop_pts": round(trial_drop, 4),
                    "size_bytes": len(blob),
                    "within_budget": kept,
                    "kept": kept,
                }
            )
            _log(path[-1])
            if not kept:
                break
            assignment = trial
    return {
        "assignment": assignment,
        "ladder": steps,
        "uniform_cost": uniform_cost,
        "path": path,
        "files_scored": scorer.evaluations - scored_before,
    }


def drop_pts(reference: np.ndarray, other: np.ndarray) -> float:
    """`reference` minus `other` accuracy in points, from image counts (the same number
    stats.paired's interval is built around, to the last bit)."""
    return 100 * (int(np.sum(reference)) - int(np.sum(other))) / len(reference)


def paired_vs(reference: np.ndarray, other: np.ndarray) -> dict:
    """`other` minus `reference` in points with its 95% interval and McNemar p (stats.paired)."""
    p = stats.paired(reference, other)
    return {k: p[k] for k in ("delta_pts", "ci95_pts", "p_value", "images", "only_reference_right", "only_other_right")}
