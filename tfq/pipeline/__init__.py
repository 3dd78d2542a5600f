"""The study in one command: `python -m tfq.pipeline --datasets=mnist --models=cnn`.

For each dataset x model, the rows of `STAGES` in order: train -> convert -> qat -> evaluate -> sweep
-> sensitivity -> mixed -> micro -> generalize, then `--export_modes`' C arrays and Android bundles,
and one report over all runs. Each row names its config, the files its key reads and the files it
writes, and calls its stage's plain function. A stage is skipped when its key (its settings plus the
digests of the files it reads) matches the one recorded when it last finished and its outputs are
still there, so a rerun does nothing and a changed flag reruns just the stages downstream of it
(`--force` redoes everything); keys and times live in `artifacts/<dataset>_<model>/pipeline.json`.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from tfq import data, generalize, models, qat, report, train
from tfq.core import artifacts, cli, stages
from tfq.core.artifacts import TfqError
from tfq.core.backend import versions
from tfq.pipeline.config import PRESETS, PipelineConfig, pairs, preset_note, train_config, with_preset  # noqa: F401
from tfq.pipeline.table import STAGES, Chain, adoptable, stages_for  # noqa: F401 (the API)
from tfq.quant import mixed_search, modes
from tfq.reporting import timing
from tfq.scale import executors


def run_pair(
    cfg: PipelineConfig, dataset: str, model: str, environment: dict, tc: train.TrainConfig | None = None, *, mapper=map
) -> dict:
    """One dataset x model's stages, from the table, skipping those whose key and outputs are current;
    `environment` is the driver's library versions and tfq code digest (a worker with others refuses
    to run), `tc` the training config the driver read from the flagfile, `mapper` runs the sweep's
    lines (`map`, or Ray tasks). Returns the stages it ran and skipped, and every output file
    (absolute path -> sha256), so a driver elsewhere can check that it sees them."""
    here = {"versions": versions(), "code": artifacts.code_digest()}
    if here != environment:
        import socket

        odd = [k for k in ("code", "versions") if here[k] != environment[k]]
        raise TfqError(
            f"{socket.gethostname()} runs other {' and '.join(odd)} than the driver "
            "(install the same tfq checkout and constraints.txt on every node)"
        )
    with artifacts.new_or_kept(artifacts.run_dir(cfg.artifacts, dataset, model)) as run:
        return _run_stages(cfg, dataset, model, run, environment, tc, mapper)


def _run_stages(cfg, dataset, model, run: Path, environment, tc, mapper) -> dict:
    """`run_pair`'s stages, in a run folder that exists and is writable."""
    for stale in artifacts.remove_stale_temps(run):
        print(f"[{run.name}] removed {stale.name}, left half-written by a writer that was stopped", flush=True)
    # every key holds the data source (official files or the JPEG copy), the library versions and
    # tfq's own code: a change to any of them makes the stages run again
    source = {"data": data.source_key(dataset, cfg.data_root, cfg.cache_dir), **environment}
    chain = Chain(cfg, dataset, model, run, tc or train_config(cfg, dataset, model), source, environment, mapper)
    rows = stages_for(cfg)
    runner = stages.Stages(run, run.name, cfg.force, [s.name for s in rows])
    for stage in rows:
        c = stage.config(chain)
        if stage.before:
            stage.before(chain, c)
        if stage.name == "train":  # a model `python -m tfq.train` made with these very settings counts as current
            key = stages.key(c.fingerprint(), source)
            made = artifacts.read_json(run / artifacts.TRAIN_JSON, default={})
            if adoptable(made, run / artifacts.MODEL_FILE, c, source):
                runner.adopt("train", key, made["wall_time_s"], stage.writes(chain, c))
        else:
            key = stage.key(chain, c)
        runner.run(
            stage.name,
            key,
            lambda s=stage, c=c: s.writes(chain, c),
            lambda s=stage, c=c: s.function(chain, c),
            stage.what(chain, c),
            stage.headline,
        )
    return {"ran": runner.ran, "skipped": runner.skipped, "produced": runner.produced}


def validate(cfg: PipelineConfig) -> None:
    """Every flag and every flagfile the run will read, before any stage starts."""
    if not cfg.datasets or not cfg.models:
        raise TfqError("--datasets and --models need at least one name each")
    user = cli.Run(model_file=cfg.model_file, float_tflite=cfg.float_tflite, run_name=cfg.run_name)  # its checks
    if cfg.runs and user.model_file:
        raise TfqError(f"--runs={','.join(cfg.runs)} names tfq's own runs: it does not go with --model_file")
    for d in cfg.datasets:
        data.get(d, cfg.image_size if data.resizable(d) else None)
    for m in [] if user.model_file else cfg.models:
        models.get(m)
    run_pairs = pairs(cfg)
    cli.check_at_least(cfg, 0, "epochs", "max_train_examples", "max_eval_examples")
    cli.check_at_least(cfg, 1, "qat_epochs", "num_calibration", "latency_runs", "threads", "sweep_calibration_draws")
    cli.check_at_least(cfg, 0, "sweep_grid_examples", "qat_low_bit_epochs", "qat_low_bit_learning_rate")
    bad = [o for o in cfg.mixed_objectives if o not in mixed_search.OBJECTIVES]
    if bad or any(not 0 <= b <= 100 for b in cfg.mixed_budgets):
        raise TfqError(
            f"--mixed_budgets={','.join(map(str, cfg.mixed_budgets))} --mixed_objectives="
            f"{','.join(cfg.mixed_objectives)}: budgets are points from 0 to 100, objectives "
            f"{', '.join(mixed_search.OBJECTIVES)}"
        )
    cli.check_at_least(cfg, 0, "micro_examples", "shift_examples")
    executors.executor(cfg.executor, cfg.ray_address)  # a known executor; --ray_address only with ray
    for other in cfg.cross_datasets:
        data.get(other)
        if cfg.generalize and any(generalize.compatible(d, [other]) for d, _ in run_pairs):
            data.check_available(other, cfg.data_root, cfg.cache_dir)
    odd = [m for m in cfg.export_modes if m not in modes.KNOWN and not m.startswith("mixed_")]
    if odd:
        raise TfqError(f"--export_modes={','.join(odd)}: choose from {', '.join(modes.KNOWN)} or a mixed_* file")
    unknown = [s for s in cfg.qat_low_bit if s not in qat.LOW_BIT]
    if unknown:
        raise TfqError(f"--qat_low_bit={','.join(unknown)}: choose from {', '.join(qat.LOW_BIT)}")
    if not cfg.qat_learning_rate > 0:
        raise TfqError(f"--qat_learning_rate={cfg.qat_learning_rate}: must be above 0")
    for d, m in run_pairs:
        train_config(cfg, d, m).validate()
    artifacts.check_writable(cfg.artifacts)


def _for_workers(cfg: PipelineConfig) -> PipelineConfig:
    """Absolute places (workers may start elsewhere), and every dataset built once, here, before
    chains that read the same one start side by side."""
    cfg = executors.absolute_places(cfg)
    others = (
        {o for d, _ in pairs(cfg) for o in generalize.compatible(d, cfg.cross_datasets)} if cfg.generalize else set()
    )
    # an image folder or tfds dataset is read at its run's shape, in its train stage
    for name in [*dict.fromkeys(d for d, _ in pairs(cfg) if not data.resizable(d)), *sorted(others)]:
        data.load(name, root=cfg.data_root, cache=cfg.cache_dir)
    return cfg


def pipeline(cfg: PipelineConfig) -> Path:
    """Run every stage for every dataset x model, then the report; returns the report folder.
    The chains run through `--executor` (one after another here, or as Ray tasks). With --model_file
    the one model is the user's, imported into each dataset's run in place of training."""
    if cfg.model_file or cfg.float_tflite:
        name = cli.Run(model_file=cfg.model_file, float_tflite=cfg.float_tflite, run_name=cfg.run_name).model
        cfg = dataclasses.replace(cfg, models=(name,))
    validate(cfg)
    started = time.time()
    environment = {"versions": versions(), "code": artifacts.code_digest()}  # once: the same for every stage
    with executors.executor(cfg.executor, cfg.ray_address) as ex:
        if ex.name != "local":
            cfg = _for_workers(cfg)
        # flagfiles are read here: a worker's working directory may not hold them
        jobs = {
            artifacts.run_dir("", d, m).name: (cfg, d, m, environment, train_config(cfg, d, m)) for d, m in pairs(cfg)
        }
        if ex.name != "local":  # longest recorded chain first: the slowest does not start last
            jobs = dict(sorted(jobs.items(), key=lambda kv: -timing.recorded_seconds(Path(cfg.artifacts) / kv[0])))
        outcomes = ex.chains(run_pair, jobs)
    failed = [o for o in outcomes.values() if isinstance(o, executors.Failure)]
    for f in failed:  # every chain has returned: nothing else writes there now
        artifacts.remove_stale_temps(Path(cfg.artifacts) / f.label)
    for label, outcome in outcomes.items():
        if ex.name != "local" and not isinstance(outcome, executors.Failure):  # a worker may run elsewhere
            executors.check_collected(label, outcome["produced"])
            # the workers' own lines reach this console late, or deduplicated
            print(
                f"[{label}] finished through {ex.name}: ran {', '.join(outcome['ran']) or 'nothing'}; "
                f"current: {', '.join(outcome['skipped']) or 'nothing'}",
                flush=True,
            )
    if failed:
        raise TfqError(
            f"{len(failed)} of {len(jobs)} runs failed, so no report: "
            + "; ".join(f"{f.label}: {f.error.rstrip('.')}" for f in failed)
            + " (their finished stages are kept; a rerun redoes only the rest)"
        )
    out = Path(cfg.artifacts) / "report"
    results = [p for d, m in pairs(cfg) for p in artifacts.run_dir(cfg.artifacts, d, m).glob("*.json")]
    stages.Stages(out, "report", cfg.force).run(
        "report",
        stages.key(stages.digests(results), pairs(cfg), environment["code"], preset_note(cfg)),
        lambda: [out / report.REPORT_MD, out / "results.csv", out / "results.json", *sorted(out.glob("*.png"))],
        lambda: report.report(cfg.artifacts, out, pairs=pairs(cfg), note=preset_note(cfg)),
        "tables and plots from every run's result files",
        str,
    )
    print(f"pipeline finished in {time.time() - started:.1f} s; report: {out / report.REPORT_MD}")
    return out
