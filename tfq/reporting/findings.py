"""The report's findings: the precision study's headline numbers across every topic, each with its
uncertainty, computed from the result files; docs/precision-study.md discusses them."""

from __future__ import annotations

from tfq.quant.simulate import FAILED, NOT_INFORMATIVE, NOT_SHOWN_BETTER, PASSED, check_verdict
from tfq.reporting import fmt
from tfq.reporting.collect import Study
from tfq.reporting.sweep import informative_from


def section(study: Study) -> list[str]:
    """The precision study's headline numbers, each with its uncertainty, computed from the result
    files (paired 95% intervals on the same test images; ranges over calibration draws)."""
    rows, runs = study.rows, study.runs
    md = []
    checks = [c for r in runs.values() for c in ((r.get("sweep") or {}).get("checks") or [])]
    if checks:
        verdicts = [check_verdict(c) for c in checks]
        worst_gap = max(checks, key=lambda c: c["gap_points"])
        md.append(
            f"- Simulation against real files, {len(checks)} checks: {verdicts.count(PASSED)} passed (within "
            f"tolerance, and following the file better than float32 does on the images where float32 and "
            f"the file part, McNemar p < 0.05), {verdicts.count(NOT_SHOWN_BETTER)} not shown better than "
            f"float32, {verdicts.count(FAILED)} failed, and {verdicts.count(NOT_INFORMATIVE)} within "
            f"tolerance but not informative (float32 and the file part on fewer than "
            f"{informative_from(runs)} images, so even a simulation that ignored the scheme would pass); "
            f"largest accuracy gap {worst_gap['gap_points']:.2f} points ({worst_gap['file']})."
        )
    for mode, what in (("int8", "int8 (converter)"), ("aeq_a8w4", "4-bit weights (aeq_a8w4)")):
        cells = [
            f"{r['dataset']} {r['model']} {fmt.delta(r)}"
            for r in rows
            if r["mode"] == mode and r["delta_pts"] is not None
        ]
        if cells:
            md.append(f"- {what} minus float32, points [95% CI]: " + "; ".join(cells) + ".")
    for n, r in runs.items():
        lb = r.get("low_bit")
        if lb:
            parts = [
                f"{name} QAT {fmt.value(e['accuracy']['qat_keras'], 'pct')}, "
                f"{e['qat_vs_ptq']['delta_pts']:+.2f}{fmt.ci(e['qat_vs_ptq']['ci95_pts'])} over PTQ"
                for name, e in lb["schemes"].items()
                if "not_possible" not in e
            ]
            if parts:
                md.append(f"- {n}, low-bit QAT against PTQ at the same widths: " + "; ".join(parts) + ".")
    for n, r in runs.items():
        sweep = r.get("sweep")
        contrast = next((c for c in (sweep or {}).get("contrasts", []) if "moving average" in c["label"]), None)
        point = contrast and next((p for p in contrast["points"] if p["bits"] == 8), None)
        if point:
            lo, hi = point["draw_range_pts"]
            md.append(
                f"- {n}, ai-edge-quantizer's moving-average calibration minus min/max at 8 bits (simulated): "
                f"{point['delta_pts']:+.2f} points, range over draws [{lo:+.2f}, {hi:+.2f}]."
            )
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
            md.append(
                f"- {n}, a {b:g}-point budget on the validation split (Δ vs float32 at least -{b:g}): every "
                f"layer at 4 bits {-w4:+.2f} (breaks it), every layer at int8 {-int8:+.2f} (meets it); the "
                f"mixed file ({fmt.assignment(m['assignment'])}) "
                f"{m['validation']['vs_float32']['delta_pts']:+.2f} "
                f"with {100 * m['size_bytes'] / int8_bytes:.0f}% of all-int8's bytes "
                f"({fmt.value(m['size_bytes'], 'kb')}), and on the test split {t['delta_pts']:+.2f} points"
                f"{fmt.ci(t['ci95_pts'])}."
            )
    if not md:
        return []
    return [
        "## Findings",
        "",
        "Computed from the result files below; docs/precision-study.md discusses them.",
        "",
        *md,
        "",
    ]
