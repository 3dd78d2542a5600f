"""The sections made of the eval files' rows: one accuracy table per dataset, the ai-edge-quantizer modes
and the kernels that ran them, latency and per-class change, and the results left out as stale."""

from __future__ import annotations

from tfq.reporting import fmt
from tfq.reporting.collect import NO_XNNPACK, Study


def tables(study: Study) -> list[str]:
    """What the columns mean, then one table per dataset: every file against its run's float32."""
    rows = study.rows
    md = [
        "Accuracy is on the full test split unless the examples column says otherwise; Δ is in "
        "percentage points, the file minus the float32 flatbuffer, with a 95% interval for the paired difference "
        "on the same images (Tango's score interval, continuity-corrected: `tfq/core/stats.py`; its coverage is "
        "enumerated in `benchmarks/coverage.py`); McNemar p is the exact test on the images where the two "
        "disagree, and * marks a difference it finds distinguishable from zero (p < 0.05). The interval and the "
        "test are two procedures: near p = 0.05 one may exclude zero while the other does not. Agreement is "
        "the share of test images where the "
        "prediction equals float32's; speed is float32's batch-1 p50 latency divided by the mode's (each the "
        "median over rounds in which all modes of a run took turns), with the lowest and highest per-round "
        "ratio in brackets.",
        "",
    ]
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        sub = [r for r in rows if r["dataset"] == dataset]
        md += [f"## {dataset}", "", f"Data: {sub[0]['data_source']}; {sub[0]['examples']:,d} test images.", ""]
        md += _models(study, dataset, dict.fromkeys(r["model"] for r in sub))
        md.append(
            "| model | mode | accuracy | Δ vs float32 [95% CI] | McNemar p | agreement | size | size ratio | "
            "p50 latency | speed vs float32 [round range] | ops outside XNNPACK |"
        )
        md.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        for r in sub:
            md.append(
                f"| {r['model']} | {r['mode']} | {fmt.value(r['accuracy'], 'pct')} | {fmt.delta(r)} | "
                f"{fmt.p(r['mcnemar_p'])} | {fmt.value(r['agreement'], 'pct')} | "
                f"{fmt.value(r['size_bytes'], 'kb')} | {fmt.value(r['size_ratio'], 'x')} | "
                f"{fmt.value(r['p50_us'], 'us')} | {fmt.speed(r)} | {r['ops_outside_delegate'] or '-'} |"
            )
        md += ["", f"![accuracy against size, {dataset}](accuracy_vs_size_{dataset}.png)", ""]
    return md


def _models(study: Study, dataset: str, names) -> list[str]:
    """What each model of a dataset costs before any quantization: its size in parameters and its
    multiply-accumulates per image (from its train.json), its own float score, and how it was made."""
    made = {m: (study.runs.get(f"{dataset}_{m}") or {}).get("train") for m in names}  # rows hold the run's label
    if not any(made.values()):
        return []
    md = [
        "| model | parameters | multiply-accumulates per image | float test accuracy (images) | made by |",
        "|---|---:|---:|---:|---|",
    ]
    for name, t in made.items():
        if not t:
            continue
        seconds = t.get("wall_time_s")
        how = (
            "imported"
            if t.get("imported")
            else f"{t.get('epochs')} epochs in " + (f"{seconds:,.0f} s" if seconds is not None else "-")
        )
        scored = f" ({t['test_examples']:,d} images)" if t.get("test_examples") else ""
        md.append(
            f"| {name} | {fmt.value(t.get('params'), 'count')} | {fmt.value(t.get('macs'), 'count')} | "
            f"{fmt.value(t.get('test_accuracy'), 'pct')}{scored} | {how} |"
        )
    return [*md, ""]


def aeq(study: Study) -> list[str]:
    """The ai-edge-quantizer modes: what each file holds, whether LiteRT ran it, on which kernels."""
    rows = study.rows
    aeq_rows = [r for r in rows if r["mode"].startswith("aeq_")]
    if not aeq_rows:
        return []
    from tfq.quant.modes import KNOWN

    md = [
        "## ai-edge-quantizer (LiteRT Quantizer) modes: did LiteRT run them, on which kernels",
        "",
        "Each file was made from the run's float32.tflite by its recipe (`tfq/quant/recipes/`), read back "
        "(weights and activations as the table says, or the conversion fails) and run on the test split in "
        "LiteRT. 'XNNPACK' counts the runs whose every op XNNPACK took; ops it left to LiteRT's own kernels "
        "are named. Speed is against int8 from the TFLite converter in the same run.",
        "",
        "| mode | weights / activations | ran in LiteRT | all in XNNPACK | ops outside XNNPACK | "
        "p50 latency / converter int8's (range over runs) |",
        "|---|---|---:|---:|---|---:|",
    ]
    int8 = {(r["dataset"], r["model"]): r for r in rows if r["mode"] == "int8"}
    for mode in dict.fromkeys(r["mode"] for r in aeq_rows):
        sub = [r for r in aeq_rows if r["mode"] == mode]
        row = KNOWN.get(mode)
        dtypes = f"{row.weight_dtype} / {'/'.join(row.activation_dtypes)}" if row else "-"
        delegated = [r for r in sub if r["ops_outside_delegate"] != NO_XNNPACK]
        outside = sorted({op for r in delegated for op in r["ops_outside_delegate"].split()})
        full = sum(r["ops_outside_delegate"] == "" for r in sub)
        ratios = [
            r["p50_us"] / int8[r["dataset"], r["model"]]["p50_us"] for r in sub if (r["dataset"], r["model"]) in int8
        ]
        where = NO_XNNPACK if not delegated else (", ".join(outside) or "-")
        md.append(
            f"| {mode} | {dtypes} | {len(sub)} of {len(sub)} runs | {full} | {where} | "
            + (f"{min(ratios):.2f}x-{max(ratios):.2f}x" if ratios else "-")
            + " |"
        )
    return [*md, ""]


def latency(study: Study) -> list[str]:
    md = ["## Latency and per-class change", "", "![latency per mode](latency.png)", ""]
    if "per_class_int8.png" in study.plots:
        md += ["![per-class accuracy change int8 against float32](per_class_int8.png)", ""]
    return md


def stale(study: Study) -> list[str]:
    """The results `collect` left out, each with why."""
    if not study.stale:
        return []
    md = [
        "## Left out: results that no longer match their files",
        "",
        "These eval files describe a flatbuffer or trained model that has since changed or gone; "
        "rerun `python -m tfq.evaluate` (or the pipeline) to measure the current files.",
        "",
    ]
    return md + [f"- {s['run']}/{s['file']}: {s['why']}" for s in study.stale] + [""]
