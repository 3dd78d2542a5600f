"""Per-layer precision: the sensitivity of each layer (`python -m tfq.sensitivity`) and the mixed-precision
files searched from it under an accuracy budget (`python -m tfq.convert --mode=mixed`)."""

from __future__ import annotations

from tfq.reporting import fmt
from tfq.reporting.collect import Study


def sensitivity(study: Study) -> list[str]:
    found = {n: r["sensitivity"] for n, r in study.runs.items() if r.get("sensitivity")}
    if not found:
        return []
    md = [
        "## Layer by layer: sensitivity (validation split)",
        "",
        "`python -m tfq.sensitivity`: each weight layer of float32.tflite quantized alone (the rest float), and "
        "left alone in float (the rest quantized), by ai-edge-quantizer recipes calibrated with min/max on the "
        "converter's images; accuracy on the validation split, differences paired on the same images with "
        "95% intervals. SNR: ai-edge-quantizer's own comparison of the layer's output in the fully quantized "
        "model against float, in dB, on the first validation images.",
        "",
    ]
    for n, sens in found.items():
        schemes = sens["schemes"]
        md += [
            f"### {n}",
            "",
            f"float32 validation accuracy {fmt.value(sens['float_val_accuracy'], 'pct')} on "
            f"{sens['val_examples']:,d} images. Every layer on one rung:",
            "",
            "| rung | Δ vs float32, validation [95% CI] | size | p50 latency |",
            "|---|---:|---:|---:|",
        ]
        for rung, v in sens["rungs"].items():
            md.append(
                f"| {rung} ({v['description']}) | "
                f"{fmt.negated(v['val_drop_pts'], v['val_drop_ci95_pts'])} | "
                f"{fmt.value(v['size_bytes'], 'kb')} | {fmt.value(v['latency_us'], 'us')} |"
            )
        md += [
            "",
            "| layer | params | "
            + " | ".join(
                f"{s}: Δ vs float32, only it quantized | {s}: Δ vs all quantized, only it float | {s}: SNR"
                for s in schemes
            )
            + " |",
            "|---|---:|" + "---:|---:|---:|" * len(schemes),
        ]
        for layer in sens["layers"]:
            cells = []
            for s in schemes:
                v = layer["schemes"][s]
                cells += [
                    fmt.negated(v["only_quantized_drop_pts"], v["only_quantized_ci95_pts"]),
                    f"{v['only_float_recovery_pts']:+.2f}{fmt.ci(v['only_float_ci95_pts'])}",
                    "-" if v["snr_db"] is None else f"{v['snr_db']:.1f} dB",
                ]
            md.append(f"| {layer['name']} | {layer['params']:,d} | " + " | ".join(cells) + " |")
        for s in schemes:
            clear = [layer["name"] for layer in sens["layers"] if layer["schemes"][s]["only_quantized_ci95_pts"][0] > 0]
            md.append("")
            md.append(
                f"Most sensitive at {s}: "
                + (", ".join(clear) if clear else "no layer")
                + " (quantizing it alone costs accuracy with the 95% interval above zero); ranked by recovery "
                f"when left float: {', '.join(sens['most_sensitive'][s][:3])}."
            )
        md += ["", f"![per-layer sensitivity, {n}](sensitivity_{n}.png)", ""]
    return md


def mixed(study: Study) -> list[str]:
    found = {n: r["mixed"] for n, r in study.runs.items() if r.get("mixed")}
    if not found:
        return []
    md = [
        "## Mixed precision under an accuracy budget",
        "",
        "`python -m tfq.convert --mode=mixed --max_accuracy_drop=B [--objective=size|latency]`: one precision per "
        "layer, searched on the validation split (see `tfq/quant/mixed_search.py`), written as one "
        "ai-edge-quantizer file "
        "whose every layer's precision was read back. Budget B: the file may lose at most B points against "
        "float32 on validation. Δ is the file minus float32, in points, paired on the same images with 95% "
        "intervals; the test split was not used to choose anything.",
        "",
        "| run | objective | budget | layers | Δ vs float32, validation [95% CI] | Δ vs float32, test [95% CI] | "
        "size | of all-int8 | p50 latency | int8 / float32 latency | candidates |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n, ms in found.items():
        for m in sorted(ms, key=lambda m: (m["objective"], m["budget_pts"])):
            v, t = m["validation"]["vs_float32"], m["test"]["vs_float32"]
            int8 = m["test"]["uniform"]["int8"]
            md.append(
                f"| {n} | {m['objective']} | {m['budget_pts']:g} | {fmt.assignment(m['assignment'])} | "
                f"{v['delta_pts']:+.2f}{fmt.ci(v['ci95_pts'])} | {t['delta_pts']:+.2f}{fmt.ci(t['ci95_pts'])} | "
                f"{fmt.value(m['size_bytes'], 'kb')} | {100 * m['size_bytes'] / int8['size_bytes']:.0f}% | "
                f"{fmt.value(m['latency_us']['mixed'], 'us')} | {fmt.value(m['latency_us']['int8'], 'us')} / "
                f"{fmt.value(m['latency_us']['float32'], 'us')} | {len(m['path'])} |"
            )
    md += [
        "",
        "Layers: the rung most layers take, then the exceptions. Candidates: the files the search scored on "
        "the validation split, each a real flatbuffer (at most 2L(R-1) + L + 1 for L layers and R rungs).",
        "",
    ]
    md += [f"![mixed precision, {n}](mixed_{n}.png)" for n in found] + [""]
    return md
