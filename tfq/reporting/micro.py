"""The microcontroller section: each file under the TFLite Micro interpreter, its flash and RAM against
common parts, and its agreement with LiteRT on the same bytes (`python -m tfq.micro`)."""

from __future__ import annotations

from tfq.reporting import fmt
from tfq.reporting.collect import Study, mode_rank

AGREEMENT_BAR = 0.999  # TFLite Micro against LiteRT on the same file: what an integer file should reach


def section(study: Study) -> list[str]:
    runs = study.runs
    found = {n: r["micro"] for n, r in runs.items() if r.get("micro") and r["micro"]["variants"]}
    if not found:
        return []
    parts = next(iter(found.values()))["parts"]
    md = [
        "## On a microcontroller: TFLite Micro",
        "",
        "`python -m tfq.micro`: each file run image by image (batch 1) under the TFLite Micro interpreter "
        "(PyPI `tflite-micro`, reference kernels) with the smallest tensor arena in which it both loads and runs a "
        "real test image, found by real loads and invokes. Flash: the flatbuffer's bytes; RAM: its arena (an app "
        "adds its own stack and buffers). "
        "Agreement: the share of images on which TFLite Micro and LiteRT, running the same bytes, give the "
        "same class; the accuracy difference is paired on those images. A file with weights stored past the "
        "flatbuffer (`Buffer.offset`, as ai-edge-quantizer writes them) is measured with them moved inline "
        "(marked *; LiteRT then runs the inlined bytes, and must give the classes it gives the file as "
        "written): TFLite Micro loads the file as written but gets the classes wrong (its agreement on the "
        "first images is in the last column). Host ms/image is this CPU running the reference kernels, not a "
        "microcontroller.",
        "",
    ]
    for n, m in found.items():
        md += [
            f"### {n}",
            "",
            f"{m['examples']:,d} of {m['test_examples']:,d} test images, {m['runtime']}.",
            "",
            "| file | flash | arena (RAM) | "
            + " | ".join(p["name"] for p in parts)
            + " | TFLite Micro accuracy | LiteRT accuracy | difference [95% CI] | agreement | host ms/image "
            "| as written: agreement |",
            "|---|---:|---:|" + ":-:|" * len(parts) + "---:|---:|---:|---:|---:|---:|",
        ]
        runs_ok = sorted((v for v in m["variants"] if v["runs"]), key=lambda v: mode_rank(v["name"]))
        for v in runs_ok:
            t, written = v["vs_litert"], v.get("as_written")
            md.append(
                f"| {v['name']}{' *' if v.get('buffers_inlined') else ''} | {v['flash_bytes']:,d} B | "
                f"{v['arena_bytes']:,d} B | "
                + " | ".join("yes" if v["fits"][p["name"]] else "no" for p in parts)
                + f" | {fmt.value(v['accuracy'], 'pct')} | {fmt.value(v['litert_accuracy'], 'pct')} | "
                f"{t['delta_pts']:+.2f}{fmt.ci(t['ci95_pts'])} | {100 * v['agreement_with_litert']:.2f}% | "
                f"{v['host_ms_per_image']:.2f} | "
                + (
                    "-"
                    if not written
                    else f"{100 * written['agreement_with_litert']:.1f}% of {written['examples']:,d}"
                    if written.get("runs")
                    else "does not load"
                )
                + " |"
            )
        low = [v for v in runs_ok if v["agreement_with_litert"] < AGREEMENT_BAR]
        md += [
            "",
            (
                "Below 99.9% agreement with LiteRT: "
                + ", ".join(f"{v['name']} ({100 * v['agreement_with_litert']:.2f}%)" for v in low)
                + "."
            )
            if low
            else "Every file that runs agrees with LiteRT on at least 99.9% of the images.",
        ]
        full = runs[n].get("micro_full")
        full_ok = [v for v in (full or {}).get("variants", []) if v["runs"]]
        if full_ok:
            md += [
                "",
                f"The whole test split ({full['examples']:,d} images; `benchmarks/micro_full.sh "
                f"{m['dataset']} {m['model']}`):",
                "",
                "| file | TFLite Micro accuracy | LiteRT accuracy | difference [95% CI] | agreement | images "
                "that differ |",
                "|---|---:|---:|---:|---:|---:|",
            ]
            for v in sorted(full_ok, key=lambda v: mode_rank(v["name"])):
                t = v["vs_litert"]
                md.append(
                    f"| {v['name']}{' *' if v.get('buffers_inlined') else ''} | "
                    f"{fmt.value(v['accuracy'], 'pct')} | "
                    f"{fmt.value(v['litert_accuracy'], 'pct')} | {t['delta_pts']:+.2f}{fmt.ci(t['ci95_pts'])} | "
                    f"{100 * v['agreement_with_litert']:.2f}% | {v['disagreements']:,d} |"
                )
        lacking: dict[str, list[str]] = {}
        for v in m["variants"]:
            if not v["runs"]:
                lacking.setdefault(v["error"], []).append(v["name"])
        if lacking:
            md += ["", "Does not run under TFLite Micro:"]
            md += [f"- {', '.join(sorted(names, key=mode_rank))}: {why}" for why, names in lacking.items()]
        small = {mem: min(p["bytes"] for p in parts if p["memory"] == mem) for mem in ("flash", "ram")}
        both = [v for v in runs_ok if v["flash_bytes"] <= small["flash"] and v["arena_bytes"] <= small["ram"]]
        md += [
            "",
            (
                f"Fits the smallest part ({small['flash'] // 1024} KB flash, {small['ram'] // 1024} KB RAM): "
                + ", ".join(f"{v['name']} ({fmt.value(v['accuracy'], 'pct')})" for v in both)
                if both
                else f"No file fits the smallest part ({small['flash'] // 1024} KB flash, {small['ram'] // 1024} KB "
                "RAM)."
            ),
            "",
        ]
    if any(v["runs"] for m in found.values() for v in m["variants"]):
        md += ["![flash and RAM of every file TFLite Micro runs](micro.png)", ""]
    return md
