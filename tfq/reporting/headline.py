"""The README's first paragraph: every number it states, taken from the report's results (`headline_facts`,
kept in results.json), written out (`headline_md`) between the README's two markers (`python -m tfq.report
--readme=README.md`)."""

from __future__ import annotations

from pathlib import Path

from tfq.core import artifacts
from tfq.core.artifacts import TfqError
from tfq.reporting import fmt
from tfq.reporting.collect import NO_XNNPACK

HEADLINE_RUN, HEADLINE_MODES = "mnist_cnn", ("float32", "int8", "qat_int8", "int16x8", "aeq_a8w4")
TABLE_MODES = ("float16", "dynamic", "int16x8", "int8", "qat_int8", "aeq_a8w4")
# shown because 4-bit weights cost it most in the study's test results (a choice of what to show, no setting)
LOW_BIT_RUN, LOW_BIT_LABEL = "cifar10_resnet8", "MLPerf Tiny's ResNet-8 on CIFAR-10"
README_BEGIN = "<!-- headline: made by `python -m tfq.report --readme=README.md` from artifacts/report/results.json -->"
README_END = "<!-- /headline -->"


def _paired_fact(t: dict) -> dict:
    return {"delta_pts": t["delta_pts"], "ci95_pts": t["ci95_pts"], "p_value": t["p_value"], "images": t["images"]}


def headline_facts(rows: list[dict], runs: dict) -> dict:
    """Every number the README's first paragraph states, taken from this report's results: each
    difference is a file minus the float32 file of its run, on the same test images."""
    facts: dict = {"cpu": rows[0]["cpu"], "threads": rows[0]["threads"]}
    by_mode = {
        r["mode"]: r
        for r in rows
        if f"{r['dataset']}_{r['model']}" == HEADLINE_RUN
        and r["delta_pts"] is not None
        and (r["mode"] == "float32" or r["mcnemar_p"] is not None)
    }
    if all(m in by_mode for m in HEADLINE_MODES):
        facts[HEADLINE_RUN] = {
            m: {
                "accuracy": r["accuracy"],
                "delta_pts": r["delta_pts"],
                "ci95_pts": r["delta_ci95_pts"],
                "p_value": r["mcnemar_p"],
                "images": r["examples"],
                "size_bytes": r["size_bytes"],
                "size_ratio": r["size_ratio"],
                "p50_us": r["p50_us"],
                "speedup": r["speedup"],
                "ops_outside_delegate": r["ops_outside_delegate"],
            }
            for m, r in by_mode.items()
            if m in HEADLINE_MODES
        }
    run = runs.get(LOW_BIT_RUN) or {}
    rows_low = {r["mode"]: r for r in rows if f"{r['dataset']}_{r['model']}" == LOW_BIT_RUN}
    shipped = ((run.get("low_bit") or {}).get("schemes", {}).get("w4a8") or {}).get("shipped") or {}
    float_file = rows_low.get("float32")
    a8w4 = rows_low.get("aeq_a8w4")
    if (
        "vs_float32_file" in shipped
        and float_file
        and a8w4
        and a8w4["mcnemar_p"] is not None
        and shipped["float32_sha256"] == run["evals"]["float32"]["tflite_sha256"]
        and shipped["vs_float32_file"]["images"] == a8w4["examples"]
    ):  # the same float32 file, the same images
        low = {
            "float32_accuracy": float_file["accuracy"],
            "aeq_a8w4": {
                "accuracy": a8w4["accuracy"],
                "delta_pts": a8w4["delta_pts"],
                "ci95_pts": a8w4["delta_ci95_pts"],
                "p_value": a8w4["mcnemar_p"],
                "images": a8w4["examples"],
                "size_bytes": a8w4["size_bytes"],
            },
            "qat_w4a8_shipped": {
                **_paired_fact(shipped["vs_float32_file"]),
                "size_bytes": shipped["size_bytes"],
                "epochs": run["low_bit"]["epochs"],
                "accuracy": run["low_bit"]["schemes"]["w4a8"]["accuracy"]["qat_shipped_a8w4"],
            },
        }
        mixed = [m for m in run.get("mixed", []) if m["objective"] == "size" and m["budget_pts"] == 0.5]
        if mixed:
            m = mixed[0]
            low["mixed"] = {
                "budget_pts": m["budget_pts"],
                "assignment": fmt.assignment(m["assignment"]),
                "size_bytes": m["size_bytes"],
                "of_int8": m["size_bytes"] / m["test"]["uniform"]["int8"]["size_bytes"],
                **_paired_fact(m["test"]["vs_float32"]),
            }
        facts[LOW_BIT_RUN] = low
    facts["table"] = []
    for n in dict.fromkeys(f"{r['dataset']}_{r['model']}" for r in rows):
        by = {r["mode"]: r for r in rows if f"{r['dataset']}_{r['model']}" == n}
        if "float32" not in by or "int8" not in by:
            continue
        facts["table"].append(
            {
                "run": n,
                "float32_accuracy": by["float32"]["accuracy"],
                "int8_size_ratio": by["int8"]["size_ratio"],
                "int8_speedup": by["int8"]["speedup"],
                "modes": {
                    m: {
                        "delta_pts": by[m]["delta_pts"],
                        "ci95_pts": by[m]["delta_ci95_pts"],
                        "p_value": by[m]["mcnemar_p"],
                    }
                    for m in TABLE_MODES
                    if m in by and by[m]["mcnemar_p"] is not None
                },
            }
        )
    return facts


def _with_p(f: dict) -> str:
    return (
        f"Δ {f['delta_pts']:+.2f}{fmt.ci(f['ci95_pts'])}, "
        f"p {fmt.plain_p(f['p_value']) if f['p_value'] >= 0.001 else '< 0.001'}"
    )


def _outside(f: dict) -> str:
    """Which ops XNNPACK left to LiteRT's own kernels, in words."""
    ops = f["ops_outside_delegate"]
    return "all of it" if ops == NO_XNNPACK else ops or "nothing"


def headline_md(facts: dict) -> str:
    """The README's first paragraph, from `headline_facts` as results.json keeps them."""
    h = facts.get(HEADLINE_RUN)
    if not h:
        return ""
    f32, int8, qat, i16, a8w4 = (h[m] for m in HEADLINE_MODES)
    out = [
        f"**Expected result** (MNIST CNN, this repository's study run, `./tfq.sh pipeline "
        f"--flagfile=flags/study.cfg`; Δ is each file minus the float32 file in points on the same "
        f"{f32['images']:,d} test images, with its 95% interval and McNemar's exact p): float32 "
        f"{fmt.value(f32['accuracy'], 'pct')} in a {fmt.value(f32['size_bytes'], 'kb')} file at "
        f"{fmt.value(f32['p50_us'], 'us')} per image (batch 1, {facts['threads']} thread, {facts['cpu']}); "
        f"**int8 {fmt.value(int8['accuracy'], 'pct')} "
        f"({_with_p(int8)}) in {fmt.value(int8['size_bytes'], 'kb')} ({int8['size_ratio']:.3f}x) at "
        f"{fmt.value(int8['p50_us'], 'us')} ({int8['speedup']:.1f}x faster)**; "
        f"QAT int8 {fmt.value(qat['accuracy'], 'pct')} ({_with_p(qat)}); "
        f"16x8 {fmt.value(i16['accuracy'], 'pct')} ({_with_p(i16)}) but {fmt.value(i16['p50_us'], 'us')}, "
        f"run outside XNNPACK ({_outside(i16)}); 4-bit weights (`aeq_a8w4`) "
        f"{fmt.value(a8w4['accuracy'], 'pct')} ({_with_p(a8w4)}) in {fmt.value(a8w4['size_bytes'], 'kb')} at "
        f"{fmt.value(a8w4['p50_us'], 'us')} (outside XNNPACK: {_outside(a8w4)})."
    ]
    low = facts.get(LOW_BIT_RUN)
    if low:
        a, q = low["aeq_a8w4"], low["qat_w4a8_shipped"]
        out.append(
            f"On {LOW_BIT_LABEL} (float32 {fmt.value(low['float32_accuracy'], 'pct')}), 4-bit weights after "
            f"training (`aeq_a8w4`, ai-edge-quantizer's moving-average calibration) give "
            f"{fmt.value(a['accuracy'], 'pct')} ({_with_p(a)}) in {fmt.value(a['size_bytes'], 'kb')}; after "
            f"{q['epochs']} epochs of 4-bit QAT the shipped a8w4 file gives {fmt.value(q['accuracy'], 'pct')} "
            f"({_with_p(q)}) in {fmt.value(q['size_bytes'], 'kb')}, both against the same float32 file."
        )
        m = low.get("mixed")
        if m:
            out.append(
                f"Per-layer mixed precision within a {m['budget_pts']:g}-point validation budget "
                f"({m['assignment']}): {fmt.value(m['size_bytes'], 'kb')} "
                f"({100 * m['of_int8']:.0f}% of all-int8), "
                f"{_with_p(m)} on the test split."
            )
    table = facts.get("table") or []
    if not table:
        return " ".join(out)
    lines = [
        "",
        "",
        "Every run of the study, Δ vs its float32 file in points [95% CI] (* McNemar p < 0.05); the "
        "report has every file:",
        "",
        "| run | float32 | " + " | ".join(TABLE_MODES) + " | int8 size | int8 speed |",
        "|---|---:|" + "---:|" * len(TABLE_MODES) + "---:|---:|",
    ]
    for t in table:
        cells = [
            (f"{v['delta_pts']:+.2f}{fmt.ci(v['ci95_pts'])}" + (" *" if v["p_value"] < 0.05 else ""))
            if (v := t["modes"].get(m))
            else "-"
            for m in TABLE_MODES
        ]
        lines.append(
            f"| {t['run']} | {fmt.value(t['float32_accuracy'], 'pct')} | "
            + " | ".join(cells)
            + f" | {t['int8_size_ratio']:.3f}x | {t['int8_speedup']:.1f}x |"
        )
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
