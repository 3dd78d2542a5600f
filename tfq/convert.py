"""Post-training conversion: `python -m tfq.convert --dataset=mnist --model=cnn --mode=int8`.

Every mode is one row of `MODES`. The converter's rows become TFLiteConverter settings; the
ai-edge-quantizer rows (`aeq_*`) apply their recipe (`tfq/quant/recipes/*.json`) to the run's
`float32.tflite`, calibrated on the same training images; `--recipe=FILE` applies a user's recipe
the same way. Writes `<mode>.tflite` and `<mode>.json` (settings, calibration count, input/output
dtypes with scale and zero point, what the flatbuffer holds, source model digest) beside the
trained model, after checking the file against what its row promises.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from absl import flags

from tfq import data, models
from tfq.core import artifacts, cli, console
from tfq.core.artifacts import TfqError
from tfq.core.backend import fresh_session, keras, tf, versions
from tfq.quant import aeq
from tfq.quant.modes import (
    DEFAULT_CALIBRATION,
    MODES,
    Mode,
    check_variant,
    modes_from,
    output_name,
    recipe_mode,
    verify,
)
from tfq.runtimes import flatbuffer


def converter_for(
    model: keras.Model, mode: Mode, *, calibration=None, io_type: str | None = None, per_channel: bool = True
) -> tuple[tf.lite.TFLiteConverter, dict]:
    """TFLiteConverter set up for `mode`; also returns the settings as plain data for the manifest."""
    io_type = check_variant(mode, io_type, per_channel)
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    settings = {
        "optimizations": [],
        "supported_ops": [mode.ops],
        "supported_types": list(mode.supported_types),
        "inference_input_type": io_type,
        "inference_output_type": io_type,
        "per_channel": per_channel if mode.per_channel_option else None,
    }
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
    with console.quiet():  # the converter's C++ progress lines and MLIR dumps
        try:
            blob = conv.convert()
        except Exception as e:  # noqa: BLE001 - the converter raises ConverterError and friends
            first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
            # raised inside quiet(): a TfqError is the whole story, the captured log is not replayed
            raise TfqError(f"--mode={mode.name}: conversion failed: {first}") from None
    return bytes(blob), settings


@dataclasses.dataclass
class ConvertConfig(cli.Run):
    modes: tuple[str, ...] = cli.setting(
        ("int8",),
        f"One or more of {', '.join(MODES)}, or all; mixed (alone) is the mixed "
        "stage (python -m tfq.mixed), which the command line hands over to.",
        flag="mode",
    )
    num_calibration: int = cli.setting(DEFAULT_CALIBRATION, "Training images used to calibrate int8/int16x8.")
    io_type: str | None = cli.setting(
        None, "Input/output dtype (default: the mode's own).", choices=["float32", "int8", "uint8", "int16"]
    )
    per_channel: bool = cli.setting(True, "Per-channel weight scales (false: one scale per tensor).")
    seed: int = cli.setting(0, "Seed for picking calibration samples.")
    recipe: str | None = cli.setting(
        None,
        "Quantize float32.tflite with this ai-edge-quantizer recipe (JSON) "
        "instead of --mode; writes recipe_<file name>.tflite.",
    )
    calibration_rule: str = cli.setting(
        "quantizer",
        "ai-edge-quantizer files: merge per-image ranges by the quantizer's own rule (a moving "
        "average for min/max recipes) or keep the running min/max (minmax, as the TFLite converter).",
        choices=list(aeq.CALIBRATION_RULES),
    )
    max_eval_examples: int = cli.setting(0, "Use only this many validation/test examples (0: all).")


def _float_flatbuffer(run: Path, source_digest: str, made: dict) -> bytes:
    """The float32.tflite the recipes start from: made in this call, or the run's own if it was
    made from the current trained model."""
    if "float32" in made:
        return made["float32"]
    path = run / "float32.tflite"
    manifest = artifacts.read_json(run / "float32.json", default=None)
    remake = models.remake_float(run)
    if not path.is_file():
        raise TfqError(f"ai-edge-quantizer recipes start from {path}, which does not exist; make it with: {remake}")
    if (manifest or {}).get("source_model", {}).get("sha256") != source_digest:
        raise TfqError(f"{path} was not made from the current {models.source_file(run).name}; remake it with: {remake}")
    return path.read_bytes()


def _modes(cfg: ConvertConfig) -> list[Mode]:
    if not cfg.recipe:
        return modes_from(list(cfg.modes))
    stem = Path(cfg.recipe).name.removesuffix(".json").removesuffix(".recipe")  # mixed_*.recipe.json
    return [recipe_mode(f"recipe_{stem}", f"ai-edge-quantizer recipe {Path(cfg.recipe).name}", cfg.recipe)]


def convert(cfg: ConvertConfig, log=None) -> list[dict]:
    """Convert the trained model of `artifacts/<dataset>_<model>/` in each mode; returns the manifests."""
    data.spec_of(cfg)
    models.check(cfg)
    if "mixed" in cfg.modes:
        raise TfqError(
            "--mode=mixed goes alone (no other mode, no --recipe): it is the mixed stage, python -m tfq.mixed"
        )
    modes = _modes(cfg)
    # --io_type and --per_channel=false apply to the modes that take them; a single mode must take them.
    variants = []
    for mode in modes:
        fits = len(modes) == 1
        io_type = cfg.io_type if cfg.io_type and (fits or cfg.io_type in mode.io_types) else None
        per_channel = cfg.per_channel if (fits or mode.per_channel_option) else True
        check_variant(mode, io_type, per_channel)
        variants.append((mode, io_type, per_channel))
    cli.check_at_least(cfg, 1, "num_calibration")
    if cfg.calibration_rule not in aeq.CALIBRATION_RULES:
        raise TfqError(f"--calibration_rule={cfg.calibration_rule}: choose from {', '.join(aeq.CALIBRATION_RULES)}")
    run = artifacts.check_writable(models.run_of(cfg))
    pixels = models.input_range(run, cfg.input_range)
    fresh_session(cfg.seed)  # names in the flatbuffer do not depend on what the process built before
    # the TFLite converter's modes start from the Keras model; ai-edge-quantizer's from float32.tflite
    model = models.load_trained(run) if any(m.family != "aeq" for m in modes) else None
    source = models.source_file(run)
    source_digest = artifacts.sha256(source)
    calibration = None
    if any(m.calibrate for m in modes):
        splits = data.load_of(cfg)
        calibration = data.calibration_samples(splits, cfg.num_calibration, seed=cfg.seed, input_range=pixels)
    results, made = [], {}
    for mode, io_type, per_channel in console.progress(
        variants, f"converting {artifacts.run_dir(cfg.artifacts, cfg.dataset, cfg.model).name}", unit="mode"
    ):
        started = time.time()
        if mode.family == "aeq":
            recipe = aeq.load(mode.recipe)
            blob = aeq.quantize(
                _float_flatbuffer(run, source_digest, made),
                recipe,
                calibration if mode.calibrate else None,
                f"--mode={mode.name}",
                calibration_rule=cfg.calibration_rule,
            )
            settings = {
                "tool": "ai-edge-quantizer",
                "recipe_file": Path(mode.recipe).name,
                "recipe": recipe,
                "from": "float32.tflite",
                "calibration_rule": cfg.calibration_rule,
            }
        else:
            blob, settings = convert_model(
                model,
                mode,
                calibration=calibration if mode.calibrate else None,
                io_type=io_type,
                per_channel=per_channel,
            )
        name = output_name(mode, io_type, per_channel)
        made[name] = blob
        fb = flatbuffer.read(blob, label=f"{name}.tflite")
        verify(mode, fb, f"{name}.tflite", io_type)
        manifest = {
            "mode": mode.name,
            "file": f"{name}.tflite",
            "description": mode.description,
            "size_bytes": len(blob),
            "converter": settings,
            "calibration_samples": len(calibration) if mode.calibrate else 0,
            "input_range": list(pixels),
            "convert_time_s": round(time.time() - started, 2),
            "flatbuffer": fb.summary(),
            "source_model": {"path": str(source), "sha256": source_digest},
            "versions": versions(),
        }
        with artifacts.atomic_paths(run / f"{name}.tflite", run / f"{name}.json") as (blob_tmp, json_tmp):
            blob_tmp.write_bytes(blob)
            artifacts.write_json(json_tmp, manifest)
        results.append(manifest)
    return results


FLAGS = flags.FLAGS


def _define_flags() -> None:
    cli.define_flags(ConvertConfig)


def main(argv):
    del argv
    if FLAGS.recipe and FLAGS["mode"].present:
        raise TfqError("--recipe and --mode do not go together: a recipe is its own mode")
    for m in convert(cli.config_from_flags(ConvertConfig, modes="mode"), log=print):
        fb = m["flatbuffer"]
        print(
            f"{m['file']:26s} {m['size_bytes']:>9,d} bytes  weights {'/'.join(fb['weight_dtypes'])}  "
            f"activations {'/'.join(fb['activation_dtypes'])}  in {fb['inputs'][0]['dtype']}"
        )


if __name__ == "__main__":
    cli.run(main, _define_flags)
