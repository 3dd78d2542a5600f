"""Recipes for ai-edge-quantizer (the LiteRT Quantizer): load, check, and quantize a float .tflite.

A recipe is the quantizer's own JSON (a list of rules: a layer-name regex, an op, an algorithm and
the weight/activation bits, symmetry and granularity), kept as data in `tfq/quant/recipes/` or written by
a user (`python -m tfq.convert --recipe=FILE`). This module knows what a recipe promises, so the
flatbuffer that comes back is checked against it: ai-edge-quantizer 0.10.0 returns the float model
unchanged, silently, for a rule it cannot honour (2-bit weights, for one).

Calibration: the quantizer's own rule ("quantizer") is, for min/max recipes, a moving average
(0.95) of per-image min/max, which clips rare large activations (the study measured what that
costs); `calibration_rule="minmax"`
keeps the running min/max instead, as the TFLite converter does. A calibration result (`calibrate`)
can be reused for many recipes over the same float model: it is a min/max per tensor.

ai_edge_quantizer is imported lazily: it is not needed to read the mode table.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from tfq.core import console
from tfq.core.artifacts import TfqError

RECIPES = Path(__file__).parent / "recipes"
NO_QUANTIZE = "no_quantize"  # a rule's algorithm_key that leaves what it matches in float
CALIBRATION_RULES = ("quantizer", "minmax")


def load(path: str | os.PathLike) -> list[dict]:
    """A recipe from JSON, checked for the fields tfq reads; a one-line TfqError otherwise."""
    path = Path(path)
    try:
        recipe = json.loads(path.read_text())
    except FileNotFoundError:
        raise TfqError(f"recipe {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TfqError(f"recipe {path} is not JSON ({e})") from None
    if not isinstance(recipe, list) or not recipe:
        raise TfqError(f"recipe {path} must be a non-empty JSON list of rules")
    for i, rule in enumerate(recipe):
        cfg = rule.get("op_config") if isinstance(rule, dict) else None
        if isinstance(rule, dict) and rule.get("algorithm_key") == NO_QUANTIZE and cfg is None:
            cfg = {}
        if not isinstance(cfg, dict) or "regex" not in rule or "operation" not in rule:
            raise TfqError(f"recipe {path}, rule {i}: needs regex, operation and op_config")
        for key in ("weight_tensor_config", "activation_tensor_config"):
            tc = cfg.get(key)
            if tc is None:
                continue
            bits = tc.get("num_bits")
            if not isinstance(bits, int) or not 2 <= bits <= 16:
                raise TfqError(f"recipe {path}, rule {i}: {key}.num_bits must be an integer from 2 to 16")
    return recipe


def int_dtype(bits: int) -> str:
    """The TFLite tensor type that holds `bits`-bit integers."""
    return {2: "int2", 4: "int4", 8: "int8", 16: "int16"}.get(bits, f"int{bits}")


def promise(recipe: list[dict]) -> dict:
    """What a file made from `recipe` must show: weight dtypes, activation dtypes, input/output
    dtype (the activations' type when all ops share one; None for a per-layer mix), calibration.
    A rule for one operation (int8 weights for DEPTHWISE_CONV_2D, which has no int4 kernel in
    ai-edge-quantizer's policy) adds no weight dtype the file must hold: a model may lack that op."""
    weights, activations, calibrate = set(), set(), False
    covers_all = any(r.get("regex", ".*") == ".*" and r.get("operation", "*") == "*" for r in recipe)
    for rule in recipe:
        cfg = rule.get("op_config") or {}
        if rule.get("algorithm_key") == NO_QUANTIZE:
            activations.add("float32")
            continue
        if cfg.get("weight_tensor_config") and rule.get("operation", "*") == "*":
            weights.add(int_dtype(cfg["weight_tensor_config"]["num_bits"]))
        act = cfg.get("activation_tensor_config")
        if act:
            activations.add(int_dtype(act["num_bits"]))
            calibrate = True
        else:
            activations.add("float32")  # weight-only and dynamic: float activations
    if not covers_all:
        activations.add("float32")  # what no rule covers stays float
    # one activation type: the file takes and gives it; a mix: whatever the first and last ops hold
    io = next(iter(activations)) if len(activations) == 1 else None
    return {
        "weight_dtypes": sorted(weights),
        "activation_dtypes": sorted(activations),
        "io_type": io,
        "calibrate": calibrate,
    }


def _signature(float_blob: bytes) -> tuple[str, str]:
    from ai_edge_litert.interpreter import Interpreter

    with console.quiet():
        interpreter = Interpreter(model_content=float_blob)
    signatures = interpreter.get_signature_list()
    if len(signatures) != 1:
        raise TfqError(f"the float model has {len(signatures)} signatures; tfq quantizes one-signature classifiers")
    key, io = next(iter(signatures.items()))
    if len(io["inputs"]) != 1:
        raise TfqError(f"the float model takes {len(io['inputs'])} inputs; tfq quantizes one-image classifiers")
    return key, io["inputs"][0]


def _samples(float_blob: bytes, images: np.ndarray) -> dict:
    key, name = _signature(float_blob)
    return {key: [{name: x[None, ...].astype(np.float32)} for x in images]}


def _quantizer(float_blob: bytes, recipe: list[dict], label: str):
    from ai_edge_quantizer import quantizer as aeq_quantizer

    try:
        return aeq_quantizer.Quantizer(bytearray(float_blob), recipe)
    except Exception as e:  # noqa: BLE001
        raise TfqError(f"{label}: ai-edge-quantizer refused the recipe: {_first_line(e)}") from None


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__


def calibrate(
    float_blob: bytes, recipe: list[dict], calibration: np.ndarray, label: str, rule: str = "quantizer"
) -> dict:
    """Per-tensor min/max of `float_blob` over `calibration` (scaled float images) for the tensors
    `recipe` quantizes statically, merged across images by `rule` (see the module docstring)."""
    return _calibrate(_quantizer(float_blob, recipe, label), float_blob, calibration, label, rule)


def _calibrate(qt, float_blob: bytes, calibration: np.ndarray, label: str, rule: str) -> dict:
    from ai_edge_quantizer import calibrator
    from ai_edge_quantizer.utils import qsv_utils

    if rule not in CALIBRATION_RULES:
        raise TfqError(f"{label}: unknown calibration rule {rule!r}; choose one of: {', '.join(CALIBRATION_RULES)}")
    custom = {"qsv_update_func": qsv_utils.min_max_update} if rule == "minmax" else {}
    with console.quiet():
        try:
            calib = calibrator.Calibrator(float_blob, num_threads=1, **custom)
            # the quantizer's own calibrate() does exactly this with its private recipe manager
            calib.calibrate(_samples(float_blob, calibration), qt._recipe_manager)  # noqa: SLF001
            return calib.get_model_qsvs()
        except Exception as e:  # noqa: BLE001 - the calibrator raises ValueError, RuntimeError...
            raise TfqError(f"{label}: ai-edge-quantizer calibration failed: {_first_line(e)}") from None


def quantize(
    float_blob: bytes,
    recipe: list[dict],
    calibration: np.ndarray | None,
    label: str,
    *,
    calibration_rule: str = "quantizer",
    calibration_result: dict | None = None,
) -> bytes:
    """The flatbuffer ai-edge-quantizer makes from `float_blob` with `recipe`, calibrated on
    `calibration` (scaled float images, the converter's own representative samples) if it asks,
    or with a `calibration_result` from `calibrate` over the same float model."""
    qt = _quantizer(float_blob, recipe, label)
    qsv = None
    if qt.need_calibration:
        if calibration_result is not None:
            qsv = calibration_result
        elif calibration is None:
            raise TfqError(f"{label}: the recipe has static activations and needs calibration samples")
        else:
            qsv = _calibrate(qt, float_blob, calibration, label, calibration_rule)
    with console.quiet():  # its progress report and absl lines
        try:
            result = qt.quantize(qsv, enable_progress_report=False)
        except Exception as e:  # noqa: BLE001 - the quantizer raises ValueError, KeyError, RuntimeError...
            raise TfqError(f"{label}: ai-edge-quantizer failed: {_first_line(e)}") from None
    return bytes(result.quantized_model)
