"""Recipes for ai-edge-quantizer (the LiteRT Quantizer): load, check, and quantize a float .tflite.

A recipe is the quantizer's own JSON (a list of rules: a layer-name regex, an op, an algorithm and
the weight/activation bits, symmetry and granularity), kept as data in `tfq/recipes/` or written by
a user (`python -m tfq.convert --recipe=FILE`). This module knows what a recipe promises, so the
flatbuffer that comes back is checked against it: ai-edge-quantizer 0.10.0 returns the float model
unchanged, silently, for a rule it cannot honour (2-bit weights, for one).

ai_edge_quantizer is imported lazily: it is not needed to read the mode table.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from tfq import console
from tfq.artifacts import TfqError

RECIPES = Path(__file__).parent / "recipes"


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
    dtype (the activations' integer type when every op is static, else float32), calibration."""
    weights, activations, calibrate = set(), set(), False
    covers_all = any(r.get("regex", ".*") == ".*" and r.get("operation", "*") == "*" for r in recipe)
    for rule in recipe:
        cfg = rule["op_config"]
        if cfg.get("weight_tensor_config"):
            weights.add(int_dtype(cfg["weight_tensor_config"]["num_bits"]))
        act = cfg.get("activation_tensor_config")
        if act:
            activations.add(int_dtype(act["num_bits"]))
            calibrate = True
        else:
            activations.add("float32")  # weight-only and dynamic: float activations
    if not covers_all:
        activations.add("float32")  # what no rule covers stays float
    io = next(iter(activations)) if len(activations) == 1 else "float32"
    return {"weight_dtypes": sorted(weights), "activation_dtypes": sorted(activations), "io_type": io,
            "calibrate": calibrate}


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


def quantize(float_blob: bytes, recipe: list[dict], calibration: np.ndarray | None, label: str) -> bytes:
    """The flatbuffer ai-edge-quantizer makes from `float_blob` with `recipe`, calibrated on
    `calibration` (scaled float images, the converter's own representative samples) if it asks."""
    from ai_edge_quantizer import quantizer as aeq_quantizer

    with console.quiet():  # its progress report and absl lines
        try:
            qt = aeq_quantizer.Quantizer(bytearray(float_blob), recipe)
            qsv = None
            if qt.need_calibration:
                if calibration is None:
                    raise TfqError(f"{label}: the recipe has static activations and needs calibration samples")
                key, name = _signature(float_blob)
                samples = {key: [{name: x[None, ...].astype(np.float32)} for x in calibration]}
                qsv = qt.calibrate(samples, num_threads=1)
            result = qt.quantize(qsv, enable_progress_report=False)
        except TfqError:
            raise
        except Exception as e:  # noqa: BLE001 - the quantizer raises ValueError, KeyError, RuntimeError...
            first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
            raise TfqError(f"{label}: ai-edge-quantizer failed: {first}") from None
    return bytes(result.quantized_model)
