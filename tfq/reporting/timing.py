"""Where the time went: each stage's recorded seconds per run (pipeline.json), and what more machines would
buy, the chains (one per run) being independent. `tfq.pipeline` adds up a chain with `chain_seconds`."""

from __future__ import annotations

from pathlib import Path

from tfq.core import artifacts, stages
from tfq.reporting.collect import Study

STAGES = ("train", "convert", "qat", "evaluate", "sweep", "sensitivity", "mixed", "micro", "generalize", "export")


def _seconds(state: dict, stage: str) -> float | None:
    """A stage's seconds from pipeline.json; "export" adds up its per-file entries ("export int8 c", ...),
    those that ran (one not possible on the run records no time)."""
    if stage == "export":
        found = [v["seconds"] for k, v in state.items() if k.startswith("export ") and "seconds" in v]
        return sum(found) if found else None
    return state.get(stage, {}).get("seconds")


def not_possible(study: Study) -> list[str]:
    """The stages that could not be done on a run's model, each with the reason its stage gave."""
    found = [
        (n, s, v["not_possible"]) for n, r in study.runs.items() for s, v in r["stages"].items() if "not_possible" in v
    ]
    if not found:
        return []
    md = [
        "## Stages not possible on a run",
        "",
        "Each stage below could not be done on its run's model; the pipeline recorded why and ran the rest.",
        "",
        "| run | stage | why |",
        "|---|---|---|",
    ]
    return md + [f"| {n} | {s} | {why} |" for n, s, why in found] + [""]


def stage_times(study: Study) -> list[str]:
    """The stage-time table, with totals and the share of everything but training."""
    runs = study.runs
    md = [
        "## Stage times",
        "",
        "Seconds each stage took when it last ran. The qat stage is mostly training "
        "too: its fine-tuning fits (int8 QAT and its float control, the low-bit QAT fits and, where recorded, "
        "their own control's) are shown apart.",
        "",
        "| run | " + " | ".join(STAGES) + " | of qat: fine-tuning fits | all but the train stage |",
        "|---|" + "---:|" * (len(STAGES) + 2),
    ]
    totals = dict.fromkeys((*STAGES, "fits", "rest"), 0.0)
    for n, r in runs.items():
        secs = {s: _seconds(r["stages"], s) for s in STAGES}
        q, lb = r["qat"], r.get("low_bit")
        fits = q["qat"]["time_s"] + q["control"]["time_s"] if q else None
        if fits is not None and lb:  # low-bit QAT fits, and their own control's where recorded
            fits += sum(s.get("time_s", 0.0) for s in lb["schemes"].values()) + lb.get("control_time_s", 0.0)
        rest = sum(v for s, v in secs.items() if v and s != "train")
        for s, v in (*secs.items(), ("fits", fits), ("rest", rest)):
            totals[s] += v or 0
        md.append(
            f"| {n} | "
            + " | ".join("-" if v is None else f"{v:,.0f}" for v in secs.values())
            + f" | {'-' if fits is None else f'{fits:,.0f}'} | {rest:,.0f} |"
        )
    all_s = sum(totals[s] for s in STAGES)
    md.append("| **all** | " + " | ".join(f"**{totals[s]:,.0f}**" for s in (*STAGES, "fits", "rest")) + " |")
    if all_s:
        md += [
            "",
            f"All stages: {all_s:,.0f} s ({all_s / 60:.1f} min). Everything but the train stage: "
            f"{totals['rest']:,.0f} s, {100 * totals['rest'] / all_s:.1f}% of it; counting the QAT "
            f"fine-tuning fits as training too, {totals['rest'] - totals['fits']:,.0f} s, "
            f"{100 * (totals['rest'] - totals['fits']) / all_s:.1f}%.",
        ]
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


def scaleout(study: Study) -> list[str]:
    """What more machines would buy, from the recorded stage times (docs/scale-out.md)."""
    runs = study.runs
    chains = {n: chain_seconds(r["stages"]) for n, r in runs.items() if r["stages"]}
    if len(chains) < 2:
        return []
    one = sum(chains.values())
    longest = max(chains, key=chains.get)
    md = [
        "## Scale-out estimate",
        "",
        "The chains (one per run) are independent, so on N machines like this one the study takes about as long "
        "as the busiest machine's chains: each chain's recorded stage times added up, chains placed longest "
        "first on the machine that frees up first (the order `--executor=ray` submits them in), one chain per "
        "machine at a time (`ray start --num-cpus=1` on each; Ray gives a node as many chains at once as it has "
        "CPUs). Not counted: Ray's start (seconds), the report, and a shared filesystem's cost.",
        "",
        "| machines | estimated wall time | speed-up | the busiest machine runs |",
        "|---:|---:|---:|---|",
    ]
    for n in sorted({1, 2, 3, len(chains)}):
        wall, placed = machines_estimate(chains, n)
        busiest = max(range(n), key=lambda m: sum(chains[c] for c in placed if placed[c] == m))
        md.append(
            f"| {n} | {wall / 60:.1f} min | {one / wall:.2f}x | "
            f"{', '.join(c for c in placed if placed[c] == busiest)} |"
        )
    sweep_s = _seconds(runs[longest]["stages"], "sweep") or 0.0
    floor = next(n for n in range(1, len(chains) + 1) if machines_estimate(chains, n)[0] <= chains[longest])
    md += [
        "",
        f"From {floor} machines on, the longest chain ({longest}, {chains[longest] / 60:.1f} min) is "
        f"the floor: stages inside a chain run one after another. Only the sweep's lines run as parallel tasks "
        f"(its sweep stage took {sweep_s:,.0f} s); its train stage "
        f"({_seconds(runs[longest]['stages'], 'train') or 0:,.0f} s) "
        "could go to Ray Train workers on other machines (`--strategy=ray`).",
        "",
    ]
    return md


def recorded_seconds(run: Path) -> float:
    """A run folder's chain time as its pipeline.json recorded it (0 for a run not made yet)."""
    state = run / stages.STATE_FILE
    return chain_seconds(artifacts.read_json(state)) if state.is_file() else 0.0
