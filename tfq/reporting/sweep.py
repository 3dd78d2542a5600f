"""The precision sweep's section: simulation checked against real files, the smallest width within a point of
float32, and paired scheme comparisons (`python -m tfq.sweep`)."""

from __future__ import annotations

from tfq.quant.simulate import FAILED, check_verdict
from tfq.reporting import fmt
from tfq.reporting.collect import Study


def verdict(check: dict) -> str:
    """A sweep check's outcome as the report prints it (the rule: `simulate.check_verdict`)."""
    v = check_verdict(check)
    return f"**{v}**" if v == FAILED else v


def informative_from(runs: dict) -> int:
    """The float/file disagreements a sweep check needed to count as informative, as recorded."""
    return max(
        (r["sweep"].get("tolerance") or {}).get("informative_from_disagreements", 0)
        for r in runs.values()
        if r.get("sweep")
    )


def section(study: Study) -> list[str]:
    runs = study.runs
    sweeps = {n: r["sweep"] for n, r in runs.items() if r.get("sweep")}
    if not sweeps:
        return []
    md = [
        "## Precision sweep: simulated quantization from 16 down to 2 bits",
        "",
        "The trained Keras model with TensorFlow fake-quant ops where a TFLite integer graph quantizes "
        "(BatchNorm folded, fused ReLUs), calibrated on the converter's own images plus further draws "
        "(`python -m tfq.sweep`). Grid points run on a seeded subset of the test split; the checks run on "
        "every test image.",
        "",
    ]
    md += [
        "### Simulation checked against real files",
        "",
        "Each real file beside its simulated twin (same grid, same range calibration), on the full test "
        "split, and beside the float model (the Keras model as the simulation runs it, unquantized), which "
        "alone agrees with an 8-bit file on almost every image. "
        "Tolerance: accuracy within 0.15 points and at least 99.5% of predictions equal. What tests the "
        "simulation is the images where float32 and the file disagree: a check is informative when there "
        f"are at least {informative_from(runs)}, and passes when it is within tolerance and the simulation "
        "follows the file better than float32 does (images only the simulation gets as the file does vs "
        "only float32, McNemar's exact two-sided p < 0.05 with the simulation ahead: a one-sided test at "
        "0.025). Outside the tolerance a check fails, informative or not.",
        "",
        "| run | file | simulated scheme | real | simulated | gap (points) | agreement | float32's agreement | "
        "float/file part on | sim only / float only | verdict |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for n, sw in sweeps.items():
        for c in sw["checks"]:
            md.append(
                f"| {n} | {c['file']} | {c['scheme']} | {fmt.value(c['real_accuracy'], 'pct')} | "
                f"{fmt.value(c['simulated_accuracy'], 'pct')} | {c['gap_points']:.2f} | "
                f"{fmt.value(c['agreement'], 'pct')} | "
                f"{fmt.value(c['float_agreement'], 'pct')} | {c['float_file_disagreements']:,d} | "
                f"{c['sim_only_agrees']} / {c['float_only_agrees']} | {verdict(c)} |"
            )
    names = list(sweeps)
    first = sweeps[names[0]]
    md += [
        "",
        "### Smallest width that stays within 1 point of float32",
        "",
        f"Mean over calibration draws on the grid images ({first['grid_examples']:,d} per run); '-': no width "
        "tried did.",
        "",
        "| scheme | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for k, line in enumerate(first["lines"]):
        cells = []
        for n in names:
            sw = sweeps[n]
            ok = [p["bits"] for p in sw["lines"][k]["points"] if p["mean"] >= sw["float_accuracy_grid"] - 0.01]
            cells.append(str(min(ok)) if ok else "-")
        md.append(f"| {line['family']}: {line['label']} | " + " | ".join(cells) + " |")
    md += [
        "",
        "### Paired scheme comparisons",
        "",
        "Accuracy of one scheme minus another at the same width, on the same grid images and, for activations, "
        "the same calibration draw: the mean over draws with the range over draws in brackets; * when every "
        "draw's McNemar test says p < 0.05.",
        "",
    ]
    for k, contrast in enumerate(first["contrasts"]):
        bits = [p["bits"] for p in contrast["points"]]
        md += [
            f"**{contrast['label']}** (points)",
            "",
            "| run | " + " | ".join(f"{b} bits" for b in bits) + " |",
            "|---|" + "---:|" * len(bits),
        ]
        for n in names:
            cells = []
            for p in sweeps[n]["contrasts"][k]["points"]:
                star = " *" if all(d["p_value"] < 0.05 for d in p["draws"]) else ""
                lo, hi = p["draw_range_pts"]
                cells.append(
                    f"{p['delta_pts']:+.2f}" + (f" [{lo:+.2f}, {hi:+.2f}]" if len(p["draws"]) > 1 else "") + star
                )
            md.append(f"| {n} | " + " | ".join(cells) + " |")
        md.append("")
    md += [f"![accuracy against bits, {n}](bits_{n}.png)" for n in names] + [""]
    return md
