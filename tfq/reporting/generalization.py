"""The generalization section: each run's files under shift (corrupted copies of test images) and on other
datasets, against float32 on the same images, with the counts across runs Holm-adjusted over the study."""

from __future__ import annotations

from tfq.core import stats
from tfq.reporting import fmt
from tfq.reporting.collect import Study, mode_rank

FAMILIES = (
    ("QAT int8", ("qat_int8",)),
    ("int8 PTQ", ("int8", "aeq_a8w8")),
    ("16-bit activations", ("int16x8", "aeq_a16w8")),
    ("4-bit weights", ("aeq_a8w4", "aeq_w4", "aeq_dyn_w4")),
    ("8-bit weights only, float16", ("dynamic", "aeq_dyn_w8", "float16")),
    ("mixed precision", ("mixed_",)),
)
REPRESENTATIVES = ("int8", "qat_int8", "int16x8", "aeq_a8w4", "aeq_w4")  # one or two per family, named in advance
LEVEL = 0.05


def _family(name: str) -> str:
    """The row of FAMILIES a file's name starts with (the first that matches)."""
    return next((label for label, prefixes in FAMILIES if name.startswith(prefixes)), "other")


def _tested(shift: dict) -> list[dict]:
    """The files with a gap, each with its Holm-adjusted p (shift minus clean) over the run's
    distinct files: a file whose classes equal another's on every image is that file's twin, not
    another test."""
    rows = sorted((v for v in shift["variants"] if "gap" in v), key=lambda v: mode_rank(v["name"]))
    distinct = [v for v in rows if not v.get("same_predictions_as")]
    adjusted = dict(
        zip((v["name"] for v in distinct), stats.holm([v["gap"]["shift_minus_clean"]["p_value"] for v in distinct]))
    )
    for v in rows:
        v["holm_p"] = adjusted.get(v.get("same_predictions_as") or v["name"])
    return rows


def _gap_cell(g: dict) -> str:
    return f"{g['pts']:+.2f}{fmt.ci(g['ci95_pts'])}"


def section(study: Study) -> list[str]:
    runs = study.runs
    found = {n: r["generalize"] for n, r in runs.items() if r.get("generalize")}
    if not found:
        return []
    md = [
        "## Generalization: quantization under shift and on other datasets",
        "",
        "`python -m tfq.generalize` (the pipeline's generalize stage). Shifted sets: one seeded subset of each test "
        "split, copied under every corruption and severity below (made by the libraries named, seeded, cached; "
        "`tfq/data/corruptions.py`), and the same images clean. Every file of a run sees the same images. The gap is "
        "the file's accuracy minus float32.tflite's on the same images; under shift it is the mean over all "
        "corrupted sets. 'Shift minus clean' is, per image, its mean gap over the corrupted sets minus its clean "
        "gap: below zero means the file loses more to float32 under shift than on clean images. Intervals over "
        "images are 95% bootstrap intervals; p is the exact sign-flip test on the per-image values (a bootstrap "
        "interval is too narrow when only a handful of images differ), Holm-adjusted within each run over its "
        "distinct files (files with the same classes on every image count once, and say whose twin they are); the "
        "count across runs at the end adjusts again over every distinct file of the study. A file loses more (or "
        "less) under shift only where the adjusted p is below 0.05. qat_int8's gap mixes quantization with "
        "its extra fine-tuning epoch (float32 is the file of the model before it). Clean gaps on the whole test "
        "split are in the dataset tables above.",
        "",
    ]
    tables = {}
    for g in found.values():
        if g.get("shift"):
            tables.setdefault(tuple(c["name"] for c in g["shift"]["corruptions"]), g["shift"])
    for shift in tables.values():
        md += ["| corruption | family | library | severities | unit |", "|---|---|---|---|---|"]
        for c in shift["corruptions"]:
            lib = "imagecorruptions-imaug" if c["library"] == "imagecorruptions" else c["library"]
            md.append(
                f"| {c['name']} | {c['family']} | {lib} {shift['libraries'].get(lib, '')} | "
                f"{', '.join(map(str, c['severities']))} | {c['unit']} |"
            )
        md += [
            "",
            f"{shift['examples']:,d} of {shift['of_test_images']:,d} test images per set (seed "
            f"{shift['subset_seed']}).",
            "",
        ]
    findings, tested_by_run = [], {}
    for n, g in found.items():
        shift = g.get("shift")
        if shift:
            f32 = next(v for v in shift["variants"] if v["name"] == "float32")
            tested_by_run[n] = rows = _tested(shift)
            md += [
                f"### {n}",
                "",
                f"float32: {fmt.value(f32['accuracy']['clean'], 'pct')} clean, "
                f"{fmt.value(f32['mean_shift_accuracy'], 'pct')} mean over the {len(shift['sets']) - 1} shifted "
                "sets "
                f"({shift['examples']:,d} images each).",
                "",
                "| file | clean | shifted (mean) | agreement with float32, shifted | gap clean [95% CI] | "
                "gap shifted [95% CI] | shift minus clean [95% CI] | its p (Holm) | "
                "worst corruption, gap [95% CI] |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---|",
            ]
            for v in rows:
                gap = v["gap"]
                agree = [a for s, a in v["agreement_with_float32"].items() if s != "clean"]
                worst = min(gap["by_corruption"].items(), key=lambda kv: kv[1]["pts"])
                twin = f" (= {v['same_predictions_as']})" if v.get("same_predictions_as") else ""
                md.append(
                    f"| {v['name']}{twin} | {fmt.value(v['accuracy']['clean'], 'pct')} | "
                    f"{fmt.value(v['mean_shift_accuracy'], 'pct')} | {100 * sum(agree) / len(agree):.2f}% | "
                    f"{gap['clean']['delta_pts']:+.2f}{fmt.ci(gap['clean']['ci95_pts'])} | "
                    f"{_gap_cell(gap['shift'])} | "
                    f"{_gap_cell(gap['shift_minus_clean'])} | {fmt.plain_p(gap['shift_minus_clean']['p_value'])} "
                    f"({fmt.p(v['holm_p'])}) | "
                    + (f"{worst[0]} {_gap_cell(worst[1])}" if worst[1]["pts"] < 0 else "none below float32")
                    + " |"
                )
            md += ["", f"![quantization gap under shift, {n}](shift_{n}.png)", ""]
            findings += _shift_findings(n, rows)
        if g.get("cross"):
            md += _cross_table(n, g["cross"], runs[n]["evals"])
    if findings:
        md += ["### What the shifted sets show", "", *findings, *family_summary(tested_by_run), ""]
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
        beyond = [
            f"{v['name']} {_gap_cell(v['gap']['shift_minus_clean'])}, Holm p {fmt.p(v['holm_p'])}"
            for v in vs
            if v["holm_p"] < LEVEL
        ]
        parts.append(f"{family} {what}" + (f"; beyond chance: {'; '.join(beyond)}" if beyond else ""))
    out = [f"- {n}, shift minus clean (points, distinct files; Holm within this run): " + "; ".join(parts) + "."]
    worst = []
    for v in (v for v in rows if v["name"] in REPRESENTATIVES):
        c, g = min(v["gap"]["by_corruption"].items(), key=lambda kv: kv[1]["pts"])
        worst.append(
            f"{v['name']}: {c} {_gap_cell(g)} (p {fmt.plain_p(g['p_value'])})"
            if g["pts"] < 0
            else f"{v['name']}: none below float32"
        )
    if worst:
        out.append(
            f"- {n}, the corruption that costs each representative file most against float32 (mean over "
            "severities; p unadjusted, one of several corruptions): " + "; ".join(worst) + "."
        )
    return out


def family_summary(tested_by_run: dict) -> list[str]:
    """Across runs, per family: distinct files that lose more, or less, under shift than clean. A
    count across runs is one family of tests: Holm is applied again over every distinct file of
    every run (the per-run tables adjust within their run only)."""
    distinct = [(n, v) for n, rows in tested_by_run.items() for v in rows if not v.get("same_predictions_as")]
    study_p = stats.holm([v["gap"]["shift_minus_clean"]["p_value"] for _, v in distinct])
    tally: dict[str, list] = {}
    for (n, v), p in zip(distinct, study_p):
        tally.setdefault(_family(v["name"]), []).append((n, {**v, "holm_p": p}))
    out = (
        [
            f"- Across the study, Holm over all {len(distinct)} distinct files of the {len(tested_by_run)} runs "
            "(the tables above adjust within each run):"
        ]
        if distinct
        else []
    )
    for family in (*(label for label, _ in FAMILIES), "other"):
        items = tally.get(family)
        if not items:
            continue
        lo = [
            f"{n} {v['name']} {v['gap']['shift_minus_clean']['pts']:+.2f}"
            for n, v in items
            if v["holm_p"] < LEVEL and v["gap"]["shift_minus_clean"]["pts"] < 0
        ]
        hi = [
            f"{n} {v['name']} {v['gap']['shift_minus_clean']['pts']:+.2f}"
            for n, v in items
            if v["holm_p"] < LEVEL and v["gap"]["shift_minus_clean"]["pts"] > 0
        ]
        out.append(
            f"  - {family}: {len(items)} distinct files; {len(lo)} lose more under shift than clean"
            f"{' (' + ', '.join(lo) + ')' if lo else ''}, "
            f"{len(hi)} less{' (' + ', '.join(hi) + ')' if hi else ''}, "
            f"{len(items) - len(lo) - len(hi)} no different beyond chance."
        )
    return out


def _cross_table(n: str, crosses: list[dict], evals: dict) -> list[str]:
    """One table per run: each file on every other dataset, beside its gap on the run's own test split."""
    md = [
        f"### {n} on other datasets",
        "",
        "Each dataset's test split, through `python -m tfq.evaluate --eval_dataset=<dataset>`: "
        + "; ".join(f"{c['dataset']}: {c['examples']:,d} images ({c['data_source']['description']})" for c in crosses)
        + ". Δ: the file minus float32 on the same images, paired, with its 95% interval; agreement: the share "
        "of images where the file's class is float32's.",
        "",
        "| file | Δ on own test split | "
        + " | ".join(f"{c['dataset']}: accuracy | Δ [95% CI] | agreement" for c in crosses)
        + " |",
        "|---|---:|" + "---:|---:|---:|" * len(crosses),
    ]
    names = list(dict.fromkeys(v["name"] for c in crosses for v in c["variants"]))
    for name in sorted(names, key=mode_rank):
        own = (evals.get(name) or {}).get("vs_reference")
        cells = []
        for c in crosses:
            v = next((v for v in c["variants"] if v["name"] == name), None)
            t = v and v.get("vs_float32")
            cells += (
                ["-", "-", "-"]
                if not v
                else [
                    fmt.value(v["accuracy"], "pct"),
                    f"{t['delta_pts']:+.2f}{fmt.ci(t['ci95_pts'])}" if t else "-",
                    f"{100 * v['agreement_with_float32']:.2f}%" if v.get("agreement_with_float32") is not None else "-",
                ]
            )
        md.append(
            f"| {name} | "
            + (f"{own['delta_pts']:+.2f}{fmt.ci(own['ci95_pts'])}" if own else "-")
            + " | "
            + " | ".join(cells)
            + " |"
        )
    return [*md, ""]
