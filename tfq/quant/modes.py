"""The table of quantization modes: how each is made, and what its flatbuffer must show.

One row per mode, read by `convert` (how to run the TFLite converter), `qat` (its own row),
`evaluate`, `report` and `pipeline` (names and order), so none of them imports `convert` just to
read the table. `verify` checks a file against its row's promise, from the flatbuffer itself: a
converter that silently leaves an op in float (as TFLITE_BUILTINS allows) is an error, not a
quieter number in the report.
"""

from __future__ import annotations

import dataclasses
import os

from tfq.core.artifacts import TfqError
from tfq.quant import aeq
from tfq.runtimes.flatbuffer import Flatbuffer

DEFAULT_CALIBRATION = 500  # docs/conversion.md, "Calibration samples": int8 is flat above ~200


@dataclasses.dataclass(frozen=True)
class Mode:
    """One way to make a flatbuffer: a recipe as data, and what the result must hold."""

    name: str
    description: str
    weight_dtype: str  # the kernels' dtype ("int4/int8": both): the file must hold weights of it
    activation_dtypes: tuple[str, ...]  # every activation inside the graph (not its inputs/outputs)
    family: str = "ptq"  # "ptq": TFLite converter; "qat": from tfmot QAT; "aeq": ai-edge-quantizer
    recipe: str | None = None  # family "aeq": the recipe JSON, applied to float32.tflite
    optimize: bool = False  # tf.lite.Optimize.DEFAULT
    supported_types: tuple[str, ...] = ()  # target_spec.supported_types
    ops: str = "TFLITE_BUILTINS"  # tf.lite.OpsSet member
    calibrate: bool = False  # needs a representative dataset
    io_type: str = "float32"  # default input/output dtype
    io_types: tuple[str, ...] = ("float32",)  # what --io_type may choose
    per_channel_option: bool = False  # --per_channel=false applies


_INT8 = dict(
    weight_dtype="int8",
    activation_dtypes=("int8",),
    optimize=True,
    io_type="int8",
    io_types=("int8", "uint8", "float32"),
    per_channel_option=True,
)

MODES: dict[str, Mode] = {
    m.name: m
    for m in (
        Mode("float32", "float32 weights and activations (the reference)", "float32", ("float32",)),
        Mode(
            "float16",
            "float16 weights, float32 compute",
            "float16",
            ("float32",),
            optimize=True,
            supported_types=("float16",),
        ),
        Mode(
            "dynamic",
            "int8 weights, float activations (dynamic-range)",
            "int8",
            ("float32",),
            optimize=True,
            per_channel_option=True,
        ),
        Mode(
            "int8",
            "full integer: int8 weights (per-channel) and activations, int8 in/out",
            ops="TFLITE_BUILTINS_INT8",
            calibrate=True,
            **_INT8,
        ),
        Mode(
            "int16x8",
            "int16 activations, int8 weights, int16 in/out",
            "int8",
            ("int16",),
            optimize=True,
            ops="EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8",
            calibrate=True,
            io_type="int16",
            io_types=("int16", "float32"),
            per_channel_option=True,
        ),
    )
}


ANY_IO = "any"  # a per-layer mix of precisions: its input/output types follow its first and last layers


def recipe_mode(name: str, description: str, recipe: str | os.PathLike | None = None) -> Mode:
    """A row for an ai-edge-quantizer recipe (default `tfq/quant/recipes/<name>.json`); what its file
    must hold is read from the recipe itself."""
    path = recipe or aeq.RECIPES / f"{name}.json"
    promise = aeq.promise(aeq.load(path))
    io = promise["io_type"] or ANY_IO
    return Mode(
        name,
        description,
        "/".join(promise["weight_dtypes"]),
        tuple(promise["activation_dtypes"]),
        family="aeq",
        recipe=str(path),
        calibrate=promise["calibrate"],
        io_type=io,
        io_types=(io,),
    )


_AEQ = "LiteRT Quantizer (ai-edge-quantizer): "
_AEQ_ROWS = (  # name (its recipe is tfq/quant/recipes/<name>.json), what it is
    ("aeq_a8w8", "int8 activations (asymmetric), int8 weights (per-channel), min/max"),
    ("aeq_a8w8_sym", "int8 activations (symmetric), int8 weights (per-channel)"),
    ("aeq_a8w8_pertensor", "int8 activations, int8 weights with one scale per tensor"),
    ("aeq_a8w8_mse", "int8 activations, int8 weights clipped by MSE"),
    ("aeq_a8w8_octav", "int8 activations, int8 weights clipped by OCTAV"),
    ("aeq_a16w8", "int16 activations (symmetric), int8 weights"),
    ("aeq_a8w4", "int8 activations, 4-bit weights (per-channel, symmetric; depthwise int8), min/max"),
    ("aeq_a8w4_mse", "int8 activations, 4-bit weights clipped by MSE (depthwise int8)"),
    ("aeq_a8w4_octav", "int8 activations, 4-bit weights clipped by OCTAV (depthwise int8)"),
    ("aeq_w4", "4-bit weights dequantized to float at load, float compute (weight-only)"),
    ("aeq_dyn_w8", "int8 weights, activations quantized on the fly (dynamic)"),
    ("aeq_dyn_w4", "4-bit weights, activations quantized on the fly (dynamic)"),
)
MODES.update({name: recipe_mode(name, _AEQ + text) for name, text in _AEQ_ROWS})
"""The post-training modes, converter's and ai-edge-quantizer's: what `python -m tfq.convert
--mode=all` makes."""

# The QAT graph carries its own ranges, so no calibration; the INT8-only ops set would demand a
# representative dataset, so the int8-only promise is checked from the flatbuffer instead.
QAT_INT8 = Mode(
    "qat_int8",
    "full integer from quantization-aware training: int8 weights and activations, int8 in/out",
    family="qat",
    **_INT8,
)

KNOWN: dict[str, Mode] = {**MODES, QAT_INT8.name: QAT_INT8}
ORDER = (
    "float32",
    "float16",
    "dynamic",
    "aeq_dyn_w8",
    "int16x8",
    "aeq_a16w8",
    "int8",
    "aeq_a8w8",
    "aeq_a8w8_sym",
    "aeq_a8w8_pertensor",
    "aeq_a8w8_mse",
    "aeq_a8w8_octav",
    "qat_int8",
    "aeq_w4",
    "aeq_dyn_w4",
    "aeq_a8w4",
    "aeq_a8w4_mse",
    "aeq_a8w4_octav",
)  # report rows, widest first


def get_mode(name: str) -> Mode:
    try:
        return MODES[name]
    except KeyError:
        raise TfqError(f"unknown mode {name!r}; choose one of: {', '.join(MODES)}, all") from None


def modes_from(names: str | list[str]) -> list[Mode]:
    names = [names] if isinstance(names, str) else names
    if "all" in names:
        return list(MODES.values())
    return [get_mode(n) for n in names]


def check_variant(mode: Mode, io_type: str | None, per_channel: bool) -> str:
    """The input/output dtype to use; a TfqError when the flags do not fit the mode."""
    io_type = io_type or mode.io_type
    if io_type not in mode.io_types:
        raise TfqError(f"--io_type={io_type} does not fit --mode={mode.name}; it takes {', '.join(mode.io_types)}")
    if not per_channel and not mode.per_channel_option:
        raise TfqError(f"--per_channel=false does not apply to --mode={mode.name} (no int8 weights)")
    return io_type


def output_name(mode: Mode, io_type: str | None, per_channel: bool) -> str:
    """`int8`, or `int8_uint8io` / `int8_pertensor` for the non-default variants."""
    name = mode.name
    if io_type and io_type != mode.io_type:
        name += f"_{io_type}io"
    if not per_channel:
        name += "_pertensor"
    return name


def verify(mode: Mode, fb: Flatbuffer, label: str, io_type: str | None = None) -> None:
    """A TfqError, in one line, when the flatbuffer does not hold what `mode` promises: its
    weights' dtype, its inner activations' dtypes, and `io_type` (default the mode's) in and out."""
    io_type = io_type or mode.io_type
    io = {fb.tensors[i].dtype for i in (*fb.inputs, *fb.outputs)}
    if io_type != ANY_IO and io != {io_type}:
        raise TfqError(
            f"{label}: --mode={mode.name} promises {io_type} input and output, but the file takes "
            f"{'/'.join(sorted(io))}"
        )
    if not set(mode.weight_dtype.split("/")) <= fb.dtypes("weights"):
        raise TfqError(
            f"{label}: --mode={mode.name} promises {mode.weight_dtype} weights, but the file holds "
            f"{'/'.join(sorted(fb.dtypes('weights'))) or 'none'}"
        )
    boundary = {*fb.inputs, *fb.outputs}
    stray = {}
    for op in fb.ops:
        for i in (*op.inputs, *op.outputs):
            t = fb.tensors[i] if i >= 0 else None
            if t is not None and not t.constant and i not in boundary and t.dtype not in mode.activation_dtypes:
                stray.setdefault(t.dtype, set()).add(op.name)
    if stray:
        found = "; ".join(f"{dtype} in {', '.join(sorted(ops))}" for dtype, ops in sorted(stray.items()))
        raise TfqError(
            f"{label}: --mode={mode.name} promises {'/'.join(mode.activation_dtypes)} activations, "
            f"but the file has {found}"
        )
