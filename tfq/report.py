"""The study's report, made from result files alone: `python -m tfq.report`.

Reads each run folder's `train.json`, `eval_<mode>.json`, `qat_int8.json`, `sweep.json`,
`generalize.json` and `pipeline.json`, and writes `report.md` (one table per dataset, training
curves, the ai-edge-quantizer modes and the kernels that ran them, the precision sweep with its
checks against real files and its paired scheme comparisons, QAT against its control, generalization
under shift and on other datasets, stage times), `results.csv`, `results.json` and plots: accuracy
against size with the Pareto front, batch-1 latency per mode, the per-class accuracy change of int8
against float32, accuracy against bits, training curves and the quantization gap under shift per run.
"""

from __future__ import annotations

import csv
import io
import time
from collections import Counter
from pathlib import Path

from absl import flags

from tfq import data, sensitivity
from tfq.core import artifacts, cli, stats
from tfq import models as models_module
from tfq.core.artifacts import TfqError
from tfq.quant.modes import ORDER

REPORT_MD = "report.md"
NO_XNNPACK = "all (no XNNPACK)"  # a row's ops_outside_delegate when XNNPACK took nothing
COLUMNS = ("dataset", "model", "mode", "accuracy", "delta_pts", "delta_ci95_pts", "mcnemar_p", "agreement",
           "size_bytes", "size_ratio", "p50_us", "speedup", "speedup_spread", "ops_outside_delegate", "data_source")


def collect(artifacts_root: str | Path, datasets, models) -> tuple[list[dict], dict]:
    """One row per evaluated flatbuffer, plus per-run extras (training, QAT, stage times)."""
    rows, runs, stale_results = [], {}, []
    for dataset in datasets:
        for model in models:
            run = artifacts.run_dir(artifacts_root, dataset, model)
            train_info = artifacts.read_json(run / artifacts.TRAIN_JSON, default=None)
            evals = {}
            for p in sorted(run.glob("eval_*.json")):
                e = artifacts.read_json(p)
                why = stale(e, run, train_info)
                if why:
                    stale_results.append({"run": f"{dataset}_{model}", "file": p.name, "why": why})
                else:
                    evals[p.stem[len("eval_"):]] = e
            if not evals:
                continue
            qat_info = artifacts.read_json(run / "qat_int8.json", default=None)
            made_from = (qat_info or {}).get("source_model", {}).get("sha256")
            if qat_info and train_info and made_from != train_info.get("model_sha256"):
                stale_results.append({"run": f"{dataset}_{model}", "file": "qat_int8.json",
                                      "why": "it was fine-tuned from an older trained model"})
                qat_info = None
            low_bit = artifacts.read_json(run / "qat_lowbit.json", default=None)
            shipped = ((low_bit or {}).get("schemes", {}).get("w4a8") or {}).get("shipped") or {}
            if "float32_sha256" in shipped and (not (run / "float32.tflite").is_file() or shipped["float32_sha256"]
                                                != artifacts.sha256(run / "float32.tflite")):
                stale_results.append({"run": f"{dataset}_{model}", "file": "qat_lowbit.json (against float32)",
                                      "why": "float32.tflite changed since the shipped 4-bit files were paired with it"})
                for key in ("vs_float32_file", "ptq_file_vs_float32_file"):
                    shipped.pop(key, None)
            if low_bit and train_info and low_bit["source_model"]["sha256"] != train_info.get("model_sha256"):
                stale_results.append({"run": f"{dataset}_{model}", "file": "qat_lowbit.json",
                                      "why": "it was fine-tuned from an older trained model"})
                low_bit = None
            scratch = {}
            for path in sorted(run.glob("qat_scratch_*.json")):
                info = artifacts.read_json(path)
                if train_info and info["source_model"]["sha256"] != train_info.get("model_sha256"):
                    stale_results.append({"run": f"{dataset}_{model}", "file": path.name,
                                          "why": "it is compared with an older trained model"})
                else:
                    scratch[info["scheme"]] = info
            sweep_info = artifacts.read_json(run / "sweep.json", default=None)
            if sweep_info and train_info and sweep_info["source_model"]["sha256"] != train_info.get("model_sha256"):
                stale_results.append({"run": f"{dataset}_{model}", "file": "sweep.json",
                                      "why": "it simulated an older trained model"})
                sweep_info = None
            for check in (sweep_info or {}).get("checks", [])[:]:
                path = run / check["file"]
                if "informative" not in check:
                    stale_results.append({"run": f"{dataset}_{model}", "file": f"sweep.json check of {check['file']}",
                                          "why": "made before checks stood beside float32's own agreement"})
                    sweep_info["checks"].remove(check)
                elif not path.is_file() or artifacts.sha256(path) != check["tflite_sha256"]:
                    stale_results.append({"run": f"{dataset}_{model}", "file": f"sweep.json check of {check['file']}",
                                          "why": f"{check['file']} changed or went after the check"})
                    sweep_info["checks"].remove(check)
            sensitivity_info = artifacts.read_json(run / "sensitivity.json", default=None)
            float_file = run / "float32.tflite"
            if sensitivity_info and (not float_file.is_file()
                                     or sensitivity_info["key"]["float32_sha256"] != artifacts.sha256(float_file)):
                stale_results.append({"run": f"{dataset}_{model}", "file": "sensitivity.json",
                                      "why": "it measured another float32.tflite"})
                sensitivity_info = None
            if sensitivity_info and "val_vs_float32" not in next(iter(sensitivity_info["rungs"].values())):
                stale_results.append({"run": f"{dataset}_{model}", "file": "sensitivity.json",
                                      "why": "it keeps intervals without their counts (made before they could be "
                                             "restated)"})
                sensitivity_info = None
            mixed_info = []
            for path in sorted(run.glob("mixed*.json")):
                if path.name.endswith(".recipe.json"):
                    continue
                info = artifacts.read_json(path)
                why = _mixed_stale(info, run, train_info)
                if why:
                    stale_results.append({"run": f"{dataset}_{model}", "file": path.name, "why": why})
                else:
                    mixed_info.append(info)
            micro_info = _micro_current(run, "micro.json", stale_results, f"{dataset}_{model}")
            micro_full = _micro_current(run, "micro_full.json", stale_results, f"{dataset}_{model}")
            generalize_info = artifacts.read_json(run / "generalize.json", default=None)
            changed = [name for name, digest in (generalize_info or {}).get("files", {}).items()
                       if not (run / f"{name}.tflite").is_file() or artifacts.sha256(run / f"{name}.tflite") != digest]
            if changed:
                stale_results.append({"run": f"{dataset}_{model}", "file": "generalize.json",
                                      "why": f"{', '.join(sorted(changed))} changed or went after it was measured"})
                generalize_info = None
            found = stats.restated({"train": train_info, "generalize": generalize_info, "micro": micro_info,
                                    "micro_full": micro_full, "sensitivity": sensitivity_info, "mixed": mixed_info,
                                    "qat": qat_info, "sweep": sweep_info, "low_bit": low_bit, "scratch": scratch,
                                    "stages": artifacts.read_json(run / "pipeline.json", default={}),
                                    "evals": evals})
            if found["sensitivity"]:  # its drops follow its restated paired results
                sensitivity.drops(found["sensitivity"])
            runs[f"{dataset}_{model}"] = found
            base = evals.get("float32")
            order = sorted(evals, key=_mode_rank)
            for mode in order:
                e = evals[mode]
                same = _comparable(base, e)
                paired = _paired_with(base, e) if same else None
                rows.append({
                    "dataset": dataset, "model": model, "mode": mode,
                    "accuracy": e["accuracy"],
                    "delta_pts": 100 * (e["accuracy"] - base["accuracy"]) if same else None,
                    "delta_ci95_pts": paired and stats.interval_pts(*paired),
                    "mcnemar_p": paired and stats.mcnemar_p(*paired[:2]),
                    "agreement": e["agreement"],
                    "size_bytes": e["size_bytes"],
                    "size_ratio": e["size_bytes"] / base["size_bytes"] if base else None,
                    "p50_us": e["latency_us"]["p50"],
                    "speedup": base["latency_us"]["p50"] / e["latency_us"]["p50"] if base else None,
                    "speedup_spread": _ratio_spread(base, e) if base else None,
                    "comparable": same if base else None,
                    "ops_outside_delegate": " ".join(sorted(set(e["ops_outside_delegate"]))) if e["xnnpack"]
                    else NO_XNNPACK,
                    "data_source": e["data_source"]["description"],
                    "examples": e["examples"],
                    "per_class_accuracy": e["per_class_accuracy"],
                    "threads": e["threads"], "cpu": e["cpu"],
                })
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
            stale_results.append({"run": label, "file": f"{name} entry {v['name']}",
                                  "why": f"{path.name} changed or went after TFLite Micro ran it"})
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
    if not made.is_file() or made.stat().st_size != info["size_bytes"] or (
            "tflite_sha256" in info and artifacts.sha256(made) != info["tflite_sha256"]):
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


def _mode_rank(mode: str) -> tuple:
    return (ORDER.index(mode) if mode in ORDER else len(ORDER), mode)


def pareto(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points no other point beats: smaller or equal size with higher accuracy."""
    front, best = [], -1.0
    for i in sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1])):
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def _fmt(v, kind: str) -> str:
    if v is None:
        return "-"
    return {"pct": f"{100 * v:.2f}%", "pts": f"{v:+.2f}", "kb": f"{v / 1024:,.1f} KB", "x": f"{v:.3f}x",
            "us": f"{v:,.0f} µs", "speed": f"{v:.2f}x"}[kind]


def _ci(ci) -> str:
    return f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else ""


def _negated(drop_pts: float, drop_ci: list[float]) -> str:
    """A drop (reference minus file) shown as Δ, the file minus its reference, with its interval."""
    return f"{-drop_pts:+.2f}{_ci([-drop_ci[1], -drop_ci[0]])}"


def _delta(r: dict) -> str:
    if r["delta_pts"] is None:
        return "-" if r["mode"] == "float32" or r.get("comparable") is None else "not on the same images"
    return _fmt(r["delta_pts"], "pts") + _ci(r.get("delta_ci95_pts"))


def _p(p: float | None) -> str:
    if p is None:
        return "-"
    return (f"{p:.3f}" if p >= 0.001 else "<0.001") + (" *" if p < 0.05 else "")


def _plain_p(p: float | None) -> str:
    """A p-value without the significance mark (for unadjusted p beside an adjusted one)."""
    return "-" if p is None else f"{p:.3f}" if p >= 0.001 else "<0.001"


def _speed(r: dict) -> str:
    spread = r.get("speedup_spread")
    return _fmt(r["speedup"], "speed") + (f" [{spread[0]:.2f}-{spread[1]:.2f}]" if spread else "")


def _plots(rows: list[dict], runs: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    written = []
    modes = sorted({r["mode"] for r in rows}, key=_mode_rank)
    colors = {m: plt.cm.tab20(i % 20) for i, m in enumerate(modes)}
    markers = {"cnn": "o", "mlp": "s"}

    def save(fig, name):
        with artifacts.atomic_path(out / name) as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
        plt.close(fig)
        written.append(name)

    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        sub = [r for r in rows if r["dataset"] == dataset]
        fig, ax = plt.subplots(figsize=(7.5, 4.8))
        for r in sub:
            ax.scatter(r["size_bytes"] / 1024, 100 * r["accuracy"], color=colors[r["mode"]],
                       marker=markers.get(r["model"], "^"), s=60, edgecolor="black", linewidth=0.5, zorder=3)
        front = [sub[i] for i in pareto([(r["size_bytes"], r["accuracy"]) for r in sub])]
        xs = [r["size_bytes"] / 1024 for r in front] + [max(r["size_bytes"] for r in sub) / 1024]
        ys = [100 * r["accuracy"] for r in front] + [100 * front[-1]["accuracy"]]
        ax.step(xs, ys, where="post", color="gray", linestyle="--", zorder=2)
        ax.scatter(xs[:-1], ys[:-1], s=180, facecolors="none", edgecolors="black", linewidth=1.2, zorder=4)
        for k, r in enumerate(front):  # stagger the labels: front points often sit close together
            ax.annotate(f"{r['model']} {r['mode']}", (r["size_bytes"] / 1024, 100 * r["accuracy"]),
                        textcoords="offset points", xytext=(10, -14 - 11 * k), fontsize=7,
                        arrowprops={"arrowstyle": "-", "color": "gray", "lw": 0.5})
        ax.set_xscale("log")
        ax.set_xlabel("flatbuffer size (KB, log scale)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{dataset}: accuracy against size")
        handles = [plt.Line2D([], [], color=colors[m], marker="o", linestyle="", label=m) for m in modes]
        handles += [plt.Line2D([], [], color="black", marker=mk, linestyle="", markerfacecolor="white", label=md)
                    for md, mk in markers.items() if any(r["model"] == md for r in sub)]
        handles.append(plt.Line2D([], [], color="gray", linestyle="--", marker="o", markerfacecolor="none",
                                  markeredgecolor="black", markersize=9, label="Pareto front (ringed)"))
        ax.legend(handles=handles, fontsize=7, loc="lower right")
        ax.grid(True, alpha=0.3)
        save(fig, f"accuracy_vs_size_{dataset}.png")

    run_names = list(runs)
    fig, ax = plt.subplots(figsize=(max(7.5, 1.3 * len(run_names) + 2), 4.8))
    width = 0.8 / max(len(modes), 1)
    for j, mode in enumerate(modes):
        ys = [next((r["p50_us"] for r in rows if f"{r['dataset']}_{r['model']}" == n and r["mode"] == mode), np.nan)
              for n in run_names]
        ax.bar(np.arange(len(run_names)) + (j - (len(modes) - 1) / 2) * width, ys, width, label=mode,
               color=colors[mode])
    ax.set_yscale("log")
    ax.set_xticks(np.arange(len(run_names)), run_names, rotation=20, fontsize=8)
    ax.set_ylabel("batch-1 latency, p50 (µs, log scale)")
    ax.set_title(f"Latency per mode ({rows[0]['threads']} thread, {rows[0]['cpu']})")
    ax.legend(fontsize=7, ncol=3)
    ax.grid(True, axis="y", alpha=0.3)
    save(fig, "latency.png")

    pairs = [(n, run["evals"]) for n, run in runs.items() if "int8" in run["evals"] and "float32" in run["evals"]]
    if pairs:
        ncls = max(len(e["int8"]["per_class_accuracy"]) for _, e in pairs)
        grid = np.full((len(pairs), ncls), np.nan)
        for i, (_, e) in enumerate(pairs):
            diff = 100 * (np.array(e["int8"]["per_class_accuracy"]) - np.array(e["float32"]["per_class_accuracy"]))
            grid[i, :len(diff)] = diff
        lim = max(float(np.nanmax(np.abs(grid))), 0.1)
        fig, ax = plt.subplots(figsize=(max(6.5, 0.65 * ncls + 2), 0.55 * len(pairs) + 1.8))
        im = ax.imshow(grid, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
        for (i, j), v in np.ndenumerate(grid):
            if not np.isnan(v):
                ax.text(j, i, f"{v:+.1f}", ha="center", va="center", fontsize=7)
        ax.set_xticks(range(ncls), [str(c) for c in range(ncls)])
        ax.set_yticks(range(len(pairs)), [n for n, _ in pairs])
        ax.set_xlabel("class index (dataset label order)")
        ax.set_title("Per-class accuracy change, int8 minus float32 (points)")
        fig.colorbar(im, ax=ax, label="accuracy change (points)")
        save(fig, "per_class_int8.png")

    for name, run in runs.items():
        sweep = run.get("sweep")
        if not sweep or not sweep["lines"]:
            continue
        families = list(dict.fromkeys(line["family"] for line in sweep["lines"]))
        fig, axes = plt.subplots(1, len(families), figsize=(5 * len(families), 4.2), sharey=True)
        for ax, family in zip(np.atleast_1d(axes), families):
            for line in (ln for ln in sweep["lines"] if ln["family"] == family):
                bits = [p["bits"] for p in line["points"]]
                mean = np.array([100 * p["mean"] for p in line["points"]])
                # clipped at 0: a point whose draws agree has mean == min == max up to float rounding
                lo = np.maximum(mean - [100 * p["spread"][0] for p in line["points"]], 0)
                hi = np.maximum([100 * p["spread"][1] for p in line["points"]] - mean, 0)
                ax.errorbar(range(len(bits)), mean, yerr=[lo, hi], marker="o", ms=4, capsize=3, label=line["label"])
            ax.axhline(100 * sweep["float_accuracy_grid"], color="gray", linestyle="--", linewidth=1, label="float32")
            ax.set_xticks(range(len(bits)), [str(b) for b in bits])
            ax.set_xlabel("bits")
            ax.set_title(f"{family} quantized" if family != "both" else "weights and activations")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=6.5, loc="lower right")
        np.atleast_1d(axes)[0].set_ylabel(f"accuracy (%), {sweep['grid_examples']:,d} test images")
        fig.suptitle(f"{name}: simulated precision (bars: range over {len(sweep['calibration_seeds'])} "
                     "calibration draws)", fontsize=10)
        save(fig, f"bits_{name}.png")

    for name, run in runs.items():
        sens = run.get("sensitivity")
        if sens:
            fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
            layer_names = [layer["name"] for layer in sens["layers"]]
            x = np.arange(len(layer_names))
            width = 0.8 / len(sens["schemes"])
            for ax, (key, what) in zip(axes, (("only_quantized", "Δ vs float32 when only this layer is quantized"),
                                              ("only_float", "Δ vs all quantized when only this layer stays float"))):
                for j, scheme in enumerate(sens["schemes"]):
                    vals = [layer["schemes"][scheme] for layer in sens["layers"]]
                    sign = -1 if key == "only_quantized" else 1  # a drop is stored; Δ is the file minus its reference
                    ys = sign * np.array([v[f"{key}_drop_pts" if key == "only_quantized" else f"{key}_recovery_pts"]
                                          for v in vals])
                    ends = sign * np.array([v[f"{key}_ci95_pts"] for v in vals])
                    lo, hi = ends.min(axis=1), ends.max(axis=1)
                    ax.bar(x + (j - (len(sens["schemes"]) - 1) / 2) * width, ys, width, label=scheme,
                           yerr=[np.maximum(ys - lo, 0), np.maximum(hi - ys, 0)], capsize=2)
                ax.axhline(0, color="black", linewidth=0.6)
                ax.set_xticks(x, layer_names, rotation=30, fontsize=8)
                ax.set_ylabel("validation accuracy (points)")
                ax.set_title(what, fontsize=9)
                ax.grid(True, axis="y", alpha=0.3)
                ax.legend(fontsize=7)
            fig.suptitle(f"{name}: per-layer sensitivity (bars: paired 95% intervals, "
                         f"{sens['val_examples']:,d} validation images)", fontsize=10)
            save(fig, f"sensitivity_{name}.png")
        if run.get("mixed"):
            fig, ax = plt.subplots(figsize=(7.5, 4.8))
            for r in (r for r in rows if f"{r['dataset']}_{r['model']}" == name):
                ax.scatter(r["size_bytes"] / 1024, 100 * r["accuracy"], color=colors[r["mode"]], s=40,
                           edgecolor="black", linewidth=0.4, zorder=3)
                ax.annotate(r["mode"], (r["size_bytes"] / 1024, 100 * r["accuracy"]), fontsize=6,
                            textcoords="offset points", xytext=(4, 3), color="dimgray")
            for objective, marker in (("size", "*"), ("latency", "P")):
                ms = sorted((m for m in run["mixed"] if m["objective"] == objective), key=lambda m: m["budget_pts"])
                if not ms:
                    continue
                xs = [m["size_bytes"] / 1024 for m in ms]
                ys = [100 * m["test"]["accuracy"] for m in ms]
                ax.plot(xs, ys, marker=marker, markersize=12 if marker == "*" else 8, color="crimson",
                        linestyle=":", linewidth=0.8, label=f"mixed, objective {objective}", zorder=4)
                for m, xv, yv in zip(ms, xs, ys):
                    ax.annotate(f"{m['budget_pts']:g}", (xv, yv), fontsize=7, color="crimson",
                                textcoords="offset points", xytext=(-6, 8 if marker == "*" else -14))
            ax.axhline(100 * run["mixed"][0]["test"]["float32_accuracy"], color="gray", linestyle="--",
                       linewidth=0.8, label="float32")
            ax.set_xscale("log")
            ax.set_xlabel("flatbuffer size (KB, log scale)")
            ax.set_ylabel("test accuracy (%)")
            ax.set_title(f"{name}: mixed precision per budget (largest validation loss allowed, points) beside the "
                         "uniform modes",
                         fontsize=9)
            ax.legend(fontsize=7, loc="lower right")
            ax.grid(True, alpha=0.3)
            save(fig, f"mixed_{name}.png")

    for name, run in runs.items():
        history = (run.get("train") or {}).get("history") or {}
        if history.get("loss") and history.get("val_loss"):
            save(_training_figure(plt, name, run["train"]), f"training_{name}.png")
        shift = (run.get("generalize") or {}).get("shift")
        if shift:
            save(_shift_figure(plt, np, name, shift), f"shift_{name}.png")

    micro_runs = {n: r["micro"] for n, r in runs.items() if r.get("micro") and any(v["runs"] for v in r["micro"]["variants"])}
    if micro_runs:  # flash against RAM, with the parts' limits: which files fit where
        fig, ax = plt.subplots(figsize=(8, 5))
        for i, (name, m) in enumerate(micro_runs.items()):
            ok = [v for v in m["variants"] if v["runs"]]
            ax.scatter([v["flash_bytes"] / 1024 for v in ok], [v["arena_bytes"] / 1024 for v in ok],
                       color=plt.cm.tab10(i), marker=markers.get(name.rsplit("_", 1)[1], "^"), s=45,
                       edgecolor="black", linewidth=0.5, label=name, zorder=3)
            for v in ok:
                if v["name"] in ("int8", "float32"):
                    ax.annotate(v["name"], (v["flash_bytes"] / 1024, v["arena_bytes"] / 1024), fontsize=7,
                                xytext=(4, 3), textcoords="offset points")
        for part in next(iter(micro_runs.values()))["parts"]:
            line = ax.axvline if part["memory"] == "flash" else ax.axhline
            line(part["bytes"] / 1024, color="grey", linestyle="--", linewidth=0.8)
            where = dict(x=part["bytes"] / 1024, y=1.5) if part["memory"] == "flash" else dict(x=1.5, y=part["bytes"] / 1024)
            ax.text(where["x"], where["y"], part["name"], fontsize=7, color="grey",
                    rotation=90 if part["memory"] == "flash" else 0, va="bottom", ha="right")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("flash: flatbuffer KB (log)")
        ax.set_ylabel("RAM: tensor arena KB (log)")
        ax.set_title("Files TFLite Micro runs: flash and RAM against common parts")
        ax.legend(fontsize=7, loc="lower right")
        ax.grid(True, alpha=0.3, which="both")
        save(fig, "micro.png")
    return written


def report(artifacts_root: str | Path = "artifacts", out: str | Path | None = None, *,
           datasets=tuple(data.DATASETS), models=("mlp", "cnn"), command: str | None = None) -> Path:
    """Write the report folder from the run folders' result files; returns report.md's path."""
    for d in datasets:
        data.get(d)
    for m in models:
        models_module.get(m)
    out = artifacts.check_writable(Path(out or Path(artifacts_root) / "report"))
    rows, runs, stale_results = collect(artifacts_root, datasets, models)
    if not rows:
        raise TfqError(f"no eval_*.json under {artifacts_root}; run python -m tfq.pipeline (or tfq.evaluate) first")
    plots = _plots(rows, runs, out)

    flat = [{k: r[k] for k in (*COLUMNS, "examples")} for r in rows]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(flat[0]))
    writer.writeheader()
    writer.writerows(flat)
    with artifacts.atomic_path(out / "results.csv") as tmp:
        tmp.write_text(buf.getvalue())
    artifacts.write_json(out / "results.json", {"rows": rows, "stale": stale_results, "runs": {
        n: {"train": r["train"] and {k: r["train"].get(k) for k in ("test_accuracy", "epochs", "wall_time_s", "params",
                                                                   "macs", "data_source")},
            "qat": r["qat"] and {k: r["qat"][k] for k in ("accuracy", "qat_gain_over_ptq", "qat_drop_vs_float")},
            "stages": r["stages"]} for n, r in runs.items()}, "headline": headline_facts(rows, runs)})

    md = ["# tfq quantization study", ""]
    md.append(f"Made {time.strftime('%Y-%m-%d')} on {rows[0]['cpu']}, LiteRT with {rows[0]['threads']} thread(s)"
              + (f", by `{command}`" if command else "") + ".")
    md += ["", "Accuracy is on the full test split unless the examples column says otherwise; Δ is in "
           "percentage points, the file minus the float32 flatbuffer, with a 95% interval for the paired difference "
           "on the same images (Tango's score interval, continuity-corrected: `tfq/core/stats.py`; its coverage is "
           "enumerated in `benchmarks/coverage.py`); McNemar p is the exact test on the images where the two "
           "disagree, and * marks a difference it finds distinguishable from zero (p < 0.05). The interval and the "
           "test are two procedures: near p = 0.05 one may exclude zero while the other does not. Agreement is "
           "the share of test images where the "
           "prediction equals float32's; speed is float32's batch-1 p50 latency divided by the mode's (each the "
           "median over rounds in which all modes of a run took turns), with the lowest and highest per-round "
           "ratio in brackets.", ""]
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        sub = [r for r in rows if r["dataset"] == dataset]
        md += [f"## {dataset}", "", f"Data: {sub[0]['data_source']}; {sub[0]['examples']:,d} test images.", ""]
        md.append("| model | mode | accuracy | Δ vs float32 [95% CI] | McNemar p | agreement | size | size ratio | "
                  "p50 latency | speed vs float32 [round range] | ops outside XNNPACK |")
        md.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        for r in sub:
            md.append(f"| {r['model']} | {r['mode']} | {_fmt(r['accuracy'], 'pct')} | {_delta(r)} | {_p(r['mcnemar_p'])} | "
                      f"{_fmt(r['agreement'], 'pct')} | {_fmt(r['size_bytes'], 'kb')} | {_fmt(r['size_ratio'], 'x')} | "
                      f"{_fmt(r['p50_us'], 'us')} | {_speed(r)} | {r['ops_outside_delegate'] or '-'} |")
        md += ["", f"![accuracy against size, {dataset}](accuracy_vs_size_{dataset}.png)", ""]
    md += _findings(rows, runs)
    md += _training_section(runs)
    md += _aeq_section(rows)
    md += _sweep_section(runs)
    qat_rows = [(n, r["qat"]) for n, r in runs.items() if r["qat"]]
    if qat_rows:
        md += ["## QAT against an equally fine-tuned control", "",
               "QAT fine-tuning is extra training; the control fine-tunes the float model for the same epochs "
               "at the same learning rate, then quantizes it post-training.", "",
               "| run | QAT epochs | float fine-tuned | PTQ int8 of it | QAT int8 | QAT gain over PTQ (points) [95% CI] "
               "| McNemar p |",
               "|---|---:|---:|---:|---:|---:|---:|"]
        for n, q in qat_rows:
            a, t = q["accuracy"], q.get("qat_vs_ptq")
            counts = t and (t["only_reference_right"], t["only_other_right"], t["images"])
            md.append(f"| {n} | {q['qat']['epochs']} | {_fmt(a['float_finetuned'], 'pct')} | "
                      f"{_fmt(a['ptq_int8_of_finetuned'], 'pct')} | {_fmt(a['qat_int8'], 'pct')} | "
                      f"{100 * q['qat_gain_over_ptq']:+.2f}{_ci(counts and stats.interval_pts(*counts))} | "
                      f"{_p(counts and stats.mcnemar_p(*counts[:2]))} |")
        md.append("")
    md += _low_bit_section(runs)
    md += _scratch_section(runs)
    md += _sensitivity_section(runs)
    md += _mixed_section(runs)
    md += _micro_section(runs)
    md += _generalize_section(runs)
    md += ["## Latency and per-class change", "", "![latency per mode](latency.png)", ""]
    if "per_class_int8.png" in plots:
        md += ["![per-class accuracy change int8 against float32](per_class_int8.png)", ""]
    if stale_results:
        md += ["## Left out: results that no longer match their files", "",
               "These eval files describe a flatbuffer or trained model that has since changed or gone; "
               "rerun `python -m tfq.evaluate` (or the pipeline) to measure the current files.", ""]
        md += [f"- {s['run']}/{s['file']}: {s['why']}" for s in stale_results] + [""]
    md += _stage_times(runs)
    md += _scaleout_estimate(runs)
    with artifacts.atomic_path(out / REPORT_MD) as tmp:
        tmp.write_text("\n".join(md))
    return out / REPORT_MD


def _findings(rows: list[dict], runs: dict) -> list[str]:
    """The precision study's headline numbers, each with its uncertainty, computed from the result
    files (paired 95% intervals on the same test images; ranges over calibration draws)."""
    md = []
    checks = [c for r in runs.values() for c in ((r.get("sweep") or {}).get("checks") or [])]
    if checks:
        informative = [c for c in checks if c.get("informative")]
        worst_gap = max(checks, key=lambda c: c["gap_points"])
        md.append(f"- Simulation against real files: {len(informative)} of {len(checks)} checks informative (the "
                  f"float model and the file part on at least {_informative_from(runs)} images, so a simulation "
                  f"that ignored the scheme could fail), {sum(bool(c['passed']) for c in informative)} of them "
                  f"passed (within tolerance and following the file better than float32 does, McNemar p < 0.05); "
                  f"largest accuracy gap {worst_gap['gap_points']:.2f} points ({worst_gap['file']}).")
    for mode, what in (("int8", "int8 (converter)"), ("aeq_a8w4", "4-bit weights (aeq_a8w4)")):
        cells = [f"{r['dataset']} {r['model']} {_delta(r)}" for r in rows if r["mode"] == mode and r["delta_pts"] is not None]
        if cells:
            md.append(f"- {what} minus float32, points [95% CI]: " + "; ".join(cells) + ".")
    for n, r in runs.items():
        lb = r.get("low_bit")
        if lb:
            parts = [f"{name} QAT {_fmt(e['accuracy']['qat_keras'], 'pct')}, {e['qat_vs_ptq']['delta_pts']:+.2f}"
                     f"{_ci(e['qat_vs_ptq']['ci95_pts'])} over PTQ" for name, e in lb["schemes"].items()]
            md.append(f"- {n}, low-bit QAT against PTQ at the same widths: " + "; ".join(parts) + ".")
    for n, r in runs.items():
        sweep = r.get("sweep")
        contrast = next((c for c in (sweep or {}).get("contrasts", []) if "moving average" in c["label"]), None)
        point = contrast and next((p for p in contrast["points"] if p["bits"] == 8), None)
        if point:
            lo, hi = point["draw_range_pts"]
            md.append(f"- {n}, ai-edge-quantizer's moving-average calibration minus min/max at 8 bits (simulated): "
                      f"{point['delta_pts']:+.2f} points, range over draws [{lo:+.2f}, {hi:+.2f}].")
    for n, r in runs.items():
        sens = r.get("sensitivity")
        for m in sorted((m for m in r.get("mixed", []) if m["objective"] == "size"), key=lambda m: m["budget_pts"]):
            if not sens:
                break
            b, w4, int8 = m["budget_pts"], sens["rungs"]["w4"]["val_drop_pts"], sens["rungs"]["int8"]["val_drop_pts"]
            if not w4 > b >= int8:
                continue
            t = m["test"]["vs_float32"]
            int8_bytes = m["test"]["uniform"]["int8"]["size_bytes"]
            md.append(f"- {n}, a {b:g}-point budget on the validation split (Δ vs float32 at least -{b:g}): every "
                      f"layer at 4 bits {-w4:+.2f} (breaks it), every layer at int8 {-int8:+.2f} (meets it); the "
                      f"mixed file ({_assignment(m['assignment'])}) {m['validation']['vs_float32']['delta_pts']:+.2f} "
                      f"with {100 * m['size_bytes'] / int8_bytes:.0f}% of all-int8's bytes "
                      f"({_fmt(m['size_bytes'], 'kb')}), and on the test split {t['delta_pts']:+.2f} points"
                      f"{_ci(t['ci95_pts'])}.")
    if not md:
        return []
    return ["## Findings", "", "Computed from the result files below; README.md discusses them.", "", *md, ""]


def _aeq_section(rows: list[dict]) -> list[str]:
    """The ai-edge-quantizer modes: what each file holds, whether LiteRT ran it, on which kernels."""
    aeq_rows = [r for r in rows if r["mode"].startswith("aeq_")]
    if not aeq_rows:
        return []
    from tfq.quant.modes import KNOWN

    md = ["## ai-edge-quantizer (LiteRT Quantizer) modes: did LiteRT run them, on which kernels", "",
          "Each file was made from the run's float32.tflite by its recipe (`tfq/quant/recipes/`), read back "
          "(weights and activations as the table says, or the conversion fails) and run on the test split in "
          "LiteRT. 'XNNPACK' counts the runs whose every op XNNPACK took; ops it left to LiteRT's own kernels "
          "are named. Speed is against int8 from the TFLite converter in the same run.", "",
          "| mode | weights / activations | ran in LiteRT | all in XNNPACK | ops outside XNNPACK | "
          "p50 latency / converter int8's (range over runs) |", "|---|---|---:|---:|---|---:|"]
    int8 = {(r["dataset"], r["model"]): r for r in rows if r["mode"] == "int8"}
    for mode in dict.fromkeys(r["mode"] for r in aeq_rows):
        sub = [r for r in aeq_rows if r["mode"] == mode]
        row = KNOWN.get(mode)
        dtypes = f"{row.weight_dtype} / {'/'.join(row.activation_dtypes)}" if row else "-"
        delegated = [r for r in sub if r["ops_outside_delegate"] != NO_XNNPACK]
        outside = sorted({op for r in delegated for op in r["ops_outside_delegate"].split()})
        full = sum(r["ops_outside_delegate"] == "" for r in sub)
        ratios = [r["p50_us"] / int8[r["dataset"], r["model"]]["p50_us"] for r in sub if (r["dataset"], r["model"]) in int8]
        where = NO_XNNPACK if not delegated else (", ".join(outside) or "-")
        md.append(f"| {mode} | {dtypes} | {len(sub)} of {len(sub)} runs | {full} | {where} | "
                  + (f"{min(ratios):.2f}x-{max(ratios):.2f}x" if ratios else "-") + " |")
    return [*md, ""]


def _verdict(check: dict) -> str:
    """A sweep check's outcome: a simulation that follows the file on more of the images where
    float32 parts from it, but not by enough for the test, is not shown better, not failed."""
    if check["passed"] is None:
        return "not informative"
    if check["passed"]:
        return "passed"
    if check["within_tolerance"] and check["sim_only_agrees"] > check["float_only_agrees"]:
        return "not shown better than float32"
    return "**failed**"


def _informative_from(runs: dict) -> int:
    """The float/file disagreements a sweep check needed to count as informative, as recorded."""
    return max((r["sweep"].get("tolerance") or {}).get("informative_from_disagreements", 0)
               for r in runs.values() if r.get("sweep"))


def _sweep_section(runs: dict) -> list[str]:
    sweeps = {n: r["sweep"] for n, r in runs.items() if r.get("sweep")}
    if not sweeps:
        return []
    md = ["## Precision sweep: simulated quantization from 16 down to 2 bits", "",
          "The trained Keras model with TensorFlow fake-quant ops where a TFLite integer graph quantizes "
          "(BatchNorm folded, fused ReLUs), calibrated on the converter's own images plus further draws "
          "(`python -m tfq.sweep`). Grid points run on a seeded subset of the test split; the checks run on "
          "every test image.", ""]
    md += ["### Simulation checked against real files", "",
           "Each real file beside its simulated twin (same grid, same range calibration), on the full test "
           "split, and beside the float model (the Keras model as the simulation runs it, unquantized), which "
           "alone agrees with an 8-bit file on almost every image. "
           "Tolerance: accuracy within 0.15 points and at least 99.5% of predictions equal. What tests the "
           "simulation is the images where float32 and the file disagree: a check is informative when there "
           f"are at least {_informative_from(runs)}, and passes when it is within tolerance and the simulation "
           "follows the file better than float32 does (images only the simulation gets as the file does vs "
           "only float32, McNemar p < 0.05).", "",
           "| run | file | simulated scheme | real | simulated | gap (points) | agreement | float32's agreement | "
           "float/file part on | sim only / float only | verdict |",
           "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for n, sw in sweeps.items():
        for c in sw["checks"]:
            md.append(f"| {n} | {c['file']} | {c['scheme']} | {_fmt(c['real_accuracy'], 'pct')} | "
                      f"{_fmt(c['simulated_accuracy'], 'pct')} | {c['gap_points']:.2f} | {_fmt(c['agreement'], 'pct')} | "
                      f"{_fmt(c['float_agreement'], 'pct')} | {c['float_file_disagreements']:,d} | "
                      f"{c['sim_only_agrees']} / {c['float_only_agrees']} | {_verdict(c)} |")
    names = list(sweeps)
    first = sweeps[names[0]]
    md += ["", "### Smallest width that stays within 1 point of float32", "",
           f"Mean over calibration draws on the grid images ({first['grid_examples']:,d} per run); '-': no width "
           "tried did.", "", "| scheme | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for k, line in enumerate(first["lines"]):
        cells = []
        for n in names:
            sw = sweeps[n]
            ok = [p["bits"] for p in sw["lines"][k]["points"] if p["mean"] >= sw["float_accuracy_grid"] - 0.01]
            cells.append(str(min(ok)) if ok else "-")
        md.append(f"| {line['family']}: {line['label']} | " + " | ".join(cells) + " |")
    md += ["", "### Paired scheme comparisons", "",
           "Accuracy of one scheme minus another at the same width, on the same grid images and, for activations, "
           "the same calibration draw: the mean over draws with the range over draws in brackets; * when every "
           "draw's McNemar test says p < 0.05.", ""]
    for k, contrast in enumerate(first["contrasts"]):
        bits = [p["bits"] for p in contrast["points"]]
        md += [f"**{contrast['label']}** (points)", "", "| run | " + " | ".join(f"{b} bits" for b in bits) + " |",
               "|---|" + "---:|" * len(bits)]
        for n in names:
            cells = []
            for p in sweeps[n]["contrasts"][k]["points"]:
                star = " *" if all(d["p_value"] < 0.05 for d in p["draws"]) else ""
                lo, hi = p["draw_range_pts"]
                cells.append(f"{p['delta_pts']:+.2f}" + (f" [{lo:+.2f}, {hi:+.2f}]" if len(p["draws"]) > 1 else "")
                             + star)
            md.append(f"| {n} | " + " | ".join(cells) + " |")
        md.append("")
    md += [f"![accuracy against bits, {n}](bits_{n}.png)" for n in names] + [""]
    return md


def _low_bit_section(runs: dict) -> list[str]:
    rows = [(n, r["low_bit"]) for n, r in runs.items() if r.get("low_bit")]
    if not rows:
        return []
    md = ["## Low-bit QAT against post-training quantization at the same widths", "",
          "tfmot's n-bit QAT scheme, fine-tuned on the int8 QAT stage's batches and seeds for the epochs and "
          "learning rate each row gives; PTQ quantizes the float control fine-tuned alike (simulated on QAT's own "
          "weight grids: conv per channel, Dense per tensor, symmetric; min/max activation ranges). QAT is scored "
          "in Keras (its fake-quant graph). For w4a8, both also ship as real ai-edge-quantizer a8w4 files (QAT "
          "weights rounded with their quantizers' own ranges first; activation ranges from ai-edge-quantizer's "
          "calibration for both, not QAT's learned ones), scored in LiteRT. Differences are paired on the same "
          "test images, with 95% intervals and McNemar p.", "",
          "| run | scheme | epochs, rate | float fine-tuned | PTQ | QAT (Keras) | QAT gain over PTQ [95% CI] | p | "
          "QAT minus float [95% CI] | QAT shipped as a8w4 | PTQ a8w4 file | shipped vs QAT (Keras) agreement |",
          "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for n, lb in rows:
        for name, e in lb["schemes"].items():
            a, g, f = e["accuracy"], e["qat_vs_ptq"], e["qat_vs_float_finetuned"]
            shipped = e.get("shipped")
            md.append(f"| {n} | {name} | {lb['epochs']}, {lb['learning_rate']:g} | {_fmt(lb['float_finetuned'], 'pct')} | {_fmt(a['ptq_simulated'], 'pct')} | "
                      f"{_fmt(a['qat_keras'], 'pct')} | {g['delta_pts']:+.2f}{_ci(g['ci95_pts'])} | {_p(g['p_value'])} | "
                      f"{f['delta_pts']:+.2f}{_ci(f['ci95_pts'])} | {_fmt(a.get('qat_shipped_a8w4'), 'pct')} | "
                      f"{_fmt(a.get('ptq_a8w4_file'), 'pct')} | "
                      f"{_fmt(shipped and shipped['agreement_with_qat_keras'], 'pct')} |")
    return [*md, "", "4-bit activations exist only in simulation here: no LiteRT kernel takes them, so w4a4 "
            "has no file.", ""]


_SCRATCH_COLUMNS = (("qat_from_scratch_keras", "QAT from step 1 (Keras)"),
                    ("qat_from_scratch_int8_file", "its int8 file"), ("ptq_int8_file", "PTQ int8"),
                    ("finetuned_qat_int8_file", "fine-tuned QAT int8"), ("ptq_a8w4_file", "PTQ a8w4 file"))


def _scratch_section(runs: dict) -> list[str]:
    rows = [(n, scheme, info) for n, r in runs.items() for scheme, info in r.get("scratch", {}).items()]
    if not rows:
        return []
    md = ["## When to quantize: from the first step, fine-tuned, or after training", "",
          "`python -m tfq.qat_scratch --scheme=<scheme>` wraps the freshly built model with tfmot before its first "
          "step and trains it exactly as the float model was trained (its train.json configuration). Each cell: "
          "test accuracy, and in brackets the difference from the float32 model on the same images with its 95% "
          "interval (* McNemar p < 0.05).", "",
          "| run | scheme | fit time | float32 | " + " | ".join(label for _, label in _SCRATCH_COLUMNS) + " |",
          "|---|---|---:|---:|" + "---:|" * len(_SCRATCH_COLUMNS)]
    for n, scheme, info in rows:
        acc, vs = info["accuracy"], info["vs_float32"]
        cells = []
        for key, _ in _SCRATCH_COLUMNS:
            if key not in acc:
                cells.append("-")
                continue
            t = vs[key]
            cells.append(f"{_fmt(acc[key], 'pct')} ({t['delta_pts']:+.2f}{_ci(t['ci95_pts'])}"
                         f"{' *' if t['p_value'] < 0.05 else ''})")
        md.append(f"| {n} | {scheme} | {info['fit_time_s']:,.0f} s | {_fmt(acc['float32'], 'pct')} | "
                  + " | ".join(cells) + " |")
    return [*md, ""]


def _sensitivity_section(runs: dict) -> list[str]:
    found = {n: r["sensitivity"] for n, r in runs.items() if r.get("sensitivity")}
    if not found:
        return []
    md = ["## Layer by layer: sensitivity (validation split)", "",
          "`python -m tfq.sensitivity`: each weight layer of float32.tflite quantized alone (the rest float), and "
          "left alone in float (the rest quantized), by ai-edge-quantizer recipes calibrated with min/max on the "
          "converter's images; accuracy on the validation split, differences paired on the same images with "
          "95% intervals. SNR: ai-edge-quantizer's own comparison of the layer's output in the fully quantized "
          "model against float, in dB, on the first validation images.", ""]
    for n, sens in found.items():
        schemes = sens["schemes"]
        md += [f"### {n}", "",
               f"float32 validation accuracy {_fmt(sens['float_val_accuracy'], 'pct')} on "
               f"{sens['val_examples']:,d} images. Every layer on one rung:", "",
               "| rung | Δ vs float32, validation [95% CI] | size | p50 latency |", "|---|---:|---:|---:|"]
        for rung, v in sens["rungs"].items():
            md.append(f"| {rung} ({v['description']}) | {_negated(v['val_drop_pts'], v['val_drop_ci95_pts'])} | "
                      f"{_fmt(v['size_bytes'], 'kb')} | {_fmt(v['latency_us'], 'us')} |")
        md += ["", "| layer | params | " + " | ".join(
            f"{s}: Δ vs float32, only it quantized | {s}: Δ vs all quantized, only it float | {s}: SNR"
            for s in schemes) + " |",
            "|---|---:|" + "---:|---:|---:|" * len(schemes)]
        for layer in sens["layers"]:
            cells = []
            for s in schemes:
                v = layer["schemes"][s]
                cells += [_negated(v["only_quantized_drop_pts"], v["only_quantized_ci95_pts"]),
                          f"{v['only_float_recovery_pts']:+.2f}{_ci(v['only_float_ci95_pts'])}",
                          "-" if v["snr_db"] is None else f"{v['snr_db']:.1f} dB"]
            md.append(f"| {layer['name']} | {layer['params']:,d} | " + " | ".join(cells) + " |")
        for s in schemes:
            clear = [layer["name"] for layer in sens["layers"]
                     if layer["schemes"][s]["only_quantized_ci95_pts"][0] > 0]
            md.append("")
            md.append(f"Most sensitive at {s}: " + (", ".join(clear) if clear else "no layer") +
                      " (quantizing it alone costs accuracy with the 95% interval above zero); ranked by recovery "
                      f"when left float: {', '.join(sens['most_sensitive'][s][:3])}.")
        md += ["", f"![per-layer sensitivity, {n}](sensitivity_{n}.png)", ""]
    return md


def _mixed_section(runs: dict) -> list[str]:
    found = {n: r["mixed"] for n, r in runs.items() if r.get("mixed")}
    if not found:
        return []
    md = ["## Mixed precision under an accuracy budget", "",
          "`python -m tfq.convert --mode=mixed --max_accuracy_drop=B [--objective=size|latency]`: one precision per "
          "layer, searched on the validation split (see `tfq/quant/mixed.py`), written as one ai-edge-quantizer file "
          "whose every layer's precision was read back. Budget B: the file may lose at most B points against "
          "float32 on validation. Δ is the file minus float32, in points, paired on the same images with 95% "
          "intervals; the test split was not used to choose anything.", "",
          "| run | objective | budget | layers | Δ vs float32, validation [95% CI] | Δ vs float32, test [95% CI] | size | "
          "of all-int8 | p50 latency | int8 / float32 latency | candidates |",
          "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for n, ms in found.items():
        for m in sorted(ms, key=lambda m: (m["objective"], m["budget_pts"])):
            v, t = m["validation"]["vs_float32"], m["test"]["vs_float32"]
            int8 = m["test"]["uniform"]["int8"]
            md.append(f"| {n} | {m['objective']} | {m['budget_pts']:g} | {_assignment(m['assignment'])} | "
                      f"{v['delta_pts']:+.2f}{_ci(v['ci95_pts'])} | {t['delta_pts']:+.2f}{_ci(t['ci95_pts'])} | "
                      f"{_fmt(m['size_bytes'], 'kb')} | {100 * m['size_bytes'] / int8['size_bytes']:.0f}% | "
                      f"{_fmt(m['latency_us']['mixed'], 'us')} | {_fmt(m['latency_us']['int8'], 'us')} / "
                      f"{_fmt(m['latency_us']['float32'], 'us')} | {len(m['path'])} |")
    md += ["", "Layers: the rung most layers take, then the exceptions. Candidates: the files the search scored on "
           "the validation split, each a real flatbuffer (at most 2L(R-1) + L + 1 for L layers and R rungs).", ""]
    md += [f"![mixed precision, {n}](mixed_{n}.png)" for n in found] + [""]
    return md


AGREEMENT_BAR = 0.999  # TFLite Micro against LiteRT on the same file: what an integer file should reach


def _micro_section(runs: dict) -> list[str]:
    found = {n: r["micro"] for n, r in runs.items() if r.get("micro") and r["micro"]["variants"]}
    if not found:
        return []
    parts = next(iter(found.values()))["parts"]
    md = ["## On a microcontroller: TFLite Micro", "",
          "`python -m tfq.micro`: each file run image by image (batch 1) under the TFLite Micro interpreter "
          "(PyPI `tflite-micro`, reference kernels) with the smallest tensor arena in which it both loads and runs a "
          "real test image, found by real loads and invokes. Flash: the flatbuffer's bytes; RAM: its arena (an app adds its own stack and buffers). "
          "Agreement: the share of images on which TFLite Micro and LiteRT, running the same bytes, give the "
          "same class; the accuracy difference is paired on those images. A file with weights stored past the "
          "flatbuffer (`Buffer.offset`, as ai-edge-quantizer writes them) is measured with them moved inline "
          "(marked *; LiteRT then runs the inlined bytes, and must give the classes it gives the file as "
          "written): TFLite Micro loads the file as written but gets the classes wrong (its agreement on the "
          "first images is in the last column). Host ms/image is this CPU running the reference kernels, not a "
          "microcontroller.", ""]
    for n, m in found.items():
        md += [f"### {n}", "", f"{m['examples']:,d} of {m['test_examples']:,d} test images, {m['runtime']}.", "",
               "| file | flash | arena (RAM) | " + " | ".join(p["name"] for p in parts)
               + " | TFLite Micro accuracy | LiteRT accuracy | difference [95% CI] | agreement | host ms/image "
               "| as written: agreement |",
               "|---|---:|---:|" + ":-:|" * len(parts) + "---:|---:|---:|---:|---:|---:|"]
        runs_ok = sorted((v for v in m["variants"] if v["runs"]), key=lambda v: _mode_rank(v["name"]))
        for v in runs_ok:
            t, written = v["vs_litert"], v.get("as_written")
            md.append(f"| {v['name']}{' *' if v.get('buffers_inlined') else ''} | {v['flash_bytes']:,d} B | "
                      f"{v['arena_bytes']:,d} B | " + " | ".join("yes" if v["fits"][p["name"]] else "no" for p in parts)
                      + f" | {_fmt(v['accuracy'], 'pct')} | {_fmt(v['litert_accuracy'], 'pct')} | "
                      f"{t['delta_pts']:+.2f}{_ci(t['ci95_pts'])} | {100 * v['agreement_with_litert']:.2f}% | "
                      f"{v['host_ms_per_image']:.2f} | "
                      + ("-" if not written else f"{100 * written['agreement_with_litert']:.1f}% of "
                         f"{written['examples']:,d}" if written.get("runs") else "does not load") + " |")
        low = [v for v in runs_ok if v["agreement_with_litert"] < AGREEMENT_BAR]
        md += ["", ("Below 99.9% agreement with LiteRT: " + ", ".join(
            f"{v['name']} ({100 * v['agreement_with_litert']:.2f}%)" for v in low) + ".") if low else
            "Every file that runs agrees with LiteRT on at least 99.9% of the images."]
        full = runs[n].get("micro_full")
        full_ok = [v for v in (full or {}).get("variants", []) if v["runs"]]
        if full_ok:
            md += ["", f"The whole test split ({full['examples']:,d} images; `benchmarks/micro_full.sh "
                   f"{m['dataset']} {m['model']}`):", "",
                   "| file | TFLite Micro accuracy | LiteRT accuracy | difference [95% CI] | agreement | images "
                   "that differ |", "|---|---:|---:|---:|---:|---:|"]
            for v in sorted(full_ok, key=lambda v: _mode_rank(v["name"])):
                t = v["vs_litert"]
                md.append(f"| {v['name']}{' *' if v.get('buffers_inlined') else ''} | {_fmt(v['accuracy'], 'pct')} | "
                          f"{_fmt(v['litert_accuracy'], 'pct')} | {t['delta_pts']:+.2f}{_ci(t['ci95_pts'])} | "
                          f"{100 * v['agreement_with_litert']:.2f}% | {v['disagreements']:,d} |")
        lacking: dict[str, list[str]] = {}
        for v in m["variants"]:
            if not v["runs"]:
                lacking.setdefault(v["error"], []).append(v["name"])
        if lacking:
            md += ["", "Does not run under TFLite Micro:"]
            md += [f"- {', '.join(sorted(names, key=_mode_rank))}: {why}" for why, names in lacking.items()]
        small = {mem: min(p["bytes"] for p in parts if p["memory"] == mem) for mem in ("flash", "ram")}
        both = [v for v in runs_ok if v["flash_bytes"] <= small["flash"] and v["arena_bytes"] <= small["ram"]]
        md += ["", (f"Fits the smallest part ({small['flash'] // 1024} KB flash, {small['ram'] // 1024} KB RAM): "
                    + ", ".join(f"{v['name']} ({_fmt(v['accuracy'], 'pct')})" for v in both) if both else
                    f"No file fits the smallest part ({small['flash'] // 1024} KB flash, {small['ram'] // 1024} KB "
                    "RAM)."), ""]
    if any(v["runs"] for m in found.values() for v in m["variants"]):
        md += ["![flash and RAM of every file TFLite Micro runs](micro.png)", ""]
    return md


PATIENCE_SHOWN = 3  # the training table says what early stopping with this patience would have done


def early_stop(values: list[float], patience: int, better=min) -> tuple[int, int]:
    """(epochs run, best epoch), 1-based: Keras' early-stopping rule (strict improvement, restore
    the best) replayed on one recorded validation curve, as `tfq.train.EarlyStopping` applies it."""
    best = 0
    for i, v in enumerate(values):
        if v != values[best] and better(v, values[best]) == v:
            best = i
        if i - best >= patience:
            return i + 1, best + 1
    return len(values), best + 1


def _training_figure(plt, name: str, info: dict):
    h = info["history"]
    epochs = range(1, len(h["loss"]) + 1)
    best = h["val_loss"].index(min(h["val_loss"])) + 1
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, key, what in ((axes[0], "loss", "loss (cross-entropy)"), (axes[1], "accuracy", "accuracy")):
        ax.plot(epochs, h[key], marker="o", ms=3, label="train (augmented batches, dropout on)")
        ax.plot(epochs, h[f"val_{key}"], marker="s", ms=3, label="validation")
        ax.axvline(best, color="gray", linestyle=":", linewidth=1, label=f"lowest validation loss (epoch {best})")
        ax.set_xlabel("epoch")
        ax.set_ylabel(what)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    early = info.get("early_stopping")
    fig.suptitle(f"{name}: training curves ({len(h['loss'])} epochs"
                 + (f", early stopping restored epoch {early['best_epoch']}" if early and early["restored_best"] else "")
                 + ")", fontsize=10)
    return fig


def _training_section(runs: dict) -> list[str]:
    found = {n: r["train"] for n, r in runs.items() if (r.get("train") or {}).get("history", {}).get("val_loss")}
    if not found:
        return []
    md = ["## Training curves: what the validation split says", "",
          "Per epoch, from train.json. The learning rate follows a warm-up then a cosine decay to zero over the run's "
          f"epochs. The last columns apply Keras' early-stopping rule (patience {PATIENCE_SHOWN}, restoring the best "
          "epoch) to the recorded validation loss: the epoch it would have stopped after, the one it would have "
          "restored, and that epoch's validation accuracy against the last epoch's. "
          "`python -m tfq.train --early_stopping_patience=N` applies it while training.", "",
          "| run | epochs | early stopping used | lowest val loss (epoch) | best val accuracy (epoch) | last epoch val "
          f"accuracy | patience {PATIENCE_SHOWN}: stops after / restores | its val accuracy minus the last's "
          "(descriptive: chosen on this split) |",
          "|---|---:|---|---:|---:|---:|---:|---:|"]
    for n, t in found.items():
        h, early = t["history"], t.get("early_stopping")
        loss_best = h["val_loss"].index(min(h["val_loss"]))
        acc_best = h["val_accuracy"].index(max(h["val_accuracy"]))
        stops, restores = early_stop(h["val_loss"], PATIENCE_SHOWN)
        used = (f"patience {early['patience']} on {early['monitor']}: best epoch {early['best_epoch']} of "
                f"{early['epochs_run']}" if early else "no")
        md.append(f"| {n} | {len(h['loss'])} | {used} | {h['val_loss'][loss_best]:.4f} ({loss_best + 1}) | "
                  f"{_fmt(h['val_accuracy'][acc_best], 'pct')} ({acc_best + 1}) | {_fmt(h['val_accuracy'][-1], 'pct')} | "
                  f"{stops} / {restores} | {100 * (h['val_accuracy'][restores - 1] - h['val_accuracy'][-1]):+.2f} |")
    md.append("")
    md += [f"![training curves, {n}](training_{n}.png)" for n in found] + [""]
    return md


def _shift_figure(plt, np, name: str, shift: dict):
    """Left: each file's gap to float32 (points) per corruption, mean over severities, beside clean.
    Right: the gap per severity, mean over corruptions, for a few files."""
    variants = sorted((v for v in shift["variants"] if "gap" in v), key=lambda v: _mode_rank(v["name"]))
    corruptions = list(dict.fromkeys(s.split("/")[0] for s in shift["sets"][1:]))
    grid = np.array([[v["gap"]["clean"]["delta_pts"]] + [v["gap"]["by_corruption"][c]["pts"] for c in corruptions]
                     for v in variants])
    lim = max(float(np.abs(grid).max()), 0.5)
    fig, axes = plt.subplots(1, 2, figsize=(max(11, 0.55 * len(corruptions) + 8), 0.32 * len(variants) + 2.2),
                             gridspec_kw={"width_ratios": [max(len(corruptions), 4), 4]})
    ax = axes[0]
    im = ax.imshow(grid, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
    for (i, j), v in np.ndenumerate(grid):
        ax.text(j, i, f"{v:+.1f}", ha="center", va="center", fontsize=6)
    ax.set_xticks(range(len(corruptions) + 1), ["clean"] + corruptions, rotation=40, ha="right", fontsize=7)
    ax.set_yticks(range(len(variants)), [v["name"] for v in variants], fontsize=7)
    ax.axvline(0.5, color="black", linewidth=1)
    ax.set_title("accuracy minus float32's (points), mean over severities", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02)
    ax = axes[1]
    levels = sorted({int(s.split("/")[1]) for s in shift["sets"][1:]})
    reference = next(v for v in shift["variants"] if v["name"] == "float32")["accuracy"]
    for v in (v for v in variants if v["name"] in ("int8", "qat_int8", "int16x8", "aeq_a8w4", "aeq_w4")):
        ys = [100 * (v["accuracy"]["clean"] - reference["clean"])] + [
            100 * np.mean([a - reference[s] for s, a in v["accuracy"].items() if s.endswith(f"/{lv}")])
            for lv in levels]
        ax.plot(range(len(levels) + 1), ys, marker="o", ms=3, label=v["name"])
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xticks(range(len(levels) + 1), ["clean"] + [f"severity {lv}" for lv in levels], fontsize=7)
    ax.set_ylabel("accuracy minus float32's (points),\nmean over corruptions", fontsize=8)
    ax.set_title(f"float32: {100 * reference['clean']:.1f}% clean, " + ", ".join(
        f"{100 * np.mean([a for s, a in reference.items() if s.endswith(f'/{lv}')]):.1f}%" for lv in levels)
        + " by severity", fontsize=8)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.suptitle(f"{name}: quantized files under shift ({shift['examples']:,d} test images per set)", fontsize=10)
    return fig


FAMILIES = (("QAT int8", ("qat_int8",)), ("int8 PTQ", ("int8", "aeq_a8w8")),
            ("16-bit activations", ("int16x8", "aeq_a16w8")), ("4-bit weights", ("aeq_a8w4", "aeq_w4", "aeq_dyn_w4")),
            ("8-bit weights only, float16", ("dynamic", "aeq_dyn_w8", "float16")), ("mixed precision", ("mixed_",)))
REPRESENTATIVES = ("int8", "qat_int8", "int16x8", "aeq_a8w4", "aeq_w4")  # one or two per family, named in advance
LEVEL = 0.05


def _family(name: str) -> str:
    """The row of FAMILIES a file's name starts with (the first that matches)."""
    return next((label for label, prefixes in FAMILIES if name.startswith(prefixes)), "other")


def _tested(shift: dict) -> list[dict]:
    """The files with a gap, each with its Holm-adjusted p (shift minus clean) over the run's
    distinct files: a file whose classes equal another's on every image is that file's twin, not
    another test."""
    rows = sorted((v for v in shift["variants"] if "gap" in v), key=lambda v: _mode_rank(v["name"]))
    distinct = [v for v in rows if not v.get("same_predictions_as")]
    adjusted = dict(zip((v["name"] for v in distinct),
                        stats.holm([v["gap"]["shift_minus_clean"]["p_value"] for v in distinct])))
    for v in rows:
        v["holm_p"] = adjusted.get(v.get("same_predictions_as") or v["name"])
    return rows


def _gap_cell(g: dict) -> str:
    return f"{g['pts']:+.2f}{_ci(g['ci95_pts'])}"


def _generalize_section(runs: dict) -> list[str]:
    found = {n: r["generalize"] for n, r in runs.items() if r.get("generalize")}
    if not found:
        return []
    md = ["## Generalization: quantization under shift and on other datasets", "",
          "`python -m tfq.generalize` (the pipeline's generalize stage). Shifted sets: one seeded subset of each test "
          "split, copied under every corruption and severity below (made by the libraries named, seeded, cached; "
          "`tfq/data/corruptions.py`), and the same images clean. Every file of a run sees the same images. The gap is "
          "the file's accuracy minus float32.tflite's on the same images; under shift it is the mean over all "
          "corrupted sets. 'Shift minus clean' is, per image, its mean gap over the corrupted sets minus its clean "
          "gap: below zero means the file loses more to float32 under shift than on clean images. Intervals over "
          "images are 95% bootstrap intervals; p is the exact sign-flip test on the per-image values (a bootstrap "
          "interval is too narrow when only a handful of images differ), Holm-adjusted within each run over its distinct "
          "files (files with the same classes on every image count once, and say whose twin they are); the count "
          "across runs at the end adjusts again over every distinct file of the study. A file loses more (or less) "
          "under shift only where the adjusted p is below 0.05. qat_int8's gap mixes quantization with "
          "its extra fine-tuning epoch (float32 is the file of the model before it). Clean gaps on the whole test "
          "split are in the dataset tables above.", ""]
    tables = {}
    for g in found.values():
        if g.get("shift"):
            tables.setdefault(tuple(c["name"] for c in g["shift"]["corruptions"]), g["shift"])
    for shift in tables.values():
        md += ["| corruption | family | library | severities | unit |", "|---|---|---|---|---|"]
        for c in shift["corruptions"]:
            lib = "imagecorruptions-imaug" if c["library"] == "imagecorruptions" else c["library"]
            md.append(f"| {c['name']} | {c['family']} | {lib} {shift['libraries'].get(lib, '')} | "
                      f"{', '.join(map(str, c['severities']))} | {c['unit']} |")
        md += ["", f"{shift['examples']:,d} of {shift['of_test_images']:,d} test images per set (seed "
               f"{shift['subset_seed']}).", ""]
    findings, tested_by_run = [], {}
    for n, g in found.items():
        shift = g.get("shift")
        if shift:
            f32 = next(v for v in shift["variants"] if v["name"] == "float32")
            tested_by_run[n] = rows = _tested(shift)
            md += [f"### {n}", "", f"float32: {_fmt(f32['accuracy']['clean'], 'pct')} clean, "
                   f"{_fmt(f32['mean_shift_accuracy'], 'pct')} mean over the {len(shift['sets']) - 1} shifted sets "
                   f"({shift['examples']:,d} images each).", "",
                   "| file | clean | shifted (mean) | agreement with float32, shifted | gap clean [95% CI] | "
                   "gap shifted [95% CI] | shift minus clean [95% CI] | its p (Holm) | worst corruption, gap [95% CI] |",
                   "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
            for v in rows:
                gap = v["gap"]
                agree = [a for s, a in v["agreement_with_float32"].items() if s != "clean"]
                worst = min(gap["by_corruption"].items(), key=lambda kv: kv[1]["pts"])
                twin = f" (= {v['same_predictions_as']})" if v.get("same_predictions_as") else ""
                md.append(f"| {v['name']}{twin} | {_fmt(v['accuracy']['clean'], 'pct')} | "
                          f"{_fmt(v['mean_shift_accuracy'], 'pct')} | {100 * sum(agree) / len(agree):.2f}% | "
                          f"{gap['clean']['delta_pts']:+.2f}{_ci(gap['clean']['ci95_pts'])} | {_gap_cell(gap['shift'])} | "
                          f"{_gap_cell(gap['shift_minus_clean'])} | {_plain_p(gap['shift_minus_clean']['p_value'])} "
                          f"({_p(v['holm_p'])}) | "
                          + (f"{worst[0]} {_gap_cell(worst[1])}" if worst[1]["pts"] < 0 else "none below float32")
                          + " |")
            md += ["", f"![quantization gap under shift, {n}](shift_{n}.png)", ""]
            findings += _shift_findings(n, rows)
        if g.get("cross"):
            md += _cross_table(n, g["cross"], runs[n]["evals"])
    if findings:
        md += ["### What the shifted sets show", "", *findings, *_family_summary(tested_by_run), ""]
    return md


def _shift_findings(n: str, rows: list[dict]) -> list[str]:
    """Per family, the spread of shift minus clean and the files beyond chance; per representative
    file, the corruption that costs it most against float32."""
    by_family: dict[str, list] = {}
    for v in rows:
        if not v.get("same_predictions_as"):
            by_family.setdefault(_family(v["name"]), []).append(v)
    parts = []
    for family, vs in by_family.items():
        span = [v["gap"]["shift_minus_clean"]["pts"] for v in vs]
        what = f"{span[0]:+.2f}" if len(vs) == 1 else f"{min(span):+.2f} to {max(span):+.2f} ({len(vs)} files)"
        beyond = [f"{v['name']} {_gap_cell(v['gap']['shift_minus_clean'])}, Holm p {_p(v['holm_p'])}"
                  for v in vs if v["holm_p"] < LEVEL]
        parts.append(f"{family} {what}" + (f"; beyond chance: {'; '.join(beyond)}" if beyond else ""))
    out = [f"- {n}, shift minus clean (points, distinct files; Holm within this run): " + "; ".join(parts) + "."]
    worst = []
    for v in (v for v in rows if v["name"] in REPRESENTATIVES):
        c, g = min(v["gap"]["by_corruption"].items(), key=lambda kv: kv[1]["pts"])
        worst.append(f"{v['name']}: {c} {_gap_cell(g)} (p {_plain_p(g['p_value'])})" if g["pts"] < 0
                     else f"{v['name']}: none below float32")
    if worst:
        out.append(f"- {n}, the corruption that costs each representative file most against float32 (mean over "
                   "severities; p unadjusted, one of several corruptions): " + "; ".join(worst) + ".")
    return out


def _family_summary(tested_by_run: dict) -> list[str]:
    """Across runs, per family: distinct files that lose more, or less, under shift than clean. A
    count across runs is one family of tests: Holm is applied again over every distinct file of
    every run (the per-run tables adjust within their run only)."""
    distinct = [(n, v) for n, rows in tested_by_run.items() for v in rows if not v.get("same_predictions_as")]
    study_p = stats.holm([v["gap"]["shift_minus_clean"]["p_value"] for _, v in distinct])
    tally: dict[str, list] = {}
    for (n, v), p in zip(distinct, study_p):
        tally.setdefault(_family(v["name"]), []).append((n, {**v, "holm_p": p}))
    out = [f"- Across the study, Holm over all {len(distinct)} distinct files of the {len(tested_by_run)} runs "
           "(the tables above adjust within each run):"] if distinct else []
    for family in (*(label for label, _ in FAMILIES), "other"):
        items = tally.get(family)
        if not items:
            continue
        lo = [f"{n} {v['name']} {v['gap']['shift_minus_clean']['pts']:+.2f}" for n, v in items
              if v["holm_p"] < LEVEL and v["gap"]["shift_minus_clean"]["pts"] < 0]
        hi = [f"{n} {v['name']} {v['gap']['shift_minus_clean']['pts']:+.2f}" for n, v in items
              if v["holm_p"] < LEVEL and v["gap"]["shift_minus_clean"]["pts"] > 0]
        out.append(f"  - {family}: {len(items)} distinct files; {len(lo)} lose more under shift than clean"
                   f"{' (' + ', '.join(lo) + ')' if lo else ''}, {len(hi)} less{' (' + ', '.join(hi) + ')' if hi else ''}, "
                   f"{len(items) - len(lo) - len(hi)} no different beyond chance.")
    return out


def _cross_table(n: str, crosses: list[dict], evals: dict) -> list[str]:
    """One table per run: each file on every other dataset, beside its gap on the run's own test split."""
    md = [f"### {n} on other datasets", "",
          "Each dataset's test split, through `python -m tfq.evaluate --eval_dataset=<dataset>`: "
          + "; ".join(f"{c['dataset']}: {c['examples']:,d} images ({c['data_source']['description']})" for c in crosses)
          + ". Δ: the file minus float32 on the same images, paired, with its 95% interval; agreement: the share "
          "of images where the file's class is float32's.", "",
          "| file | Δ on own test split | " + " | ".join(f"{c['dataset']}: accuracy | Δ [95% CI] | agreement"
                                                    for c in crosses) + " |",
          "|---|---:|" + "---:|---:|---:|" * len(crosses)]
    names = list(dict.fromkeys(v["name"] for c in crosses for v in c["variants"]))
    for name in sorted(names, key=_mode_rank):
        own = (evals.get(name) or {}).get("vs_reference")
        cells = []
        for c in crosses:
            v = next((v for v in c["variants"] if v["name"] == name), None)
            t = v and v.get("vs_float32")
            cells += ["-", "-", "-"] if not v else [
                _fmt(v["accuracy"], "pct"), f"{t['delta_pts']:+.2f}{_ci(t['ci95_pts'])}" if t else "-",
                f"{100 * v['agreement_with_float32']:.2f}%" if v.get("agreement_with_float32") is not None else "-"]
        md.append(f"| {name} | " + (f"{own['delta_pts']:+.2f}{_ci(own['ci95_pts'])}" if own else "-") + " | "
                  + " | ".join(cells) + " |")
    return [*md, ""]


HEADLINE_RUN, HEADLINE_MODES = "mnist_cnn", ("float32", "int8", "qat_int8", "int16x8", "aeq_a8w4")
TABLE_MODES = ("float16", "dynamic", "int16x8", "int8", "qat_int8", "aeq_a8w4")
LOW_BIT_RUN = "cifar10_cnn"
README_BEGIN = "<!-- headline: made by `python -m tfq.report --readme=README.md` from artifacts/report/results.json -->"
README_END = "<!-- /headline -->"


def _paired_fact(t: dict) -> dict:
    return {"delta_pts": t["delta_pts"], "ci95_pts": t["ci95_pts"], "p_value": t["p_value"], "images": t["images"]}


def headline_facts(rows: list[dict], runs: dict) -> dict:
    """Every number the README's first paragraph states, taken from this report's results: each
    difference is a file minus the float32 file of its run, on the same test images."""
    facts: dict = {"cpu": rows[0]["cpu"], "threads": rows[0]["threads"]}
    by_mode = {r["mode"]: r for r in rows if f"{r['dataset']}_{r['model']}" == HEADLINE_RUN
               and r["delta_pts"] is not None and (r["mode"] == "float32" or r["mcnemar_p"] is not None)}
    if all(m in by_mode for m in HEADLINE_MODES):
        facts[HEADLINE_RUN] = {m: {"accuracy": r["accuracy"], "delta_pts": r["delta_pts"], "ci95_pts": r["delta_ci95_pts"],
                                   "p_value": r["mcnemar_p"], "images": r["examples"], "size_bytes": r["size_bytes"],
                                   "size_ratio": r["size_ratio"], "p50_us": r["p50_us"], "speedup": r["speedup"],
                                   "ops_outside_delegate": r["ops_outside_delegate"]}
                               for m, r in by_mode.items() if m in HEADLINE_MODES}
    run = runs.get(LOW_BIT_RUN) or {}
    rows_low = {r["mode"]: r for r in rows if f"{r['dataset']}_{r['model']}" == LOW_BIT_RUN}
    shipped = ((run.get("low_bit") or {}).get("schemes", {}).get("w4a8") or {}).get("shipped") or {}
    float_file = rows_low.get("float32")
    a8w4 = rows_low.get("aeq_a8w4")
    if ("vs_float32_file" in shipped and float_file and a8w4 and a8w4["mcnemar_p"] is not None
            and shipped["float32_sha256"] == run["evals"]["float32"]["tflite_sha256"]
            and shipped["vs_float32_file"]["images"] == a8w4["examples"]):  # the same float32 file, the same images
        low = {"float32_accuracy": float_file["accuracy"],
               "aeq_a8w4": {"accuracy": a8w4["accuracy"], "delta_pts": a8w4["delta_pts"], "ci95_pts": a8w4["delta_ci95_pts"],
                            "p_value": a8w4["mcnemar_p"], "images": a8w4["examples"], "size_bytes": a8w4["size_bytes"]},
               "qat_w4a8_shipped": {**_paired_fact(shipped["vs_float32_file"]), "size_bytes": shipped["size_bytes"],
                                    "epochs": run["low_bit"]["epochs"],
                                    "accuracy": run["low_bit"]["schemes"]["w4a8"]["accuracy"]["qat_shipped_a8w4"]}}
        mixed = [m for m in run.get("mixed", []) if m["objective"] == "size" and m["budget_pts"] == 0.5]
        if mixed:
            m = mixed[0]
            low["mixed"] = {"budget_pts": m["budget_pts"], "assignment": _assignment(m["assignment"]),
                            "size_bytes": m["size_bytes"],
                            "of_int8": m["size_bytes"] / m["test"]["uniform"]["int8"]["size_bytes"],
                            **_paired_fact(m["test"]["vs_float32"])}
        facts[LOW_BIT_RUN] = low
    facts["table"] = []
    for n in dict.fromkeys(f"{r['dataset']}_{r['model']}" for r in rows):
        by = {r["mode"]: r for r in rows if f"{r['dataset']}_{r['model']}" == n}
        if "float32" not in by or "int8" not in by:
            continue
        facts["table"].append({"run": n, "float32_accuracy": by["float32"]["accuracy"],
                               "int8_size_ratio": by["int8"]["size_ratio"], "int8_speedup": by["int8"]["speedup"],
                               "modes": {m: {"delta_pts": by[m]["delta_pts"], "ci95_pts": by[m]["delta_ci95_pts"],
                                             "p_value": by[m]["mcnemar_p"]}
                                         for m in TABLE_MODES if m in by and by[m]["mcnemar_p"] is not None}})
    return facts


def _with_p(f: dict) -> str:
    return f"Δ {f['delta_pts']:+.2f}{_ci(f['ci95_pts'])}, p {_plain_p(f['p_value']) if f['p_value'] >= 0.001 else '< 0.001'}"


def headline_md(facts: dict) -> str:
    """The README's first paragraph, from `headline_facts` as results.json keeps them."""
    h = facts.get(HEADLINE_RUN)
    if not h:
        return ""
    f32, int8, qat, i16, a8w4 = (h[m] for m in HEADLINE_MODES)
    out = [f"**Expected result** (MNIST CNN, this repository's study run, `./tfq.sh pipeline "
           f"--flagfile=flags/study.cfg`; Δ is each file minus the float32 file in points on the same "
           f"{f32['images']:,d} test images, with its 95% interval and McNemar's exact p): float32 "
           f"{_fmt(f32['accuracy'], 'pct')} in a {_fmt(f32['size_bytes'], 'kb')} file at {_fmt(f32['p50_us'], 'us')} "
           f"per image (batch 1, {facts['threads']} thread, {facts['cpu']}); **int8 {_fmt(int8['accuracy'], 'pct')} "
           f"({_with_p(int8)}) in {_fmt(int8['size_bytes'], 'kb')} ({int8['size_ratio']:.3f}x) at "
           f"{_fmt(int8['p50_us'], 'us')} ({int8['speedup']:.1f}x faster)**; QAT int8 {_fmt(qat['accuracy'], 'pct')} "
           f"({_with_p(qat)}); 16x8 {_fmt(i16['accuracy'], 'pct')} ({_with_p(i16)}) but {_fmt(i16['p50_us'], 'us')}, "
           f"run outside XNNPACK ({i16['ops_outside_delegate']}); 4-bit weights (`aeq_a8w4`) "
           f"{_fmt(a8w4['accuracy'], 'pct')} ({_with_p(a8w4)}) in {_fmt(a8w4['size_bytes'], 'kb')} at "
           f"{_fmt(a8w4['p50_us'], 'us')} (outside XNNPACK: {a8w4['ops_outside_delegate'] or 'nothing'})."]
    low = facts.get(LOW_BIT_RUN)
    if low:
        a, q = low["aeq_a8w4"], low["qat_w4a8_shipped"]
        out.append(f"On the CIFAR-10 CNN (float32 {_fmt(low['float32_accuracy'], 'pct')}), 4-bit weights after "
                   f"training (`aeq_a8w4`, ai-edge-quantizer's moving-average calibration) give "
                   f"{_fmt(a['accuracy'], 'pct')} ({_with_p(a)}) in {_fmt(a['size_bytes'], 'kb')}; after "
                   f"{q['epochs']} epochs of 4-bit QAT the shipped a8w4 file gives {_fmt(q['accuracy'], 'pct')} "
                   f"({_with_p(q)}) in {_fmt(q['size_bytes'], 'kb')}, both against the same float32 file.")
        m = low.get("mixed")
        if m:
            out.append(f"Per-layer mixed precision within a {m['budget_pts']:g}-point validation budget "
                       f"({m['assignment']}): {_fmt(m['size_bytes'], 'kb')} ({100 * m['of_int8']:.0f}% of all-int8), "
                       f"{_with_p(m)} on the test split.")
    table = facts.get("table") or []
    if not table:
        return " ".join(out)
    lines = ["", "", "Every run of the study, Δ vs its float32 file in points [95% CI] (* McNemar p < 0.05); the "
             "report has every file:", "",
             "| run | float32 | " + " | ".join(TABLE_MODES) + " | int8 size | int8 speed |",
             "|---|---:|" + "---:|" * len(TABLE_MODES) + "---:|---:|"]
    for t in table:
        cells = [(f"{v['delta_pts']:+.2f}{_ci(v['ci95_pts'])}" + (" *" if v["p_value"] < 0.05 else ""))
                 if (v := t["modes"].get(m)) else "-" for m in TABLE_MODES]
        lines.append(f"| {t['run']} | {_fmt(t['float32_accuracy'], 'pct')} | " + " | ".join(cells)
                     + f" | {t['int8_size_ratio']:.3f}x | {t['int8_speedup']:.1f}x |")
    return " ".join(out) + "\n".join(lines)


def write_readme_headline(readme: str | Path, facts: dict) -> Path:
    """Replace the README's generated paragraph (between its two markers) with `headline_md(facts)`."""
    path = Path(readme)
    text = path.read_text() if path.is_file() else ""
    if README_BEGIN not in text or README_END not in text:
        raise TfqError(f"{path} has no generated headline to replace (the lines {README_BEGIN} and {README_END})")
    head, rest = text.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    with artifacts.atomic_path(path) as tmp:
        tmp.write_text(f"{head}{README_BEGIN}\n{headline_md(facts)}\n{README_END}{tail}")
    return path


def _assignment(assignment: dict[str, str]) -> str:
    common = Counter(assignment.values()).most_common(1)[0][0]
    others = [f"{name} {rung}" for name, rung in assignment.items() if rung != common]
    return f"{common}" + (f" except {', '.join(others)}" if others else " everywhere")


STAGES = ("train", "convert", "qat", "evaluate", "sweep", "sensitivity", "mixed", "micro", "generalize", "export")


def _seconds(state: dict, stage: str) -> float | None:
    """A stage's seconds from pipeline.json; "export" adds up its per-file entries ("export int8 c", ...)."""
    if stage == "export":
        found = [v["seconds"] for k, v in state.items() if k.startswith("export ")]
        return sum(found) if found else None
    return state.get(stage, {}).get("seconds")


def _stage_times(runs: dict) -> list[str]:
    """The stage-time table, with totals and the share of everything but training."""
    md = ["## Stage times", "", "Seconds each stage took when it last ran. The qat stage is mostly training "
          "too: its fine-tuning fits (int8 QAT and its float control, the low-bit QAT fits and, where recorded, "
          "their own control's) are shown apart.", "",
          "| run | " + " | ".join(STAGES) + " | of qat: fine-tuning fits | all but the train stage |",
          "|---|" + "---:|" * (len(STAGES) + 2)]
    totals = dict.fromkeys((*STAGES, "fits", "rest"), 0.0)
    for n, r in runs.items():
        secs = {s: _seconds(r["stages"], s) for s in STAGES}
        q, lb = r["qat"], r.get("low_bit")
        fits = q["qat"]["time_s"] + q["control"]["time_s"] if q else None
        if fits is not None and lb:  # low-bit QAT fits, and their own control's where recorded
            fits += sum(s["time_s"] for s in lb["schemes"].values()) + lb.get("control_time_s", 0.0)
        rest = sum(v for s, v in secs.items() if v and s != "train")
        for s, v in (*secs.items(), ("fits", fits), ("rest", rest)):
            totals[s] += v or 0
        md.append(f"| {n} | " + " | ".join("-" if v is None else f"{v:,.0f}" for v in secs.values())
                  + f" | {'-' if fits is None else f'{fits:,.0f}'} | {rest:,.0f} |")
    all_s = sum(totals[s] for s in STAGES)
    md.append("| **all** | " + " | ".join(f"**{totals[s]:,.0f}**" for s in (*STAGES, "fits", "rest")) + " |")
    if all_s:
        md += ["", f"All stages: {all_s:,.0f} s ({all_s / 60:.1f} min). Everything but the train stage: "
               f"{totals['rest']:,.0f} s, {100 * totals['rest'] / all_s:.1f}% of it; counting the QAT "
               f"fine-tuning fits as training too, {totals['rest'] - totals['fits']:,.0f} s, "
               f"{100 * (totals['rest'] - totals['fits']) / all_s:.1f}%."]
    return [*md, ""]


def chain_seconds(state: dict) -> float:
    """A run's chain: every stage it records in pipeline.json, one after another."""
    return sum(v.get("seconds", 0.0) for v in state.values())


def machines_estimate(chains: dict[str, float], machines: int) -> tuple[float, dict[str, int]]:
    """Wall time of independent chains on `machines` machines, one chain per machine at a time, longest
    first onto the machine that frees up first (the order `--executor=ray` submits them in); returns
    the slowest machine's seconds and which machine each chain ran on."""
    loads, placed = [0.0] * machines, {}
    for name, secs in sorted(chains.items(), key=lambda kv: -kv[1]):
        m = loads.index(min(loads))
        loads[m] += secs
        placed[name] = m
    return max(loads), placed


def _scaleout_estimate(runs: dict) -> list[str]:
    """What more machines would buy, from the recorded stage times (README "Scale out")."""
    chains = {n: chain_seconds(r["stages"]) for n, r in runs.items() if r["stages"]}
    if len(chains) < 2:
        return []
    one = sum(chains.values())
    longest = max(chains, key=chains.get)
    md = ["## Scale-out estimate", "",
          "The chains (one per run) are independent, so on N machines like this one the study takes about as long "
          "as the busiest machine's chains: each chain's recorded stage times added up, chains placed longest "
          "first on the machine that frees up first (the order `--executor=ray` submits them in), one chain per "
          "machine at a time (`ray start --num-cpus=1` on each; Ray gives a node as many chains at once as it has "
          "CPUs). Not counted: Ray's start (seconds), the report, and a shared filesystem's cost.", "",
          "| machines | estimated wall time | speed-up | the busiest machine runs |", "|---:|---:|---:|---|"]
    for n in sorted({1, 2, 3, len(chains)}):
        wall, placed = machines_estimate(chains, n)
        busiest = max(range(n), key=lambda m: sum(chains[c] for c in placed if placed[c] == m))
        md.append(f"| {n} | {wall / 60:.1f} min | {one / wall:.2f}x | "
                  f"{', '.join(c for c in placed if placed[c] == busiest)} |")
    sweep_s = _seconds(runs[longest]["stages"], "sweep") or 0.0
    floor = next(n for n in range(1, len(chains) + 1) if machines_estimate(chains, n)[0] <= chains[longest])
    md += ["", f"From {floor} machines on, the longest chain ({longest}, {chains[longest] / 60:.1f} min) is "
           f"the floor: stages inside a chain run one after another. Only the sweep's lines run as parallel tasks "
           f"(its sweep stage took {sweep_s:,.0f} s); its train stage ({_seconds(runs[longest]['stages'], 'train') or 0:,.0f} s) "
           "could go to Ray Train workers on other machines (`--strategy=ray`).", ""]
    return md


FLAGS = flags.FLAGS


def _define_flags() -> None:
    flags.DEFINE_string("artifacts", "artifacts", "Root of the run folders.")
    flags.DEFINE_list("datasets", list(data.DATASETS), "Datasets to include.")
    flags.DEFINE_list("models", ["mlp", "cnn"], "Models to include.")
    flags.DEFINE_string("out", None, "Report folder (default: <artifacts>/report).")
    flags.DEFINE_string("readme", None, "Also rewrite this README's generated headline paragraph from the "
                                        "report's results.json.")


def main(argv):
    del argv
    written = report(FLAGS.artifacts, FLAGS.out, datasets=FLAGS.datasets, models=FLAGS.models)
    print(written)
    if FLAGS.readme:
        facts = artifacts.read_json(written.parent / "results.json")["headline"]
        print(write_readme_headline(FLAGS.readme, facts))


if __name__ == "__main__":
    _define_flags()
    cli.run(main)
