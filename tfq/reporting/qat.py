"""The QAT sections: int8 QAT against a float model fine-tuned alike, low-bit QAT against post-training
quantization at the same widths, and QAT from the first step (`tfq.qat`, `tfq.qat_scratch`)."""

from __future__ import annotations

from tfq.core import stats
from tfq.reporting import fmt
from tfq.reporting.collect import Study


def control(study: Study) -> list[str]:
    """QAT int8 beside PTQ int8 of a float model fine-tuned for the same epochs at the same rate."""
    qat_rows = [(n, r["qat"]) for n, r in study.runs.items() if r["qat"]]
    if not qat_rows:
        return []
    md = [
        "## QAT against an equally fine-tuned control",
        "",
        "QAT fine-tuning is extra training; the control fine-tunes the float model for the same epochs "
        "at the same learning rate, then quantizes it post-training.",
        "",
        "| run | QAT epochs | float fine-tuned | PTQ int8 of it | QAT int8 | QAT gain over PTQ (points) [95% CI] "
        "| McNemar p |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for n, q in qat_rows:
        a, t = q["accuracy"], q.get("qat_vs_ptq")
        counts = t and (t["only_reference_right"], t["only_other_right"], t["images"])
        md.append(
            f"| {n} | {q['qat']['epochs']} | {fmt.value(a['float_finetuned'], 'pct')} | "
            f"{fmt.value(a['ptq_int8_of_finetuned'], 'pct')} | {fmt.value(a['qat_int8'], 'pct')} | "
            f"{100 * q['qat_gain_over_ptq']:+.2f}{fmt.ci(counts and stats.interval_pts(*counts))} | "
            f"{fmt.p(counts and stats.mcnemar_p(*counts[:2]))} |"
        )
    md.append("")
    return md


def low_bit(study: Study) -> list[str]:
    rows = [(n, r["low_bit"]) for n, r in study.runs.items() if r.get("low_bit")]
    if not rows:
        return []
    md = [
        "## Low-bit QAT against post-training quantization at the same widths",
        "",
        "tfmot's n-bit QAT scheme, fine-tuned on the int8 QAT stage's batches and seeds for the epochs and "
        "learning rate each row gives; PTQ quantizes the float control fine-tuned alike (simulated on QAT's own "
        "weight grids: conv per channel, Dense per tensor, symmetric; depthwise kernels per channel, where QAT's "
        "are per tensor; min/max activation ranges). QAT is scored "
        "in Keras (its fake-quant graph). For w4a8, both also ship as real ai-edge-quantizer a8w4 files (QAT "
        "weights rounded with their quantizers' own ranges first; activation ranges from ai-edge-quantizer's "
        "calibration for both, not QAT's learned ones), scored in LiteRT. Differences are paired on the same "
        "test images, with 95% intervals and McNemar p.",
        "",
        "| run | scheme | epochs, rate | float fine-tuned | PTQ | QAT (Keras) | QAT gain over PTQ [95% CI] | p | "
        "QAT minus float [95% CI] | QAT shipped as a8w4 | PTQ a8w4 file | shipped vs QAT (Keras) agreement |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    not_possible = []
    for n, lb in rows:
        for name, e in lb["schemes"].items():
            if "not_possible" in e:
                not_possible.append(f"- {n}, {name}: not possible: {e['not_possible']}")
                continue
            a, g, f = e["accuracy"], e["qat_vs_ptq"], e["qat_vs_float_finetuned"]
            shipped = e.get("shipped")
            md.append(
                f"| {n} | {name} | {lb['epochs']}, {lb['learning_rate']:g} | "
                f"{fmt.value(lb['float_finetuned'], 'pct')} | {fmt.value(a['ptq_simulated'], 'pct')} | "
                f"{fmt.value(a['qat_keras'], 'pct')} | {g['delta_pts']:+.2f}{fmt.ci(g['ci95_pts'])} | "
                f"{fmt.p(g['p_value'])} | "
                f"{f['delta_pts']:+.2f}{fmt.ci(f['ci95_pts'])} | {fmt.value(a.get('qat_shipped_a8w4'), 'pct')} | "
                f"{fmt.value(a.get('ptq_a8w4_file'), 'pct')} | "
                f"{fmt.value(shipped and shipped['agreement_with_qat_keras'], 'pct')} |"
            )
    return [
        *md,
        "",
        *([*not_possible, ""] if not_possible else []),
        "4-bit activations exist only in simulation here: no LiteRT kernel takes them, so w4a4 has no file.",
        "",
    ]


_SCRATCH_COLUMNS = (
    ("qat_from_scratch_keras", "QAT from step 1 (Keras)"),
    ("qat_from_scratch_int8_file", "its int8 file"),
    ("ptq_int8_file", "PTQ int8"),
    ("finetuned_qat_int8_file", "fine-tuned QAT int8"),
    ("ptq_a8w4_file", "PTQ a8w4 file"),
)


def scratch(study: Study) -> list[str]:
    rows = [(n, scheme, info) for n, r in study.runs.items() for scheme, info in r.get("scratch", {}).items()]
    if not rows:
        return []
    md = [
        "## When to quantize: from the first step, fine-tuned, or after training",
        "",
        "`python -m tfq.qat_scratch --scheme=<scheme>` wraps the freshly built model with tfmot before its first "
        "step and trains it exactly as the float model was trained (its train.json configuration). Each cell: "
        "test accuracy, and in brackets the difference from the float32 model on the same images with its 95% "
        "interval (* McNemar p < 0.05).",
        "",
        "| run | scheme | fit time | float32 | " + " | ".join(label for _, label in _SCRATCH_COLUMNS) + " |",
        "|---|---|---:|---:|" + "---:|" * len(_SCRATCH_COLUMNS),
    ]
    for n, scheme, info in rows:
        acc, vs = info["accuracy"], info["vs_float32"]
        cells = []
        for key, _ in _SCRATCH_COLUMNS:
            if key not in acc:
                cells.append("-")
                continue
            t = vs[key]
            cells.append(
                f"{fmt.value(acc[key], 'pct')} ({t['delta_pts']:+.2f}{fmt.ci(t['ci95_pts'])}"
                f"{' *' if t['p_value'] < 0.05 else ''})"
            )
        md.append(
            f"| {n} | {scheme} | {info['fit_time_s']:,.0f} s | {fmt.value(acc['float32'], 'pct')} | "
            + " | ".join(cells)
            + " |"
        )
    return [*md, ""]
