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
import hashlib
import time
from pathlib import Path

import numpy as np
from absl import flags

from tfq import data, models, sensitivity
from tfq.core import artifacts, cli, console
from tfq.core.artifacts import TfqError
from tfq.core.backend import fresh_session, keras, tf, versions
from tfq.quant import aeq, mixed
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
from tfq.runtimes import flatbuffer, harness


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
    with console.quiet():  # the converter's C++ progress lines and MLIR dumps
        try:
            blob = conv.convert()
        except Exception as e:  # noqa: BLE001 - the converter raises ConverterError and friends
            first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
            # raised inside quiet(): a TfqError is the whole story, the captured log is not replayed
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
    recipe: str | None = None  # an ai-edge-quantizer recipe file: convert with it instead of `modes`
    calibration_rule: str = "quantizer"  # ai-edge-quantizer files: its own moving average, or "minmax"
    # --mode=mixed (alone): the smallest/fastest per-layer mix within these validation drops, in points
    max_accuracy_drop: tuple[float, ...] = ()
    objective: tuple[str, ...] = ("size",)
    output: str = "mixed"  # file stem for one budget and objective; else (or if empty) mixed_<objective>_<budget>
    latency_runs: int = 100
    max_eval_examples: int = 0
    data_root: str | None = None
    cache_dir: str | None = None


def _float_flatbuffer(run: Path, source_digest: str, made: dict) -> bytes:
    """The float32.tflite the recipes start from: made in this call, or the run's own if it was
    made from the current trained model."""
    if "float32" in made:
        return made["float32"]
    path = run / "float32.tflite"
    manifest = artifacts.read_json(run / "float32.json", default=None)
    remake = f"python -m tfq.convert --dataset={run.name.rpartition('_')[0]} --model={run.name.rpartition('_')[2]} " \
             f"--mode=float32 --artifacts={run.parent}"
    if not path.is_file():
        raise TfqError(f"ai-edge-quantizer recipes start from {path}, which does not exist; make it with: {remake}")
    if (manifest or {}).get("source_model", {}).get("sha256") != source_digest:
        raise TfqError(f"{path} was not made from the current {artifacts.MODEL_FILE}; remake it with: {remake}")
    return path.read_bytes()


def _modes(cfg: ConvertConfig) -> list[Mode]:
    if not cfg.recipe:
        return modes_from(list(cfg.modes))
    stem = Path(cfg.recipe).name.removesuffix(".json").removesuffix(".recipe")  # mixed_*.recipe.json
    return [recipe_mode(f"recipe_{stem}", f"ai-edge-quantizer recipe {Path(cfg.recipe).name}", cfg.recipe)]


def convert(cfg: ConvertConfig, log=None) -> list[dict]:
    """Convert the trained model of `artifacts/<dataset>_<model>/` in each mode; returns the manifests."""
    data.get(cfg.dataset)
    models.get(cfg.model)
    if "mixed" in cfg.modes or cfg.max_accuracy_drop:
        return convert_mixed(cfg, log)
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
    run = artifacts.check_writable(artifacts.run_dir(cfg.artifacts, cfg.dataset, cfg.model))
    fresh_session(cfg.seed)  # names in the flatbuffer do not depend on what the process built before
    model = models.load_trained(run)
    source_digest = artifacts.sha256(run / artifacts.MODEL_FILE)
    calibration = None
    if any(m.calibrate for m in modes):
        splits = data.load(cfg.dataset, root=cfg.data_root, cache=cfg.cache_dir)
        calibration = data.calibration_samples(splits, cfg.num_calibration, seed=cfg.seed)
    results, made = [], {}
    for mode, io_type, per_channel in console.progress(variants, f"converting {cfg.dataset}_{cfg.model}",
                                                       unit="mode"):
        started = time.time()
        if mode.family == "aeq":
            recipe = aeq.load(mode.recipe)
            blob = aeq.quantize(_float_flatbuffer(run, source_digest, made), recipe,
                                calibration if mode.calibrate else None, f"--mode={mode.name}",
                                calibration_rule=cfg.calibration_rule)
            settings = {"tool": "ai-edge-quantizer", "recipe_file": Path(mode.recipe).name, "recipe": recipe,
                        "from": "float32.tflite", "calibration_rule": cfg.calibration_rule}
        else:
            blob, settings = convert_model(model, mode, calibration=calibration if mode.calibrate else None,
                                           io_type=io_type, per_channel=per_channel)
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


def mixed_names(cfg: ConvertConfig) -> list[tuple[float, str, str]]:
    """(budget, objective, file stem) of each mixed model a config asks for."""
    pairs = [(b, o) for o in dict.fromkeys(cfg.objective) for b in dict.fromkeys(map(float, cfg.max_accuracy_drop))]
    if len(pairs) == 1 and cfg.output:
        return [(*pairs[0], cfg.output)]
    return [(b, o, f"mixed_{o}_{b:g}") for b, o in pairs]


def _check_mixed(cfg: ConvertConfig) -> ConvertConfig:
    try:
        cfg = dataclasses.replace(cfg, max_accuracy_drop=tuple(float(b) for b in cfg.max_accuracy_drop))
    except ValueError:
        raise TfqError(f"--max_accuracy_drop={','.join(map(str, cfg.max_accuracy_drop))}: expected numbers "
                       "of points, e.g. 0.3") from None
    if list(cfg.modes) != ["mixed"] or cfg.recipe:
        raise TfqError("--mode=mixed goes alone (no other mode, no --recipe), and --max_accuracy_drop only with it")
    if not cfg.max_accuracy_drop:
        raise TfqError("--mode=mixed needs --max_accuracy_drop (points of validation accuracy, e.g. 0.3)")
    if any(not 0 <= b <= 100 for b in cfg.max_accuracy_drop):
        raise TfqError(f"--max_accuracy_drop={','.join(map(str, cfg.max_accuracy_drop))}: points from 0 to 100")
    bad = [o for o in cfg.objective if o not in mixed.OBJECTIVES]
    if bad or not cfg.objective:
        raise TfqError(f"--objective={','.join(cfg.objective)}: choose from {', '.join(mixed.OBJECTIVES)}")
    if cfg.io_type or not cfg.per_channel:
        raise TfqError("--io_type and --per_channel do not apply to --mode=mixed (each rung is its own recipe)")
    cli.check_at_least(cfg, 1, "num_calibration", "latency_runs")
    return cfg


def convert_mixed(cfg: ConvertConfig, log=None) -> list[dict]:
    """`--mode=mixed`: for each budget and objective, the per-layer precisions `tfq.quant.mixed.search`
    chooses on the validation split, as a real file (every layer's precision read back), its
    recipe (reusable with --recipe) and a manifest with the search path and validation and test
    accuracy, size and latency. The sensitivity it ranks layers by is the run's sensitivity.json
    when that was measured with the same float model and calibration; else it is measured here.
    `log` gets each search step."""
    cfg = _check_mixed(cfg)
    run = artifacts.check_writable(artifacts.run_dir(cfg.artifacts, cfg.dataset, cfg.model))
    sc = sensitivity.SensitivityConfig(dataset=cfg.dataset, model=cfg.model, artifacts=cfg.artifacts,
                                       num_calibration=cfg.num_calibration, seed=cfg.seed,
                                       max_eval_examples=cfg.max_eval_examples, data_root=cfg.data_root,
                                       cache_dir=cfg.cache_dir)
    scorer, digest, splits = sensitivity.scorer_for(sc, run)
    sens = artifacts.read_json(run / sensitivity.SENSITIVITY_JSON, default={})
    if sens.get("key") != sc.key(digest):
        sens = sensitivity.sensitivity(sc)
    test_images, test_labels = data.to_numpy(splits.test)
    names = [layer.name for layer in scorer.layers]
    uniform = {r: scorer.build(dict.fromkeys(names, r)) for r in ("float", "int8", "w4")}
    test_correct = {}

    def on_test(blob: bytes) -> np.ndarray:
        key = hashlib.sha256(blob).hexdigest()
        if key not in test_correct:
            test_correct[key] = mixed.predict(blob, test_images) == test_labels
        return test_correct[key]

    results = []
    for budget, objective, stem in mixed_names(cfg):
        started = time.time()
        found = mixed.search(scorer, sens, budget, objective, log=log)
        rules = mixed.recipe(found["assignment"], scorer.layers)
        blob = scorer.build(found["assignment"])
        held = mixed.check(blob, found["assignment"], scorer.layers, f"{stem}.tflite")
        val, val_float = scorer.correct(blob), scorer.float_correct
        test, test_float = on_test(blob), on_test(uniform["float"])
        manifest = {
            "mode": "mixed", "file": f"{stem}.tflite", "recipe_file": f"{stem}.recipe.json",
            "budget_pts": budget, "objective": objective, "ladder": found["ladder"],
            "assignment": found["assignment"],
            "layers": [{"name": layer.name, "params": layer.params, "macs": layer.macs, **held[layer.name]}
                       for layer in scorer.layers],
            "path": found["path"], "candidates": len(found["path"]),
            "files_scored": found["files_scored"],  # candidates not already scored (cache shared by budgets)
            "search_seconds": round(time.time() - started, 1),
            "validation": {"examples": int(len(val)), "float32_accuracy": float(val_float.mean()),
                           "accuracy": float(val.mean()), "vs_float32": mixed.paired_vs(val_float, val)},
            "test": {"examples": int(len(test)), "float32_accuracy": float(test_float.mean()),
                     "accuracy": float(test.mean()), "vs_float32": mixed.paired_vs(test_float, test),
                     "uniform": {r: {"accuracy": float(on_test(b).mean()), "size_bytes": len(b),
                                     "mixed_minus_uniform": mixed.paired_vs(on_test(b), test)}
                                 for r, b in uniform.items()}},
            "size_bytes": len(blob), "tflite_sha256": hashlib.sha256(blob).hexdigest(),
            "calibration": sens["calibration"], "sensitivity": sensitivity.SENSITIVITY_JSON,
            "remake": f"python -m tfq.convert --dataset={cfg.dataset} --model={cfg.model} --recipe={stem}.recipe.json "
                      f"--calibration_rule={mixed.CALIBRATION_RULE} --num_calibration={cfg.num_calibration} "
                      f"--seed={cfg.seed}",
            "flatbuffer": flatbuffer.read(blob).summary(),
            "source_model": {"path": str(run / artifacts.MODEL_FILE), "sha256": artifacts.sha256(run / artifacts.MODEL_FILE)},
            "float32_sha256": digest, "versions": versions(),
        }
        results.append((manifest, blob, rules))
    blobs = {"float32": uniform["float"], "int8": uniform["int8"], **{m["file"]: b for m, b, _ in results}}
    latency = harness.interleaved_latency_us(
        {k: harness.Classifier(b, label=k) for k, b in blobs.items()}, test_images[0], runs=cfg.latency_runs)
    for manifest, blob, rules in results:
        manifest["latency_us"] = {"mixed": latency[manifest["file"]]["p50"], "float32": latency["float32"]["p50"],
                                  "int8": latency["int8"]["p50"], "runs": cfg.latency_runs}
        stem = manifest["file"].removesuffix(".tflite")
        with artifacts.atomic_paths(run / f"{stem}.tflite", run / f"{stem}.recipe.json",
                                    run / f"{stem}.json") as (blob_tmp, recipe_tmp, json_tmp):
            blob_tmp.write_bytes(blob)
            artifacts.write_json(recipe_tmp, rules)
            artifacts.write_json(json_tmp, manifest)
    return [m for m, _, _ in results]


FLAGS = flags.FLAGS


def _define_flags() -> None:
    cli.define_common_flags()
    flags.DEFINE_list("mode", ["int8"], f"One or more of {', '.join(MODES)}, or all; or mixed (alone).")
    flags.DEFINE_integer("num_calibration", DEFAULT_CALIBRATION, "Training images used to calibrate int8/int16x8.")
    flags.DEFINE_enum("io_type", None, ["float32", "int8", "uint8", "int16"],
                      "Input/output dtype (default: the mode's own).")
    flags.DEFINE_boolean("per_channel", True, "Per-channel weight scales (false: one scale per tensor).")
    flags.DEFINE_integer("seed", 0, "Seed for picking calibration samples.")
    flags.DEFINE_string("recipe", None, "Quantize float32.tflite with this ai-edge-quantizer recipe (JSON) "
                        "instead of --mode; writes recipe_<file name>.tflite.")
    flags.DEFINE_enum("calibration_rule", "quantizer", list(aeq.CALIBRATION_RULES),
                      "ai-edge-quantizer files: merge per-image ranges by the quantizer's own rule (a moving "
                      "average for min/max recipes) or keep the running min/max (minmax, as the TFLite converter).")
    flags.DEFINE_list("max_accuracy_drop", [], "--mode=mixed: allowed drop in validation accuracy against "
                      "float32, in points (several: one file each).")
    flags.DEFINE_list("objective", ["size"], "--mode=mixed: size (smallest file) or latency (fastest on this CPU).")
    flags.DEFINE_string("output", "mixed", "--mode=mixed: file stem for one budget and objective.")
    flags.DEFINE_integer("latency_runs", 100, "--mode=mixed: timed batch-1 invokes per file.")
    cli.define_slice_flags()


def main(argv):
    del argv
    if FLAGS.recipe and FLAGS["mode"].present:
        raise TfqError("--recipe and --mode do not go together: a recipe is its own mode")
    for m in convert(cli.config_from_flags(ConvertConfig, modes="mode"), log=print):
        fb = m["flatbuffer"]
        if m["mode"] == "mixed":
            v, t = m["validation"], m["test"]
            print(f"{m['file']}: {m['size_bytes']:,d} bytes, {m['latency_us']['mixed']:.0f} us; "
                  f"{' '.join(x['name'] + '=' + x['rung'] for x in m['layers'])}; validation drop "
                  f"{-v['vs_float32']['delta_pts']:.2f} pts (budget {m['budget_pts']:g}), test drop "
                  f"{-t['vs_float32']['delta_pts']:.2f} pts [95% CI {-t['vs_float32']['ci95_pts'][1]:.2f}, "
                  f"{-t['vs_float32']['ci95_pts'][0]:.2f}]; "
                  f"{m['candidates']} candidates, {m['files_scored']} of them scored anew")
            continue
        print(f"{m['file']:26s} {m['size_bytes']:>9,d} bytes  weights {'/'.join(fb['weight_dtypes'])}  "
              f"activations {'/'.join(fb['activation_dtypes'])}  in {fb['inputs'][0]['dtype']}")


if __name__ == "__main__":
    _define_flags()
    cli.run(main)
