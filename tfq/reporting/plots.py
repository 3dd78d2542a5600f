"""The report's figures, one function per figure: each takes what it draws and the report folder, writes one
PNG and returns its name, or None when it has nothing to draw. `write` makes them all, in report order.
matplotlib is imported only when a figure is drawn."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from tfq import models
from tfq.core import artifacts
from tfq.reporting.collect import mode_rank

# one marker per model of the table, in its order (mlp s, cnn o, resnet8 ^, mobilenet D); any other run's: v
MARKERS = dict(zip(models.MODELS, "so^D<>pPh*"))
OTHER_MARKER = "v"


def pareto(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points no other point beats: smaller or equal size with higher accuracy."""
    front, best = [], -1.0
    for i in sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1])):
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


@functools.cache
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: Path, name: str) -> str:
    with artifacts.atomic_path(out / name) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    _pyplot().close(fig)
    return name


def write(rows: list[dict], runs: dict, out: Path) -> list[str]:
    """Every figure the rows and runs have data for; returns the names written."""
    modes = sorted({r["mode"] for r in rows}, key=mode_rank)
    colors = {m: _pyplot().cm.tab20(i % 20) for i, m in enumerate(modes)}  # one per mode, in report order
    made = [accuracy_vs_size(rows, dataset, colors, out) for dataset in dict.fromkeys(r["dataset"] for r in rows)]
    made += [latency(rows, runs, colors, out), per_class_int8(runs, out)]
    made += [bits(name, run.get("sweep"), out) for name, run in runs.items()]
    for name, run in runs.items():
        made += [sensitivity(name, run.get("sensitivity"), out), mixed(name, rows, run.get("mixed"), colors, out)]
    for name, run in runs.items():
        made += [training(name, run.get("train"), out), shift(name, (run.get("generalize") or {}).get("shift"), out)]
    made.append(micro(runs, out))
    return [name for name in made if name]


def accuracy_vs_size(rows: list[dict], dataset: str, colors: dict, out: Path) -> str:
    """A dataset's files, accuracy against size, with the Pareto front ringed."""
    plt = _pyplot()
    sub = [r for r in rows if r["dataset"] == dataset]
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for r in sub:
        ax.scatter(
            r["size_bytes"] / 1024,
            100 * r["accuracy"],
            color=colors[r["mode"]],
            marker=MARKERS.get(r["model"], OTHER_MARKER),
            s=60,
            edgecolor="black",
            linewidth=0.5,
            zorder=3,
        )
    front = [sub[i] for i in pareto([(r["size_bytes"], r["accuracy"]) for r in sub])]
    xs = [r["size_bytes"] / 1024 for r in front] + [max(r["size_bytes"] for r in sub) / 1024]
    ys = [100 * r["accuracy"] for r in front] + [100 * front[-1]["accuracy"]]
    ax.step(xs, ys, where="post", color="gray", linestyle="--", zorder=2)
    ax.scatter(xs[:-1], ys[:-1], s=180, facecolors="none", edgecolors="black", linewidth=1.2, zorder=4)
    for k, r in enumerate(front):  # stagger the labels: front points often sit close together
        ax.annotate(
            f"{r['model']} {r['mode']}",
            (r["size_bytes"] / 1024, 100 * r["accuracy"]),
            textcoords="offset points",
            xytext=(10, -14 - 11 * k),
            fontsize=7,
            arrowprops={"arrowstyle": "-", "color": "gray", "lw": 0.5},
        )
    ax.set_xscale("log")
    ax.set_xlabel("flatbuffer size (KB, log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{dataset}: accuracy against size")
    handles = [plt.Line2D([], [], color=colors[m], marker="o", linestyle="", label=m) for m in colors]
    handles += [
        plt.Line2D([], [], color="black", marker=mk, linestyle="", markerfacecolor="white", label=md)
        for md, mk in MARKERS.items()
        if any(r["model"] == md for r in sub)
    ]
    handles.append(
        plt.Line2D(
            [],
            [],
            color="gray",
            linestyle="--",
            marker="o",
            markerfacecolor="none",
            markeredgecolor="black",
            markersize=9,
            label="Pareto front (ringed)",
        )
    )
    ax.legend(handles=handles, fontsize=7, loc="lower right")
    ax.grid(True, alpha=0.3)
    return _save(fig, out, f"accuracy_vs_size_{dataset}.png")


def latency(rows: list[dict], runs: dict, colors: dict, out: Path) -> str:
    """Batch-1 p50 latency per run and mode."""
    plt = _pyplot()
    modes, run_names = list(colors), list(runs)
    fig, ax = plt.subplots(figsize=(max(7.5, 1.3 * len(run_names) + 2), 4.8))
    width = 0.8 / max(len(modes), 1)
    for j, mode in enumerate(modes):
        ys = [
            next((r["p50_us"] for r in rows if f"{r['dataset']}_{r['model']}" == n and r["mode"] == mode), np.nan)
            for n in run_names
        ]
        ax.bar(
            np.arange(len(run_names)) + (j - (len(modes) - 1) / 2) * width, ys, width, label=mode, color=colors[mode]
        )
    ax.set_yscale("log")
    ax.set_xticks(np.arange(len(run_names)), run_names, rotation=20, fontsize=8)
    ax.set_ylabel("batch-1 latency, p50 (µs, log scale)")
    ax.set_title(f"Latency per mode ({rows[0]['threads']} thread, {rows[0]['cpu']})")
    ax.legend(fontsize=7, ncol=3)
    ax.grid(True, axis="y", alpha=0.3)
    return _save(fig, out, "latency.png")


def per_class_int8(runs: dict, out: Path) -> str | None:
    """Per run, each class's accuracy change of int8 against float32."""
    pairs = [(n, run["evals"]) for n, run in runs.items() if "int8" in run["evals"] and "float32" in run["evals"]]
    if not pairs:
        return None
    plt = _pyplot()
    ncls = max(len(e["int8"]["per_class_accuracy"]) for _, e in pairs)
    grid = np.full((len(pairs), ncls), np.nan)
    for i, (_, e) in enumerate(pairs):
        diff = 100 * (np.array(e["int8"]["per_class_accuracy"]) - np.array(e["float32"]["per_class_accuracy"]))
        grid[i, : len(diff)] = diff
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
    return _save(fig, out, "per_class_int8.png")


def bits(name: str, sweep: dict | None, out: Path) -> str | None:
    """A run's simulated accuracy against bits, one panel per family, bars over calibration draws."""
    if not sweep or not sweep["lines"]:
        return None
    plt = _pyplot()
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
    fig.suptitle(
        f"{name}: simulated precision (bars: range over {len(sweep['calibration_seeds'])} calibration draws)",
        fontsize=10,
    )
    return _save(fig, out, f"bits_{name}.png")


def sensitivity(name: str, sens: dict | None, out: Path) -> str | None:
    """A run's per-layer sensitivity: Δ when only a layer is quantized, and when only it stays float."""
    if not sens:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    layer_names = [layer["name"] for layer in sens["layers"]]
    x = np.arange(len(layer_names))
    width = 0.8 / len(sens["schemes"])
    for ax, (key, what) in zip(
        axes,
        (
            ("only_quantized", "Δ vs float32 when only this layer is quantized"),
            ("only_float", "Δ vs all quantized when only this layer stays float"),
        ),
    ):
        for j, scheme in enumerate(sens["schemes"]):
            vals = [layer["schemes"][scheme] for layer in sens["layers"]]
            sign = -1 if key == "only_quantized" else 1  # a drop is stored; Δ is the file minus its reference
            ys = sign * np.array(
                [v[f"{key}_drop_pts" if key == "only_quantized" else f"{key}_recovery_pts"] for v in vals]
            )
            ends = sign * np.array([v[f"{key}_ci95_pts"] for v in vals])
            lo, hi = ends.min(axis=1), ends.max(axis=1)
            ax.bar(
                x + (j - (len(sens["schemes"]) - 1) / 2) * width,
                ys,
                width,
                label=scheme,
                yerr=[np.maximum(ys - lo, 0), np.maximum(hi - ys, 0)],
                capsize=2,
            )
        ax.axhline(0, color="black", linewidth=0.6)
        ax.set_xticks(x, layer_names, rotation=30, fontsize=8)
        ax.set_ylabel("validation accuracy (points)")
        ax.set_title(what, fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(
        f"{name}: per-layer sensitivity (bars: paired 95% intervals, {sens['val_examples']:,d} validation images)",
        fontsize=10,
    )
    return _save(fig, out, f"sensitivity_{name}.png")


def mixed(name: str, rows: list[dict], manifests: list[dict] | None, colors: dict, out: Path) -> str | None:
    """A run's mixed-precision files per budget, beside its uniform modes."""
    if not manifests:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for r in (r for r in rows if f"{r['dataset']}_{r['model']}" == name):
        ax.scatter(
            r["size_bytes"] / 1024,
            100 * r["accuracy"],
            color=colors[r["mode"]],
            s=40,
            edgecolor="black",
            linewidth=0.4,
            zorder=3,
        )
        ax.annotate(
            r["mode"],
            (r["size_bytes"] / 1024, 100 * r["accuracy"]),
            fontsize=6,
            textcoords="offset points",
            xytext=(4, 3),
            color="dimgray",
        )
    for objective, marker in (("size", "*"), ("latency", "P")):
        ms = sorted((m for m in manifests if m["objective"] == objective), key=lambda m: m["budget_pts"])
        if not ms:
            continue
        xs = [m["size_bytes"] / 1024 for m in ms]
        ys = [100 * m["test"]["accuracy"] for m in ms]
        ax.plot(
            xs,
            ys,
            marker=marker,
            markersize=12 if marker == "*" else 8,
            color="crimson",
            linestyle=":",
            linewidth=0.8,
            label=f"mixed, objective {objective}",
            zorder=4,
        )
        for m, xv, yv in zip(ms, xs, ys):
            ax.annotate(
                f"{m['budget_pts']:g}",
                (xv, yv),
                fontsize=7,
                color="crimson",
                textcoords="offset points",
                xytext=(-6, 8 if marker == "*" else -14),
            )
    ax.axhline(
        100 * manifests[0]["test"]["float32_accuracy"], color="gray", linestyle="--", linewidth=0.8, label="float32"
    )
    ax.set_xscale("log")
    ax.set_xlabel("flatbuffer size (KB, log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(
        f"{name}: mixed precision per budget (largest validation loss allowed, points) beside the uniform modes",
        fontsize=9,
    )
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(True, alpha=0.3)
    return _save(fig, out, f"mixed_{name}.png")


def training(name: str, info: dict | None, out: Path) -> str | None:
    """A run's training curves, loss and accuracy per epoch, train beside validation."""
    h = (info or {}).get("history") or {}
    if not (h.get("loss") and h.get("val_loss")):
        return None
    plt = _pyplot()
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
    fig.suptitle(
        f"{name}: training curves ({len(h['loss'])} epochs"
        + (f", early stopping restored epoch {early['best_epoch']}" if early and early["restored_best"] else "")
        + ")",
        fontsize=10,
    )
    return _save(fig, out, f"training_{name}.png")


def shift(name: str, shift: dict | None, out: Path) -> str | None:
    """Left: each file's gap to float32 (points) per corruption, mean over severities, beside clean.
    Right: the gap per severity, mean over corruptions, for a few files."""
    if not shift:
        return None
    plt = _pyplot()
    variants = sorted((v for v in shift["variants"] if "gap" in v), key=lambda v: mode_rank(v["name"]))
    corruptions = list(dict.fromkeys(s.split("/")[0] for s in shift["sets"][1:]))
    grid = np.array(
        [
            [v["gap"]["clean"]["delta_pts"]] + [v["gap"]["by_corruption"][c]["pts"] for c in corruptions]
            for v in variants
        ]
    )
    lim = max(float(np.abs(grid).max()), 0.5)
    fig, axes = plt.subplots(
        1,
        2,
        figsize=(max(11, 0.55 * len(corruptions) + 8), 0.32 * len(variants) + 2.2),
        gridspec_kw={"width_ratios": [max(len(corruptions), 4), 4]},
    )
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
            100 * np.mean([a - reference[s] for s, a in v["accuracy"].items() if s.endswith(f"/{lv}")]) for lv in levels
        ]
        ax.plot(range(len(levels) + 1), ys, marker="o", ms=3, label=v["name"])
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xticks(range(len(levels) + 1), ["clean"] + [f"severity {lv}" for lv in levels], fontsize=7)
    ax.set_ylabel("accuracy minus float32's (points),\nmean over corruptions", fontsize=8)
    ax.set_title(
        f"float32: {100 * reference['clean']:.1f}% clean, "
        + ", ".join(f"{100 * np.mean([a for s, a in reference.items() if s.endswith(f'/{lv}')]):.1f}%" for lv in levels)
        + " by severity",
        fontsize=8,
    )
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.suptitle(f"{name}: quantized files under shift ({shift['examples']:,d} test images per set)", fontsize=10)
    return _save(fig, out, f"shift_{name}.png")


def micro(runs: dict, out: Path) -> str | None:
    """Flash against RAM of every file TFLite Micro runs, with the parts' limits: which files fit where."""
    micro_runs = {
        n: r["micro"] for n, r in runs.items() if r.get("micro") and any(v["runs"] for v in r["micro"]["variants"])
    }
    if not micro_runs:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    for i, (name, m) in enumerate(micro_runs.items()):
        ok = [v for v in m["variants"] if v["runs"]]
        ax.scatter(
            [v["flash_bytes"] / 1024 for v in ok],
            [v["arena_bytes"] / 1024 for v in ok],
            color=plt.cm.tab10(i),
            marker=MARKERS.get(name.rsplit("_", 1)[1], OTHER_MARKER),
            s=45,
            edgecolor="black",
            linewidth=0.5,
            label=name,
            zorder=3,
        )
        for v in ok:
            if v["name"] in ("int8", "float32"):
                ax.annotate(
                    v["name"],
                    (v["flash_bytes"] / 1024, v["arena_bytes"] / 1024),
                    fontsize=7,
                    xytext=(4, 3),
                    textcoords="offset points",
                )
    for part in next(iter(micro_runs.values()))["parts"]:
        line = ax.axvline if part["memory"] == "flash" else ax.axhline
        line(part["bytes"] / 1024, color="grey", linestyle="--", linewidth=0.8)
        where = (
            dict(x=part["bytes"] / 1024, y=1.5) if part["memory"] == "flash" else dict(x=1.5, y=part["bytes"] / 1024)
        )
        ax.text(
            where["x"],
            where["y"],
            part["name"],
            fontsize=7,
            color="grey",
            rotation=90 if part["memory"] == "flash" else 0,
            va="bottom",
            ha="right",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("flash: flatbuffer KB (log)")
    ax.set_ylabel("RAM: tensor arena KB (log)")
    ax.set_title("Files TFLite Micro runs: flash and RAM against common parts")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(True, alpha=0.3, which="both")
    return _save(fig, out, "micro.png")
