"""The study's report, made from result files alone: `python -m tfq.report`.

Reads each run folder's `train.json`, `eval_<mode>.json`, `qat_int8.json`, `sweep.json`,
`generalize.json` and `pipeline.json`, and writes `report.md` (one table per dataset, training
curves, the ai-edge-quantizer modes and the kernels that ran them, the precision sweep with its
checks against real files and its paired scheme comparisons, QAT against its control, generalization
under shift and on other datasets, stage times), `results.csv`, `results.json` and plots: accuracy
against size with the Pareto front, batch-1 latency per mode, the per-class accuracy change of int8
against float32, accuracy against bits, training curves and the quantization gap under shift per run.
This module is the stage: the sections, in report order, are listed in `SECTIONS`; what reads the
result files, formats numbers, draws figures and writes each section is in `tfq.reporting`.
"""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

from absl import flags

from tfq import data
from tfq import models as models_module
from tfq.core import artifacts, cli
from tfq.core.artifacts import TfqError
from tfq.models import imported
from tfq.reporting import (
    evals,
    findings,
    generalization,
    headline,
    micro,
    plots,
    precision,
    qat,
    sweep,
    timing,
    training,
)
from tfq.reporting.collect import COLUMNS, Study, collect

REPORT_MD = "report.md"

# report.md after its title and date line: each section takes the Study and gives its lines (none when the
# study has nothing for it)
SECTIONS = (
    evals.tables,  # one table per dataset
    findings.section,
    training.section,
    evals.aeq,  # the ai-edge-quantizer modes and the kernels that ran them
    sweep.section,
    qat.control,  # QAT against an equally fine-tuned control
    qat.low_bit,
    qat.scratch,
    precision.sensitivity,
    precision.mixed,
    micro.section,
    generalization.section,
    evals.latency,  # latency and per-class change
    evals.stale,  # results left out: they no longer match their files
    timing.not_possible,  # stages a run's model cannot go through (a layer a tool does not take)
    timing.stage_times,
    timing.scaleout,
)


def report(
    artifacts_root: str | Path = "artifacts",
    out: str | Path | None = None,
    *,
    datasets=tuple(data.DATASETS),
    models=tuple(models_module.MODELS),
    pairs=None,
    command: str | None = None,
    note: str | None = None,
) -> Path:
    """Write the report folder from the run folders' result files; returns report.md's path. The runs
    are `pairs` of (dataset, model) if given, else every dataset x model. `note`, if given, stands
    under the title (the pipeline's first look says what it cut)."""
    pairs = list(pairs or [(d, m) for d in datasets for m in models])
    for d, _ in pairs:
        data.get(d)
    # tfq's own models, or a user's imported into a run (--model_file)
    imports = {m for d, m in pairs if imported.is_imported(artifacts.run_dir(artifacts_root, d, m))}
    for m in dict.fromkeys(m for _, m in pairs if m not in models_module.MODELS and m not in imports):
        models_module.get(m)
    out = artifacts.check_writable(Path(out or Path(artifacts_root) / "report"))
    rows, runs, stale_results = collect(artifacts_root, pairs)
    if not rows:
        raise TfqError(f"no eval_*.json under {artifacts_root}; run python -m tfq.pipeline (or tfq.evaluate) first")
    study = Study(rows, runs, stale_results, plots.write(rows, runs, out))

    flat = [{k: r[k] for k in (*COLUMNS, "examples")} for r in rows]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(flat[0]))
    writer.writeheader()
    writer.writerows(flat)
    with artifacts.atomic_path(out / "results.csv") as tmp:
        tmp.write_text(buf.getvalue())
    artifacts.write_json(
        out / "results.json",
        {
            "rows": rows,
            "stale": stale_results,
            "runs": {
                n: {
                    "train": r["train"]
                    and {
                        k: r["train"].get(k)
                        for k in ("test_accuracy", "epochs", "wall_time_s", "params", "macs", "data_source")
                    },
                    "qat": r["qat"]
                    and {k: r["qat"][k] for k in ("accuracy", "qat_gain_over_ptq", "qat_drop_vs_float")},
                    "stages": r["stages"],
                }
                for n, r in runs.items()
            },
            "headline": headline.headline_facts(rows, runs),
        },
    )

    md = [
        "# tfq quantization study",
        "",
        f"Made {time.strftime('%Y-%m-%d')} on {rows[0]['cpu']}, LiteRT with {rows[0]['threads']} thread(s)"
        + (f", by `{command}`" if command else "")
        + ".",
        "",
        *([note, ""] if note else []),
    ]
    for section in SECTIONS:
        md += section(study)
    with artifacts.atomic_path(out / REPORT_MD) as tmp:
        tmp.write_text("\n".join(md))
    return out / REPORT_MD


FLAGS = flags.FLAGS


def _define_flags() -> None:
    flags.DEFINE_string("artifacts", "artifacts", "Root of the run folders.")
    flags.DEFINE_list("datasets", list(data.DATASETS), "Datasets to include.")
    flags.DEFINE_list("models", list(models_module.MODELS), "Models to include (runs not found are left out).")
    flags.DEFINE_string("out", None, "Report folder (default: <artifacts>/report).")
    flags.DEFINE_string(
        "readme", None, "Also rewrite this README's generated headline paragraph from the report's results.json."
    )


def main(argv):
    del argv
    written = report(FLAGS.artifacts, FLAGS.out, datasets=FLAGS.datasets, models=FLAGS.models)
    print(written)
    if FLAGS.readme:
        facts = artifacts.read_json(written.parent / "results.json")["headline"]
        print(headline.write_readme_headline(FLAGS.readme, facts))


if __name__ == "__main__":
    cli.run(main, _define_flags)
