"""Post-training conversion: `python -m tfq.convert --dataset=mnist --model=cnn --mode=int8`.

Every mode is one row of `MODES`; one function turns a row into TFLiteConverter settings. Writes
`<mode>.tflite` and `<mode>.json` (settings, calibration count, input/output dtypes with scale
and zero point, what the flatbuffer holds, source model digest) beside the trained model.
"""

from __future__ import annotations

import dataclasses
import time

from absl import flags

from tfq import artifacts, cli, console, data, inspect, models
from tfq.artifacts import TfqError
from tfq.backend import keras, tf, versions

DEFAULT_CALIBRATION = 500  # see README "Calibration samples": int8 accuracy is flat above ~200


@dataclasses.dataclass(frozen=True)
class Mode:
    """One way to convert: a recipe as data, read by `converter_for`."""

    name: str
    description: str
    optimize: bool = False  # tf.lite.Optimize.DEFAULT
    supported_types: tuple[str, ...] = ()  # target_spec.supported_types
    ops: str = "TFLITE_BUILTINS"  # tf.lite.OpsSet member
    calibrate: bool = False  # needs a representative dataset
    io_type: str = "float32"  # default input/output dtype
    io_types: tuple[str, ...] = ("float32",)  # what --io_type may choose
    per_channel_option: bool = False  # --per_channel=false applies


MODES: dict[str, Mode] = {
    m.name: m
    for m in (
        Mode("float32", "float32 weights and activations (the reference)"),
        Mode("float16", "float16 weights, float32 compute", optimize=True, supported_types=("float16",)),
        Mode("dynamic", "int8 weights, float activations (dynamic-range)", optimize=True,
             per_channel_option=True),
        Mode("int8", "full integer: int8 weights (per-channel) and activations, int8 in/out",
             optimize=True, ops="TFLITE_BUILTINS_INT8", calibrate=True, io_type="int8",
             io_types=("int8", "uint8", "float32"), per_channel_option=True),
        Mode("int16x8", "int16 activations, int8 weights, int16 in/out", optimize=True,
             ops="EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8", calibrate=True,
             io_type="int16", io_types=("int16", "float32"), per_channel_option=True),
    )
}


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


def converter_for(model: keras.Model, mode: Mode, *, calibration=None, io_type: str | None = None,
                  per_channel: bool = True) -> tuple[tf.lite.TFLiteConverter, dict]:
    """TFLiteConverter set up for `mode`; also returns the settings as plain data for the manifest."""
    io_type = check_variant(mode, io_type, per_channel)
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    settings = {"optimizations": [], "supported_ops": [mode.ops], "supported_types": list(mode.supported_types),
                "inference_input_type": io_type, "inference_output_type": io_type,
                "per_channel": per_channel if mode.per_channel_option else None}
    if mode.optimize:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        settings["optimizations"] = ["DEFAULT"]
    conv.target_spec.supported_ops = [getattr(tf.lite.OpsSet, mode.ops)]
    conv.target_spec.supported_types = [getattr(tf, t) for t in mode.supported_types]
    if mode.calibrate:
        if calibration is None:
            raise TfqError(f"--mode={mode.name} needs calibration samples")

        def representative():
            for x in calibration:
                yield [x[None, ...]]

        conv.representative_dataset = representative
    if io_type != "float32":
        conv.inference_input_type = getattr(tf, io_type)
        conv.inference_output_type = getattr(tf, io_type)
    if not per_channel:
        conv._experimental_disable_per_channel = True  # noqa: SLF001 - the converter's only switch for it
    return conv, settings


def convert_model(model: keras.Model, mode: Mode, **kwargs) -> tuple[bytes, dict]:
    conv, settings = converter_for(model, mode, **kwargs)
    try:
        with console.quiet():  # the converter's C++ progress lines and MLIR dumps
            blob = conv.convert()
    except Exception as e:  # noqa: BLE001 - the converter raises ConverterError and friends
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise TfqError(f"--mode={mode.name}: conversion failed: {first}") from None
    return bytes(blob), settings


@dataclasses.dataclass
class ConvertConfig:
    dataset: str = "mnist"
    model: str = "cnn"
    modes: tuple[str, ...] = ("int8",)
    artifacts: str = "artifacts"
    num_calibration: int = DEFAULT_CALIBRATION
    io_type: str | None = None
    per_channel: bool = True
    seed: int = 0
    data_root: str | None = None
    cache_dir: str | None = None


def output_name(mode: Mode, io_type: str | None, per_channel: bool) -> str:
    """`int8`, or `int8_uint8io` / `int8_pertensor` for the non-default variants."""
    name = mode.name
    if io_type and io_type != mode.io_type:
        name += f"_{io_type}io"
    if not per_channel:
        name += "_pertensor"
    return name


def convert(cfg: ConvertConfig) -> list[dict]:
    """Convert the trained model of `artifacts/<dataset>_<model>/` in each mode; returns the manifests."""
    from tfq.train import load_model  # the trained model's loader and its "how to make it" error

    data.get(cfg.dataset)
    models.get(cfg.model)
    modes = modes_from(list(cfg.modes))
    # --io_type and --per_channel=false apply to the modes that take them; a single mode must take them.
    variants = []
    for mode in modes:
        fits = len(modes) == 1
        io_type = cfg.io_type if cfg.io_type and (fits or cfg.io_type in mode.io_types) else None
        per_channel = cfg.per_channel if (fits or mode.per_channel_option) else True
        check_variant(mode, io_type, per_channel)
        variants.append((mode, io_type, per_channel))
    cli.check_at_least(cfg, 1, "num_calibration")
    run = artifacts.check_writable(artifacts.run_dir(cfg.artifacts, cfg.dataset, cfg.model))
    model = load_model(run)
    source_digest = artifacts.sha256(run / artifacts.MODEL_FILE)
    calibration = None
    if any(m.calibrate for m in modes):
        splits = data.load(cfg.dataset, root=cfg.data_root, cache=cfg.cache_dir)
        calibration = data.calibration_samples(splits, cfg.num_calibration, seed=cfg.seed)
    results = []
    for mode, io_type, per_channel in variants:
        started = time.time()
        blob, settings = convert_model(model, mode, calibration=calibration if mode.calibrate else None,
                                       io_type=io_type, per_channel=per_channel)
        fb = inspect.read(blob)
        name = output_name(mode, io_type, per_channel)
        manifest = {
            "mode": mode.name,
            "file": f"{name}.tflite",
            "description": mode.description,
            "size_bytes": len(blob),
            "converter": settings,
            "calibration_samples": len(calibration) if mode.calibrate else 0,
            "convert_time_s": round(time.time() - started, 2),
            "flatbuffer": fb.summary(),
            "source_model": {"path": str(run / artifacts.MODEL_FILE), "sha256": source_digest},
            "versions": versions(),
        }
        with artifacts.atomic_paths(run / f"{name}.tflite", run / f"{name}.json") as (blob_tmp, json_tmp):
            blob_tmp.write_bytes(blob)
            artifacts.write_json(json_tmp, manifest)
        results.append(manifest)
    return results


FLAGS = flags.FLAGS


def _define_flags() -> None:
    cli.define_common_flags()
    flags.DEFINE_list("mode", ["int8"], f"One or more of {', '.join(MODES)}, or all.")
    flags.DEFINE_integer("num_calibration", DEFAULT_CALIBRATION, "Training images used to calibrate int8/int16x8.")
    flags.DEFINE_enum("io_type", None, ["float32", "int8", "uint8", "int16"],
                      "Input/output dtype (default: the mode's own).")
    flags.DEFINE_boolean("per_channel", True, "Per-channel weight scales (false: one scale per tensor).")
    flags.DEFINE_integer("seed", 0, "Seed for picking calibration samples.")


def main(argv):
    del argv
    for m in convert(cli.config_from_flags(ConvertConfig, modes="mode")):
        fb = m["flatbuffer"]
        print(f"{m['file']:24s} {m['size_bytes']:>9,d} bytes  weights {'/'.join(fb['weight_dtypes'])}  "
              f"activations {'/'.join(fb['activation_dtypes'])}  in {fb['inputs'][0]['dtype']}")


if __name__ == "__main__":
    _define_flags()
    cli.run(main)
