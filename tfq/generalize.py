"""Does quantization cost more away from the test set? `python -m tfq.generalize --dataset=mnist --model=cnn`

Every .tflite of a run on shifted copies of its test split (`tfq.data.corruptions`: one seeded subset,
every corruption at every severity, plus the same images clean) and, for runs whose classes
another dataset shares (MNIST -> USPS in two framings, EMNIST-digits with internet), on that
dataset's whole test split through `tfq.evaluate --eval_dataset`. Writes `generalize.json`:
accuracy per set, agreement with float32, and the quantization gap (variant minus float32) under
shift beside the gap on the same images clean, with the difference of the two paired per image
(bootstrap over images, seeded). Predictions go to `generalize.npz`.

Expected on the study's MNIST CNN (report.md, "Generalization"): float32 99.6% clean and about 70%
over the shifted sets; the int8 files within 0.1 point of float32 under shift as on clean images.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from pathlib import Path

import numpy as np
from absl import flags

from tfq import data, evaluate, models
from tfq.core import artifacts, cli, console, stats
from tfq.core.artifacts import TfqError
from tfq.data import corruptions
from tfq.runtimes import harness, litert

GENERALIZE_JSON, GENERALIZE_NPZ = "generalize.json", "generalize.npz"


@dataclasses.dataclass
class GeneralizeConfig(cli.Run):
    modes: tuple[str, ...] = cli.setting(("all",), "Files to measure (their <mode>.tflite), or all.", flag="mode")
    examples: int = cli.setting(250, "Test images per shifted set: a seeded subset (0: all).")
    seed: int = cli.setting(0, "Seed of the subset and of the corruptions' random draws.")
    cross_datasets: tuple[str, ...] = cli.setting(
        (),
        "Other datasets' test splits to score on (same classes), e.g. "
        "usps,usps_resized,emnist_digits for an MNIST run.",
    )
    shift: bool = cli.setting(True, "Score the shifted (corrupted) copies of the test split.")
    batch_size: int = cli.setting(256, "Inference batch.")
    processes: int = cli.setting(0, "Worker processes for files XNNPACK does not take (0: every core).")
    max_eval_examples: int = 0


def compatible(dataset: str, others) -> list[str]:
    """The datasets of `others` a model of `dataset` can be scored on (same classes and shape)."""
    own = data.get(dataset)
    return [o for o in others if o != dataset and (data.get(o).labels, data.get(o).shape) == (own.labels, own.shape)]


def gaps(correct: np.ndarray, reference: np.ndarray, names: list[str], seed: int) -> dict:
    """Variant minus float32 on the same images, in points (rows of `correct` are the sets in
    `names`): clean (McNemar's exact test), under shift (each image's mean gap over the corrupted
    sets), shift minus clean (per image), and per corruption (mean over its severities), the last
    three each with a bootstrap interval over images, a sign-flip p and the images that differ."""
    diff = correct.astype(np.float64) - reference  # sets x images, each -1, 0 or 1
    clean = names.index(corruptions.CLEAN)
    shifted = [i for i in range(len(names)) if i != clean]
    per_image_shift = diff[shifted].mean(axis=0)
    by_corruption: dict[str, list[int]] = {}
    for i in shifted:
        by_corruption.setdefault(names[i].split("/")[0], []).append(i)
    return {
        "clean": stats.paired(reference[clean].astype(bool), correct[clean].astype(bool)),
        "shift": stats.paired_mean(per_image_shift, seed),
        "shift_minus_clean": stats.paired_mean(per_image_shift - diff[clean], seed),
        "by_corruption": {c: stats.paired_mean(diff[rows].mean(axis=0), seed) for c, rows in by_corruption.items()},
        "by_set": {names[i]: stats.paired(reference[i].astype(bool), correct[i].astype(bool)) for i in shifted},
    }


def _targets(cfg: GeneralizeConfig, run: Path) -> list[tuple[str, Path]]:
    ec = evaluate.EvalConfig(dataset=cfg.dataset, model=cfg.model, modes=cfg.modes, artifacts=cfg.artifacts)
    targets = evaluate.target_files(ec, run)
    if not any(name == "float32" for name, _ in targets):
        if not (run / "float32.tflite").is_file():
            raise TfqError(
                f"no {run / 'float32.tflite'}: gaps are against float32; make it with: "
                f"python -m tfq.convert --dataset={cfg.dataset} --model={cfg.model} --mode=float32"
            )
        targets.append(("float32", run / "float32.tflite"))
    return sorted(targets, key=lambda t: (t[0] != "float32", t[0]))


def shift(cfg: GeneralizeConfig, run: Path, targets, spec) -> tuple[dict, dict]:
    """Every target on every shifted set; (summary, predictions by file: sets x images)."""
    splits = data.load_of(cfg, max_eval=cfg.max_eval_examples or None)
    images, labels = data.to_numpy(splits.test)
    chosen = corruptions.subset(len(labels), cfg.examples, cfg.seed)
    names = corruptions.set_names(images.shape[1:])  # the run's shape: an image folder's is its model's
    started = time.perf_counter()
    sets = corruptions.shifted_sets(cfg.dataset, images[chosen], seed=cfg.seed, cache=data.cache_dir(cfg.cache_dir))
    made_s = time.perf_counter() - started
    stacked = np.concatenate([sets[n] for n in names])
    y = labels[chosen]
    predictions, variants, seconds = {}, [], {}
    pixels = models.input_range(run, cfg.input_range)
    for name, path in console.progress(
        targets, f"shifted sets {artifacts.run_dir(cfg.artifacts, cfg.dataset, cfg.model).name}"
    ):
        clf = harness.Classifier(
            path,
            batch_size=cfg.batch_size,
            input_shape=spec.shape,
            num_classes=spec.num_classes,
            input_range=pixels,
        )
        processes = 1 if clf.delegation()["xnnpack"] else (cfg.processes or litert.cores())
        t0 = time.perf_counter()
        raw = clf.invoke_prepared(clf.prepare(stacked), processes)
        seconds[name] = time.perf_counter() - t0
        predictions[name] = harness.dequantize(raw, clf.output).argmax(1).astype(np.int16).reshape(len(names), -1)
    reference = predictions["float32"] == y
    seen: dict[bytes, str] = {}
    for name, path in targets:
        pred = predictions[name]
        correct = pred == y
        twin = seen.setdefault(pred.tobytes(), name)
        row = {
            "name": name,
            "file": str(path),
            "tflite_sha256": artifacts.sha256(path),
            # another file gave these very classes on every image of every set: not separate evidence
            "same_predictions_as": None if twin == name else twin,
            "accuracy": {n: float(correct[i].mean()) for i, n in enumerate(names)},
            "agreement_with_float32": {
                n: float((pred[i] == predictions["float32"][i]).mean()) for i, n in enumerate(names)
            },
            "mean_shift_accuracy": float(correct[1:].mean()),
            "seconds": round(seconds[name], 2),
        }
        if name != "float32":
            row["gap"] = gaps(correct, reference, names, cfg.seed)
        variants.append(row)
    summary = {
        "examples": int(len(chosen)),
        "of_test_images": int(len(labels)),
        "subset_seed": cfg.seed,
        "subset_sha256": hashlib.sha256(chosen.astype(np.int64).tobytes()).hexdigest(),
        "sets": names,
        "corruptions": corruptions.describe(images.shape[1:]),
        "libraries": corruptions.library_versions(),
        "making_s": round(made_s, 2),
        "data_source": splits.source.to_json(),
        "variants": variants,
    }
    return summary, {**{f"shift/{k}": v for k, v in predictions.items()}, "shift/indices": chosen, "shift/labels": y}


def cross(cfg: GeneralizeConfig, other: str, targets) -> dict:
    """Every target on another dataset's whole test split, through `tfq.evaluate --eval_dataset`."""
    ec = evaluate.EvalConfig(
        dataset=cfg.dataset,
        model=cfg.model,
        modes=tuple(n for n, _ in targets),
        artifacts=cfg.artifacts,
        eval_dataset=other,
        batch_size=cfg.batch_size,
        processes=cfg.processes,
        max_eval_examples=cfg.max_eval_examples,
        data_root=cfg.data_root,
        cache_dir=cfg.cache_dir,
        input_range=cfg.input_range,
    )
    results = evaluate.evaluate(ec)
    return {
        "dataset": other,
        "examples": results[0]["examples"],
        "data_source": results[0]["data_source"],
        "variants": [
            {
                "name": r["name"],
                "accuracy": r["accuracy"],
                "agreement_with_float32": r["agreement"],
                "vs_float32": r["vs_reference"],
                "file": str(evaluate.result_stem(Path(r["file"]), r["name"], eval_dataset=other)) + ".json",
            }
            for r in results
        ],
    }


def generalize(cfg: GeneralizeConfig) -> dict:
    """Shifted sets and other datasets for every file of a run; writes generalize.json/.npz."""
    data.get(cfg.dataset, cfg.image_size)  # a known dataset; its run's shape once the run (or an import) is there
    models.check(cfg)
    cli.check_at_least(cfg, 0, "examples", "processes", "max_eval_examples")
    cli.check_at_least(cfg, 1, "batch_size")
    for other in cfg.cross_datasets:
        evaluate.cross_dataset(evaluate.EvalConfig(dataset=cfg.dataset, eval_dataset=other))
    if not cfg.shift and not cfg.cross_datasets:
        raise TfqError("--noshift with no --cross_datasets leaves nothing to measure")
    run = artifacts.check_writable(models.run_of(cfg))
    spec = data.spec_of(cfg)
    targets = _targets(cfg, run)
    result = {
        "dataset": cfg.dataset,
        "model": cfg.model,
        "config": dataclasses.asdict(cfg),
        "input_range": list(models.input_range(run, cfg.input_range)),
        "files": {name: artifacts.sha256(path) for name, path in targets},
    }
    npz = {}
    if cfg.shift:
        result["shift"], npz = shift(cfg, run, targets, spec)
    result["cross"] = [cross(cfg, other, targets) for other in cfg.cross_datasets]
    with artifacts.atomic_paths(run / GENERALIZE_NPZ, run / GENERALIZE_JSON) as (npz_tmp, json_tmp):
        with open(npz_tmp, "wb") as f:
            np.savez_compressed(f, **npz)
        result["predictions"] = {"file": GENERALIZE_NPZ, "sha256": artifacts.sha256(npz_tmp)}
        artifacts.write_json(json_tmp, result)
    return result


def headline(result: dict) -> str:
    """The pipeline's one line for this stage: int8's gap under shift, float32 on other datasets."""
    parts = []
    rows = {v["name"]: v for v in result.get("shift", {}).get("variants", [])}
    if "int8" in rows and "gap" in rows["int8"]:
        g = rows["int8"]["gap"]
        parts.append(
            f"int8 minus float32: clean {g['clean']['delta_pts']:+.2f}, shifted {g['shift']['pts']:+.2f} points"
        )
    for c in result.get("cross", []):
        f32 = next((v for v in c["variants"] if v["name"] == "float32"), None)
        if f32:
            parts.append(f"float32 on {c['dataset']} {100 * f32['accuracy']:.2f}%")
    return "; ".join(parts) or "done"


FLAGS = flags.FLAGS


def _define_flags() -> None:
    cli.define_flags(GeneralizeConfig)


def main(argv):
    del argv
    r = generalize(cli.config_from_flags(GeneralizeConfig, modes="mode"))
    if "shift" in r:
        s = r["shift"]
        print(f"{len(s['sets']) - 1} shifted sets x {s['examples']} images:")
        for v in s["variants"]:
            g = v.get("gap")
            line = (
                f"  {v['name']:20s} clean {100 * v['accuracy']['clean']:6.2f}%  "
                f"shifted {100 * v['mean_shift_accuracy']:6.2f}%"
            )
            if g:
                d = g["shift_minus_clean"]
                line += (
                    f"  gap clean {g['clean']['delta_pts']:+.2f}  shifted {g['shift']['pts']:+.2f}  "
                    f"difference {d['pts']:+.2f} [{d['ci95_pts'][0]:+.2f}, {d['ci95_pts'][1]:+.2f}] pts, "
                    f"p {d['p_value']:.3f}"
                )
            print(line)
    for c in r["cross"]:
        print(f"{c['dataset']} ({c['examples']} test images):")
        for v in c["variants"]:
            print(
                f"  {v['name']:20s} {100 * v['accuracy']:6.2f}%  agreement with float32 "
                f"{100 * (v['agreement_with_float32'] or 0):6.2f}%"
            )


if __name__ == "__main__":
    cli.run(main, _define_flags)
