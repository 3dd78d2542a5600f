"""The report's inputs: every run folder's result files read once, the ones that no longer describe their
files set aside with the reason, and one row per evaluated flatbuffer. Every section reads a `Study`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from tfq.core import artifacts, stages, stats
from tfq.quant.modes import ORDER
from tfq.reporting.drops import drops

NO_XNNPACK = "all (no XNNPACK)"  # a row's ops_outside_delegate when XNNPACK took nothing
COLUMNS = (
    "dataset",
    "model",
    "mode",
    "accuracy",
    "delta_pts",
    "delta_ci95_pts",
    "mcnemar_p",
    "agreement",
    "size_bytes",
    "size_ratio",
    "p50_us",
    "speedup",
    "speedup_spread",
    "ops_outside_delegate",
    "data_source",
)


@dataclasses.dataclass
class Study:
    """What every section reads: `collect`'s rows (one per evaluated flatbuffer), its runs (each run's
    result files, restated, by "<dataset>_<model>"), the results left out as stale, and the plots written."""

    rows: list[dict]
    runs: dict[str, dict]
    stale: list[dict] = dataclasses.field(default_factory=list)
    plots: list[str] = dataclasses.field(default_factory=list)


def collect(artifacts_root: str | Path, pairs) -> tuple[list[dict], dict, list[dict]]:
    """One row per evaluated flatbuffer of each (dataset, model) in `pairs`, plus per-run extras
    (training, QAT, stage times), plus the results left out as stale."""
    rows, runs, stale_results = [], {}, []
    for dataset, model in pairs:
        run = artifacts.run_dir(artifacts_root, dataset, model)
        train_info = artifacts.read_json(run / artifacts.TRAIN_JSON, default=None)
        evals = {}
        for p in sorted(run.glob("eval_*.json")):
            e = artifacts.read_json(p)
            why = stale(e, run, train_info)
            if why:
                stale_results.append({"run": run.name, "file": p.name, "why": why})
            else:
                evals[p.stem[len("eval_") :]] = e
        if not evals:
            continue
        qat_info = artifacts.read_json(run / "qat_int8.json", default=None)
        made_from = (qat_info or {}).get("source_model", {}).get("sha256")
        if qat_info and train_info and made_from != train_info.get("model_sha256"):
            stale_results.append(
                {
                    "run": run.name,
                    "file": "qat_int8.json",
                    "why": "it was fine-tuned from an older trained model",
                }
            )
            qat_info = None
        low_bit = artifacts.read_json(run / "qat_lowbit.json", default=None)
        shipped = ((low_bit or {}).get("schemes", {}).get("w4a8") or {}).get("shipped") or {}
        if "float32_sha256" in shipped and (
            not (run / "float32.tflite").is_file()
            or shipped["float32_sha256"] != artifacts.sha256(run / "float32.tflite")
        ):
            stale_results.append(
                {
                    "run": run.name,
                    "file": "qat_lowbit.json (against float32)",
                    "why": "float32.tflite changed since the shipped 4-bit files were paired with it",
                }
            )
            for key in ("vs_float32_file", "ptq_file_vs_float32_file"):
                shipped.pop(key, None)
        if low_bit and train_info and low_bit["source_model"]["sha256"] != train_info.get("model_sha256"):
            stale_results.append(
                {
                    "run": run.name,
                    "file": "qat_lowbit.json",
                    "why": "it was fine-tuned from an older trained model",
                }
            )
            low_bit = None
        scratch = {}
        for path in sorted(run.glob("qat_scratch_*.json")):
            info = artifacts.read_json(path)
            if train_info and info["source_model"]["sha256"] != train_info.get("model_sha256"):
                stale_results.append(
                    {
                        "run": run.name,
                        "file": path.name,
                        "why": "it is compared with an older trained model",
                    }
                )
            else:
                scratch[info["scheme"]] = info
        sweep_info = artifacts.read_json(run / "sweep.json", default=None)
        if sweep_info and train_info and sweep_info["source_model"]["sha256"] != train_info.get("model_sha256"):
            stale_results.append({"run": run.name, "file": "sweep.json", "why": "it simulated an older trained model"})
            sweep_info = None
        for check in (sweep_info or {}).get("checks", [])[:]:
            path = run / check["file"]
            if "informative" not in check:
                stale_results.append(
                    {
                        "run": run.name,
                        "file": f"sweep.json check of {check['file']}",
                        "why": "made before checks stood beside float32's own agreement",
                    }
                )
                sweep_info["checks"].remove(check)
            elif not path.is_file() or artifacts.sha256(path) != check["tflite_sha256"]:
                stale_results.append(
                    {
                        "run": run.name,
                        "file": f"sweep.json check of {check['file']}",
                        "why": f"{check['file']} changed or went after the check",
                    }
                )
                sweep_info["checks"].remove(check)
        sensitivity_info = artifacts.read_json(run / "sensitivity.json", default=None)
        float_file = run / "float32.tflite"
        if sensitivity_info and (
            not float_file.is_file() or sensitivity_info["key"]["float32_sha256"] != artifacts.sha256(float_file)
        ):
            stale_results.append(
                {
                    "run": run.name,
                    "file": "sensitivity.json",
                    "why": "it measured another float32.tflite",
                }
            )
            sensitivity_info = None
        if sensitivity_info and "val_vs_float32" not in next(iter(sensitivity_info["rungs"].values())):
            stale_results.append(
                {
                    "run": run.name,
                    "file": "sensitivity.json",
                    "why": "it keeps intervals without their counts (made before they could be restated)",
                }
            )
            sensitivity_info = None
        mixed_info = []
        for path in sorted(run.glob("mixed*.json")):
            if path.name.endswith(".recipe.json"):
                continue
            info = artifacts.read_json(path)
            why = _mixed_stale(info, run, train_info)
            if why:
                stale_results.append({"run": run.name, "file": path.name, "why": why})
            else:
                mixed_info.append(info)
        micro_info = _micro_current(run, "micro.json", stale_results, run.name)
        micro_full = _micro_current(run, "micro_full.json", stale_results, run.name)
        generalize_info = artifacts.read_json(run / "generalize.json", default=None)
        changed = [
            name
            for name, digest in (generalize_info or {}).get("files", {}).items()
            if not (run / f"{name}.tflite").is_file() or artifacts.sha256(run / f"{name}.tflite") != digest
        ]
        if changed:
            stale_results.append(
                {
                    "run": run.name,
                    "file": "generalize.json",
                    "why": f"{', '.join(sorted(changed))} changed or went after it was measured",
                }
            )
            generalize_info = None
        found = stats.restated(
            {
                "train": train_info,
                "generalize": generalize_info,
                "micro": micro_info,
                "micro_full": micro_full,
                "sensitivity": sensitivity_info,
                "mixed": mixed_info,
                "qat": qat_info,
                "sweep": sweep_info,
                "low_bit": low_bit,
                "scratch": scratch,
                "stages": artifacts.read_json(run / stages.STATE_FILE, default={}),
                "evals": evals,
            }
        )
        if found["sensitivity"]:  # its drops follow its restated paired results
            drops(found["sensitivity"])
        runs[run.name] = found
        base = evals.get("float32")
        order = sorted(evals, key=mode_rank)
        for mode in order:
            e = evals[mode]
            same = _comparable(base, e)
            paired = _paired_with(base, e) if same else None
            rows.append(
                {
                    "dataset": artifacts.dataset_label(dataset),
                    "model": model,
                    "mode": mode,
                    "accuracy": e["accuracy"],
                    # from the paired counts where they exist, so Δ and its interval are one comparison
                    "delta_pts": (
                        100 * (paired[1] - paired[0]) / paired[2]
                        if paired
                        else 100 * (e["accuracy"] - base["accuracy"])
                        if same
                        else None
                    ),
                    "delta_ci95_pts": paired and stats.interval_pts(*paired),
                    "mcnemar_p": paired and stats.mcnemar_p(*paired[:2]),
                    "agreement": e["agreement"],
                    "size_bytes": e["size_bytes"],
                    "size_ratio": e["size_bytes"] / base["size_bytes"] if base else None,
                    "p50_us": e["latency_us"]["p50"],
                    "speedup": base["latency_us"]["p50"] / e["latency_us"]["p50"] if base else None,
                    "speedup_spread": _ratio_spread(base, e) if base else None,
                    "comparable": same if base else None,
                    "ops_outside_delegate": " ".join(sorted(set(e["ops_outside_delegate"])))
                    if e["xnnpack"]
                    else NO_XNNPACK,
                    "data_source": e["data_source"]["description"],
                    "examples": e["examples"],
                    "per_class_accuracy": e["per_class_accuracy"],
                    "threads": e["threads"],
                    "cpu": e["cpu"],
                }
            )
    return rows, runs, stale_results


def stale(e: dict, run: Path, train_info: dict | None) -> str | None:
    """Why an eval_*.json no longer describes the files in its run folder, or None if it does."""
    path = run / f"{e.get('name', '')}.tflite"
    if not e.get("tflite_sha256"):
        return "it records no digest of the file it measured"
    if not path.is_file():
        return f"{path.name} is gone"
    if artifacts.sha256(path) != e["tflite_sha256"]:
        return f"{path.name} changed after it was measured"
    model = (train_info or {}).get("model_sha256")
    if model and e.get("source_model_sha256") and e["source_model_sha256"] != model:
        return f"{path.name} was made from an older trained model"
    return None


def _micro_current(run: Path, name: str, stale_results: list, label: str) -> dict | None:
    """A run's micro result file without the entries whose .tflite changed or went since."""
    info = artifacts.read_json(run / name, default=None)
    for v in (info or {}).get("variants", [])[:]:
        path = run / Path(v["file"]).name
        if not path.is_file() or artifacts.sha256(path) != v["tflite_sha256"]:
            stale_results.append(
                {
                    "run": label,
                    "file": f"{name} entry {v['name']}",
                    "why": f"{path.name} changed or went after TFLite Micro ran it",
                }
            )
            info["variants"].remove(v)
    return info


def _mixed_stale(info: dict, run: Path, train_info: dict | None) -> str | None:
    """Why a mixed-precision manifest no longer describes the run's files, or None."""
    made, float_file = run / info["file"], run / "float32.tflite"
    if train_info and info["source_model"]["sha256"] != train_info.get("model_sha256"):
        return "it was searched for an older trained model"
    if not float_file.is_file() or artifacts.sha256(float_file) != info["float32_sha256"]:
        return "it was searched from another float32.tflite"
    if "only_reference_right" not in info["test"]["vs_float32"]:
        return "it keeps intervals without their counts (made before they could be restated)"
    if (
        not made.is_file()
        or made.stat().st_size != info["size_bytes"]
        or ("tflite_sha256" in info and artifacts.sha256(made) != info["tflite_sha256"])
    ):
        return f"{info['file']} changed or went after it was written"
    return None


def _comparable(base: dict | None, e: dict) -> bool:
    """A row's Δ against float32 means something only on the same images from the same data."""
    return bool(base) and all(e.get(k) == base.get(k) for k in ("examples", "split", "data_source"))


def _paired_with(base: dict, e: dict) -> tuple[int, int, int] | None:
    """(only float32 right, only the mode right, images) when the mode's paired test was run
    against this very float32 file; the interval and p are recomputed from these counts."""
    t, ref = e.get("vs_reference"), e.get("reference") or {}
    if not t or ref.get("sha256") != base.get("tflite_sha256") or t.get("images") != e.get("examples"):
        return None
    return t["only_reference_right"], t["only_other_right"], t["images"]


def _ratio_spread(base: dict, e: dict) -> list[float] | None:
    """float32's p50 over the mode's, round by round (the rounds interleaved both): min and max."""
    a, b = base["latency_us"].get("round_p50"), e["latency_us"].get("round_p50")
    if not a or not b or len(a) != len(b) or "float32" not in e["latency_us"].get("measured_with", []):
        return None
    ratios = [x / y for x, y in zip(a, b)]
    return [min(ratios), max(ratios)]


def mode_rank(mode: str) -> tuple:
    """Modes in `tfq.quant.modes.ORDER`, then any other by name."""
    return (ORDER.index(mode) if mode in ORDER else len(ORDER), mode)
