"""Mixed precision: one precision per layer, the smallest or fastest file within an accuracy budget:
`python -m tfq.mixed --dataset=cifar10 --model=cnn --max_accuracy_drop=0.5 [--objective=size|latency]`
(also `python -m tfq.convert --mode=mixed ...`, which the CLI layer hands to this stage).

For each budget and objective, `tfq.quant.mixed_search.search` chooses the per-layer precisions on the
validation split, ranking layers by the sensitivity stage's results; each choice is written as a real
ai-edge-quantizer file whose every layer's precision was read back, its recipe (reusable with
`python -m tfq.convert --recipe=`) and a manifest with the search path and validation and test accuracy,
size and latency. The test split is scored, never used to choose.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time

import numpy as np
from absl import flags

from tfq import data, models, sensitivity
from tfq.core import artifacts, cli
from tfq.core.artifacts import TfqError
from tfq.core.backend import versions
from tfq.quant import mixed_search
from tfq.quant.modes import DEFAULT_CALIBRATION
from tfq.runtimes import flatbuffer, harness


@dataclasses.dataclass
class MixedConfig(cli.Run):
    max_accuracy_drop: tuple[float, ...] = cli.setting(
        (), "Allowed drop in validation accuracy against float32, in points (several: one file each)."
    )
    objective: tuple[str, ...] = cli.setting(
        ("size",), "size (smallest file) or latency (fastest on this CPU); several: one file each."
    )
    output: str = cli.setting("mixed", "File stem for one budget and objective.")
    num_calibration: int = cli.setting(DEFAULT_CALIBRATION, "Training images that calibrate every rung.")
    seed: int = cli.setting(0, "Seed for picking calibration samples.")
    latency_runs: int = cli.setting(100, "Timed batch-1 invokes per file.")
    max_eval_examples: int = cli.setting(0, "Use only this many validation/test examples (0: all).")


def planned(cfg: MixedConfig) -> list[tuple[float, str, str]]:
    """(budget, objective, file stem) of each mixed model a config asks for."""
    pairs = [(b, o) for o in dict.fromkeys(cfg.objective) for b in dict.fromkeys(map(float, cfg.max_accuracy_drop))]
    if len(pairs) == 1 and cfg.output:
        return [(*pairs[0], cfg.output)]
    return [(b, o, f"mixed_{o}_{b:g}") for b, o in pairs]


def _check(cfg: MixedConfig) -> MixedConfig:
    try:
        cfg = dataclasses.replace(cfg, max_accuracy_drop=tuple(float(b) for b in cfg.max_accuracy_drop))
    except ValueError:
        raise TfqError(
            f"--max_accuracy_drop={','.join(map(str, cfg.max_accuracy_drop))}: expected numbers of points, e.g. 0.3"
        ) from None
    if not cfg.max_accuracy_drop:
        raise TfqError("--mode=mixed needs --max_accuracy_drop (points of validation accuracy, e.g. 0.3)")
    if any(not 0 <= b <= 100 for b in cfg.max_accuracy_drop):
        raise TfqError(f"--max_accuracy_drop={','.join(map(str, cfg.max_accuracy_drop))}: points from 0 to 100")
    bad = [o for o in cfg.objective if o not in mixed_search.OBJECTIVES]
    if bad or not cfg.objective:
        raise TfqError(f"--objective={','.join(cfg.objective)}: choose from {', '.join(mixed_search.OBJECTIVES)}")
    cli.check_at_least(cfg, 1, "num_calibration", "latency_runs")
    return cfg


def mixed(cfg: MixedConfig, log=None) -> list[dict]:
    """For each budget and objective, the per-layer precisions `tfq.quant.mixed_search.search`
    chooses on the validation split, as a real file (every layer's precision read back), its
    recipe (reusable with --recipe) and a manifest with the search path and validation and test
    accuracy, size and latency. The sensitivity it ranks layers by is the run's sensitivity.json
    when that was measured with the same float model and calibration; else it is measured here.
    `log` gets each search step."""
    data.spec_of(cfg)
    models.check(cfg)
    cfg = _check(cfg)
    run = artifacts.check_writable(models.run_of(cfg))
    sc = sensitivity.SensitivityConfig(
        **cfg.run(), num_calibration=cfg.num_calibration, seed=cfg.seed, max_eval_examples=cfg.max_eval_examples
    )
    scorer, digest, splits = sensitivity.scorer_for(sc, run)
    sens = artifacts.read_json(run / sensitivity.SENSITIVITY_JSON, default={})
    if sens.get("key") != sc.key(digest, scorer.input_range):
        sens = sensitivity.sensitivity(sc)
    test_images, test_labels = data.to_numpy(splits.test)
    names = [layer.name for layer in scorer.layers]
    uniform = {r: scorer.build(dict.fromkeys(names, r)) for r in ("float", "int8", "w4")}
    test_correct = {}

    def on_test(blob: bytes) -> np.ndarray:
        key = hashlib.sha256(blob).hexdigest()
        if key not in test_correct:
            test_correct[key] = mixed_search.predict(blob, test_images, scorer.input_range) == test_labels
        return test_correct[key]

    results = []
    for budget, objective, stem in planned(cfg):
        started = time.time()
        found = mixed_search.search(scorer, sens, budget, objective, log=log)
        rules = mixed_search.recipe(found["assignment"], scorer.layers)
        blob = scorer.build(found["assignment"])
        held = mixed_search.check(blob, found["assignment"], scorer.layers, f"{stem}.tflite")
        val, val_float = scorer.correct(blob), scorer.float_correct
        test, test_float = on_test(blob), on_test(uniform["float"])
        manifest = {
            "mode": "mixed",
            "file": f"{stem}.tflite",
            "recipe_file": f"{stem}.recipe.json",
            "budget_pts": budget,
            "objective": objective,
            "ladder": found["ladder"],
            "assignment": found["assignment"],
            "layers": [
                {"name": layer.name, "params": layer.params, "macs": layer.macs, **held[layer.name]}
                for layer in scorer.layers
            ],
            "path": found["path"],
            "candidates": len(found["path"]),
            "files_scored": found["files_scored"],  # candidates not already scored (cache shared by budgets)
            "search_seconds": round(time.time() - started, 1),
            "validation": {
                "examples": int(len(val)),
                "float32_accuracy": float(val_float.mean()),
                "accuracy": float(val.mean()),
                "vs_float32": mixed_search.paired_vs(val_float, val),
            },
            "test": {
                "examples": int(len(test)),
                "float32_accuracy": float(test_float.mean()),
                "accuracy": float(test.mean()),
                "vs_float32": mixed_search.paired_vs(test_float, test),
                "uniform": {
                    r: {
                        "accuracy": float(on_test(b).mean()),
                        "size_bytes": len(b),
                        "mixed_minus_uniform": mixed_search.paired_vs(on_test(b), test),
                    }
                    for r, b in uniform.items()
                },
            },
            "size_bytes": len(blob),
            "tflite_sha256": hashlib.sha256(blob).hexdigest(),
            "calibration": sens["calibration"],
            "sensitivity": sensitivity.SENSITIVITY_JSON,
            "remake": f"python -m tfq.convert --dataset={cfg.dataset} --model={cfg.model} --recipe={stem}.recipe.json "
            f"--calibration_rule={mixed_search.CALIBRATION_RULE} --num_calibration={cfg.num_calibration} "
            f"--seed={cfg.seed}",
            "flatbuffer": flatbuffer.read(blob).summary(),
            "source_model": {
                "path": str(models.source_file(run)),
                "sha256": artifacts.sha256(models.source_file(run)),
            },
            "float32_sha256": digest,
            "input_range": list(scorer.input_range),
            "versions": versions(),
        }
        results.append((manifest, blob, rules))
    blobs = {"float32": uniform["float"], "int8": uniform["int8"], **{m["file"]: b for m, b, _ in results}}
    latency = harness.interleaved_latency_us(
        {k: harness.Classifier(b, label=k, input_range=scorer.input_range) for k, b in blobs.items()},
        test_images[0],
        runs=cfg.latency_runs,
    )
    for manifest, blob, rules in results:
        manifest["latency_us"] = {
            "mixed": latency[manifest["file"]]["p50"],
            "float32": latency["float32"]["p50"],
            "int8": latency["int8"]["p50"],
            "runs": cfg.latency_runs,
        }
        stem = manifest["file"].removesuffix(".tflite")
        with artifacts.atomic_paths(run / f"{stem}.tflite", run / f"{stem}.recipe.json", run / f"{stem}.json") as (
            blob_tmp,
            recipe_tmp,
            json_tmp,
        ):
            blob_tmp.write_bytes(blob)
            artifacts.write_json(recipe_tmp, rules)
            artifacts.write_json(json_tmp, manifest)
    return [m for m, _, _ in results]


FLAGS = flags.FLAGS


def _define_flags() -> None:
    cli.define_flags(MixedConfig)
    flags.DEFINE_enum("mode", "mixed", ["mixed"], "Only mixed: lets `python -m tfq.convert --mode=mixed ...` run here.")


def main(argv):
    del argv
    for m in mixed(cli.config_from_flags(MixedConfig), log=print):
        v, t = m["validation"], m["test"]
        print(
            f"{m['file']}: {m['size_bytes']:,d} bytes, {m['latency_us']['mixed']:.0f} us; "
            f"{' '.join(x['name'] + '=' + x['rung'] for x in m['layers'])}; validation drop "
            f"{-v['vs_float32']['delta_pts']:.2f} pts (budget {m['budget_pts']:g}), test drop "
            f"{-t['vs_float32']['delta_pts']:.2f} pts [95% CI {-t['vs_float32']['ci95_pts'][1]:.2f}, "
            f"{-t['vs_float32']['ci95_pts'][0]:.2f}]; "
            f"{m['candidates']} candidates, {m['files_scored']} of them scored anew"
        )


if __name__ == "__main__":
    cli.run(main, _define_flags)
