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
from collections.abc import Callable
from pathlib import Path

from absl import flags

from tfq import (
    convert,
    data,
    evaluate,
    export,
    generalize,
    micro,
    mixed,
    models,
    qat,
    report,
    sensitivity,
    sweep,
    train,
)
from tfq.core import artifacts, cli, stages
from tfq.core.artifacts import TfqError
from tfq.core.backend import versions
from tfq.quant import mixed_search, modes
from tfq.reporting import timing
from tfq.scale import executors

# The defaults of `python -m tfq.pipeline` for every flag the user does not give. With no flags at all it
# is a first look: every stage on the MNIST CNN in minutes, on fewer epochs, images and timings, in its own
# folder (the committed study's stays untouched); `--preset=full` keeps every setting as the flagfiles and
# PipelineConfig give it, as the study (flags/study.cfg) does.
PRESETS = {
    "first_look": {"artifacts": "artifacts/first_look", "epochs": 2, "max_train_examples": 10_000,
                   "qat_low_bit_epochs": 1, "latency_runs": 100, "sweep_grid_examples": 500,
                   "mixed_budgets": (1.0,), "micro_examples": 200, "shift_examples": 100},
    "full": {},
}


@dataclasses.dataclass
class PipelineConfig:
    datasets: tuple[str, ...] = cli.setting(("mnist",), f"Datasets: {', '.join(data.DATASETS)}.")
    models: tuple[str, ...] = cli.setting(("cnn",), f"Models: {', '.join(models.MODELS)}.")
    artifacts: str = cli.setting("artifacts", "Root of the run folders and the report.")
    flags_dir: str = cli.setting("flags", "Folder of the tuned <dataset>_<model>.cfg training flagfiles.")
    force: bool = cli.setting(False, "Redo every stage, current or not.")
    epochs: int = cli.setting(0, "Override every flagfile's training epochs (0: keep them).")  # 0: each flagfile's own
    max_train_examples: int = cli.setting(0, "Use only this many training examples (0: all).")
    max_eval_examples: int = cli.setting(0, "Use only this many validation/test examples (0: all).")
    qat_epochs: int = cli.setting(1, "QAT fine-tuning epochs (the float control gets the same).")
    qat_learning_rate: float = cli.setting(qat.QatConfig.learning_rate, "QAT fine-tuning learning rate.")
    qat_low_bit: tuple[str, ...] = cli.setting(tuple(qat.LOW_BIT), "Low-bit QAT schemes fine-tuned beside int8 (empty: none).")
    qat_low_bit_epochs: int = cli.setting(qat.QatConfig.low_bit_epochs, "Low-bit QAT epochs (0: --qat_epochs).")
    qat_low_bit_learning_rate: float = cli.setting(qat.QatConfig.low_bit_learning_rate, "Low-bit QAT learning rate (0: --qat_learning_rate).")
    num_calibration: int = cli.setting(modes.DEFAULT_CALIBRATION, "Calibration images for int8/int16x8.")
    latency_runs: int = cli.setting(200, "Timed batch-1 invokes per model.")
    threads: int = cli.setting(1, "Interpreter threads for evaluation.")
    sweep_grid_examples: int = cli.setting(sweep.SweepConfig.grid_examples, "Test images per sweep grid point (0: all).")
    sweep_calibration_draws: int = cli.setting(sweep.SweepConfig.calibration_draws, "Calibration draws per simulated activation range (spread).")
    # after the two above: in this class body the name then stops meaning the module
    sweep: bool = cli.setting(True, "Run the simulated precision sweep after evaluate.")
    mixed_budgets: tuple[float, ...] = cli.setting((), "Validation-accuracy budgets (points) for mixed-precision files "
                                                       "(tfq.mixed); empty: none.")
    mixed_objectives: tuple[str, ...] = cli.setting(("size",), f"Mixed-precision objectives: {', '.join(mixed_search.OBJECTIVES)}.")
    # last, for the same reason as `sweep`
    sensitivity: bool = cli.setting(True, "Measure per-layer sensitivity (tfq.sensitivity).")
    micro_examples: int = cli.setting(0, "Test images per file under TFLite Micro (0: --max_eval_examples, else all).")
    # after micro_examples, for the same reason as `sweep`
    micro: bool = cli.setting(True, "Run every flatbuffer under TFLite Micro (tfq.micro): arena, accuracy, "
                                    "agreement with LiteRT.")
    shift_examples: int = cli.setting(generalize.GeneralizeConfig.examples, "Test images per shifted set, a seeded subset (0: all).")
    cross_datasets: tuple[str, ...] = cli.setting((), "Other datasets to score each run on where the classes match, e.g. "
                                                      "usps,usps_resized,emnist_digits (MNIST runs); empty: none.")
    # after the two above, for the same reason as `sweep`
    generalize: bool = cli.setting(True, "Score every flatbuffer on shifted test sets and --cross_datasets "
                                         "(tfq.generalize).")
    export_modes: tuple[str, ...] = cli.setting((), "Files (e.g. int8,qat_int8) to export as C arrays and Android bundles "
                                                    "(tfq.export); empty: none.")
    executor: str = cli.setting("local", "Where the chains (one per dataset x model) "
                                         "and the sweep's lines run: here one after another, or as Ray tasks (pip install -e .[ray]).", choices=list(executors.EXECUTORS))
    ray_address: str | None = cli.setting(None, "--executor=ray: HOST:PORT of a running cluster (`ray start --head`); "
                                                "default: a local Ray instance for this run.")
    data_root: str | None = cli.setting(None, "Raw dataset files (default: $TFQ_DATA_ROOT).")
    cache_dir: str | None = cli.setting(None, "tfds build folder (default: $TFQ_CACHE_DIR or ~/.cache/tfq).")
    # the defaults the command line started from (PRESETS); the report names a first look
    preset: str = cli.setting("full", "The defaults for every flag not given: first_look "
                                      "(every stage on the MNIST CNN in minutes, in artifacts/first_look) or full (the study's).", choices=list(PRESETS))


def with_preset(cfg: PipelineConfig, given: set[str]) -> PipelineConfig:
    """`cfg` with its preset's values for every setting not in `given` (the flags the user set)."""
    if cfg.preset not in PRESETS:
        raise TfqError(f"--preset={cfg.preset}: choose one of: {', '.join(PRESETS)}")
    return dataclasses.replace(cfg, **{k: v for k, v in PRESETS[cfg.preset].items() if k not in given})


def preset_note(cfg: PipelineConfig) -> str | None:
    """The report's line saying a run is not the full study, and what it changed."""
    changed = {k: getattr(cfg, k) for k, v in PRESETS.get(cfg.preset, {}).items() if getattr(cfg, k) == v}
    if not changed:
        return None
    shown = ", ".join(f"--{k}={','.join(map(str, v)) if isinstance(v, tuple) else v}" for k, v in changed.items())
    return (f"**A {cfg.preset.replace('_', ' ')}** (`--preset={cfg.preset}`, the defaults of `python -m "
            f"tfq.pipeline` with no flags: {shown}): fewer epochs, images and timings than the study, so its "
            "numbers are not the study's; `--preset=full` runs every setting in full.")


def train_config(cfg: PipelineConfig, dataset: str, model: str) -> train.TrainConfig:
    """The tuned flagfile `flags/<dataset>_<model>.cfg` (`train.from_flagfile`), with the pipeline's overrides."""
    tc = train.from_flagfile(Path(cfg.flags_dir) / f"{dataset}_{model}.cfg", dataset, model)
    return dataclasses.replace(
        tc, artifacts=cfg.artifacts, data_root=cfg.data_root,
        cache_dir=cfg.cache_dir, epochs=cfg.epochs or tc.epochs,
        max_train_examples=cfg.max_train_examples or tc.max_train_examples,
        max_eval_examples=cfg.max_eval_examples or tc.max_eval_examples)


def adoptable(made: dict, model_file: Path, tc: train.TrainConfig, source: dict) -> bool:
    """Whether a model that `python -m tfq.train` made (its train.json `made`) is what this run
    would train: the same settings, data, library versions and tfq code, and the file unchanged."""
    return (made.get("fingerprint") == tc.fingerprint() and model_file.is_file()
            and made.get("model_sha256") == artifacts.sha256(model_file)
            and made.get("data_source_key") == source["data"] and made.get("versions") == source["versions"]
            and made.get("code") == source["code"])


@dataclasses.dataclass
class Chain:
    """One dataset x model's run as its stages see it: the pipeline's settings, the training config
    its flagfile gives, the folder, and what every key holds (data source, versions, code)."""
    cfg: PipelineConfig
    dataset: str
    model: str
    run: Path
    tc: train.TrainConfig
    source: dict  # the data source (official files or the JPEG copy) and the environment
    environment: dict  # library versions and tfq's code digest
    mapper: Callable = map  # the sweep's lines: `map`, or Ray tasks

    def place(self) -> dict:
        """The run's shared settings, which every stage's config takes."""
        return {"dataset": self.dataset, "model": self.model, "artifacts": self.cfg.artifacts,
                "data_root": self.cfg.data_root, "cache_dir": self.cfg.cache_dir}

    def file(self, name: str) -> Path:
        return self.run / f"{name}.tflite"

    def targets(self) -> list[Path]:
        """Every post-training mode and the QAT file: what evaluate measures."""
        return [*(self.file(m) for m in modes.MODES), self.file(modes.QAT_INT8.name)]

    def mixed_stems(self) -> list[str]:
        return [stem for _, _, stem in mixed.planned(_mixed_config(self))] if self.cfg.mixed_budgets else []

    def flatbuffers(self) -> list[Path]:
        """Every file of the run: what TFLite Micro and the shifted sets measure."""
        return [*self.targets(), *(self.file(s) for s in self.mixed_stems())]


def _qat_config(chain: Chain) -> qat.QatConfig:
    cfg, tc = chain.cfg, chain.tc
    return qat.QatConfig(**chain.place(), epochs=cfg.qat_epochs, batch_size=tc.batch_size,
                         learning_rate=cfg.qat_learning_rate, num_calibration=cfg.num_calibration,
                         max_train_examples=tc.max_train_examples, max_eval_examples=tc.max_eval_examples,
                         low_bit=cfg.qat_low_bit, low_bit_epochs=cfg.qat_low_bit_epochs,
                         low_bit_learning_rate=cfg.qat_low_bit_learning_rate)


def _mixed_config(chain: Chain) -> mixed.MixedConfig:
    cfg = chain.cfg
    return mixed.MixedConfig(**chain.place(), num_calibration=cfg.num_calibration, max_accuracy_drop=cfg.mixed_budgets,
                             objective=cfg.mixed_objectives, output="", max_eval_examples=chain.tc.max_eval_examples)


def _drop_other_budgets(chain: Chain, c: mixed.MixedConfig) -> None:
    """The mixed stage's files for budgets no longer asked for."""
    stems = set(chain.mixed_stems())
    for old in chain.run.glob("mixed_*_*.json"):
        stem = old.name.removesuffix(".recipe.json").removesuffix(".json")
        if stem not in stems:
            for ext in (".tflite", ".recipe.json", ".json"):
                (chain.run / f"{stem}{ext}").unlink(missing_ok=True)


def _sizes(manifests: list[dict]) -> str:
    return ", ".join(f"{m['file']} {m['size_bytes'] / 1024:,.1f} KB" for m in manifests)


def _trained(chain: Chain, c) -> list[Path]:
    return [chain.run / artifacts.MODEL_FILE]


def _sweep_checked(chain: Chain, c) -> list[Path]:
    return [*_trained(chain, c), *(p for p in map(chain.file, sweep.CHECKS) if p.is_file())]


def _cross(chain: Chain) -> list[str]:
    return generalize.compatible(chain.dataset, chain.cfg.cross_datasets)


# The stages of one run, in order. Each reads only files the stages above it wrote.
STAGES = (
    stages.Stage("train", lambda chain: chain.tc,
          reads=lambda chain, c: [], writes=lambda chain, c: [chain.run / artifacts.MODEL_FILE,
                                                             chain.run / artifacts.TRAIN_JSON],
          function=lambda chain, c: (executors.train_on_ray(train.train, c, c.ray_workers,
                                                            c.ray_address or chain.cfg.ray_address)
                                     if c.strategy == "ray" else train.train(c)),
          what=lambda chain, c: f"training the float {c.model} ({_count(c.epochs, 'epoch')}"
                                + (f" on {c.ray_workers} Ray Train workers)" if c.strategy == "ray" else ")"),
          headline=lambda r: f"test accuracy {_pct(r['test_accuracy'])}"),
    stages.Stage("convert", lambda chain: convert.ConvertConfig(**chain.place(), modes=("all",),
                                                         num_calibration=chain.cfg.num_calibration),
          reads=_trained,
          writes=lambda chain, c: [p.with_suffix(ext) for p in map(chain.file, modes.MODES) for ext in (".tflite",
                                                                                                        ".json")],
          function=lambda chain, c: convert.convert(c), what=lambda chain, c: f"converting to {', '.join(modes.MODES)}",
          headline=_sizes),
    stages.Stage("qat", _qat_config, reads=lambda chain, c: [*_trained(chain, c), chain.file("float32")],
          writes=lambda chain, c: [chain.file(modes.QAT_INT8.name), chain.run / f"{modes.QAT_INT8.name}.json",
                                   chain.run / qat.QAT_MODEL_FILE, *([chain.run / qat.LOW_BIT_JSON] if c.low_bit else [])],
          function=lambda chain, c: qat.qat(c),
          what=lambda chain, c: (f"quantization-aware fine-tuning and equally fine-tuned float controls: int8 "
                                 f"({_count(c.epochs, 'epoch')})" + (f", {', '.join(c.low_bit)} "
                                                                     f"({_count(c.low_bit_epochs or c.epochs, 'epoch')})"
                                                                     if c.low_bit else "")),
          headline=lambda r: f"QAT int8 {_pct(r['accuracy']['qat_int8'])}, PTQ int8 of the control "
                             f"{_pct(r['accuracy']['ptq_int8_of_finetuned'])}"),
    stages.Stage("evaluate", lambda chain: evaluate.EvalConfig(
              **chain.place(), modes=tuple(p.stem for p in chain.targets()), threads=chain.cfg.threads,
              latency_runs=chain.cfg.latency_runs, max_eval_examples=chain.tc.max_eval_examples),
          reads=lambda chain, c: chain.targets(),
          writes=lambda chain, c: [chain.run / f"eval_{p.stem}{ext}" for p in chain.targets() for ext in (".json", ".npy")],
          function=lambda chain, c: evaluate.evaluate(c),
          what=lambda chain, c: f"measuring {len(chain.targets())} flatbuffers in LiteRT",
          headline=lambda rs: ", ".join(f"{r['name']} {_pct(r['accuracy'])}" for r in rs)),
    stages.Stage("sweep", lambda chain: sweep.SweepConfig(
              **chain.place(), grid_examples=chain.cfg.sweep_grid_examples,
              calibration_draws=chain.cfg.sweep_calibration_draws, num_calibration=chain.cfg.num_calibration,
              max_eval_examples=chain.tc.max_eval_examples),
          reads=_sweep_checked, writes=lambda chain, c: [chain.run / "sweep.json", chain.run / "sweep.csv"],
          function=lambda chain, c: sweep.sweep(c, map_lines=chain.mapper),
          what=lambda chain, c: (f"simulated precisions, {len(sweep.LINES)} schemes x {len(c.bits)} widths, checked "
                                 f"against {len(_sweep_checked(chain, c)) - 1} real files"),
          headline=sweep.headline, enabled=lambda cfg: cfg.sweep),
    stages.Stage("sensitivity", lambda chain: sensitivity.SensitivityConfig(
              **chain.place(), num_calibration=chain.cfg.num_calibration, max_eval_examples=chain.tc.max_eval_examples),
          reads=lambda chain, c: [chain.file("float32")],
          writes=lambda chain, c: [chain.run / sensitivity.SENSITIVITY_JSON],
          function=lambda chain, c: sensitivity.sensitivity(c),
          what=lambda chain, c: f"per-layer sensitivity on the validation split ({', '.join(c.schemes)})",
          headline=sensitivity.headline, enabled=lambda cfg: cfg.sensitivity),
    stages.Stage("mixed", _mixed_config,
          reads=lambda chain, c: [chain.file("float32"), *(p for p in [chain.run / sensitivity.SENSITIVITY_JSON]
                                                           if p.is_file())],
          writes=lambda chain, c: [chain.run / f"{stem}{ext}" for stem in chain.mixed_stems()
                                   for ext in (".tflite", ".recipe.json", ".json")],
          function=lambda chain, c: mixed.mixed(c),
          what=lambda chain, c: (f"mixed precision within {', '.join(f'{b:g}' for b in c.max_accuracy_drop)} points "
                                 f"({', '.join(c.objective)})"),
          headline=_sizes, enabled=lambda cfg: bool(cfg.mixed_budgets), before=_drop_other_budgets),
    stages.Stage("micro", lambda chain: micro.MicroConfig(
              **chain.place(), modes=tuple(p.stem for p in chain.flatbuffers()),
              max_examples=chain.cfg.micro_examples or chain.tc.max_eval_examples),
          reads=lambda chain, c: chain.flatbuffers(), writes=lambda chain, c: [chain.run / micro.MICRO_JSON],
          function=lambda chain, c: micro.micro(c, report_unsupported=True),
          what=lambda chain, c: f"{len(c.modes)} flatbuffers under TFLite Micro",
          headline=micro.headline, enabled=lambda cfg: cfg.micro),
    stages.Stage("generalize", lambda chain: generalize.GeneralizeConfig(
              **chain.place(), modes=tuple(p.stem for p in chain.flatbuffers()), examples=chain.cfg.shift_examples,
              cross_datasets=tuple(_cross(chain)), max_eval_examples=chain.tc.max_eval_examples),
          reads=lambda chain, c: chain.flatbuffers(),
          writes=lambda chain, c: [chain.run / generalize.GENERALIZE_JSON, chain.run / generalize.GENERALIZE_NPZ,
                                   *(evaluate.result_stem(p, p.stem, eval_dataset=o).with_suffix(ext)
                                     for o in c.cross_datasets for p in chain.flatbuffers()
                                     for ext in (".json", ".npy"))],
          function=lambda chain, c: generalize.generalize(c),
          what=lambda chain, c: (f"{len(c.modes)} flatbuffers on shifted test images ({c.examples or 'all'} per set)"
                                 + (f" and on {', '.join(c.cross_datasets)}" if c.cross_datasets else "")),
          headline=generalize.headline, enabled=lambda cfg: cfg.generalize,
          key_also=lambda chain, c: {o: data.source_key(o, chain.cfg.data_root, chain.cfg.cache_dir)
                                     for o in c.cross_datasets}),
)


def _export_stage(mode: str, fmt: str) -> stages.Stage:
    """Shipping one file in one format: its key holds the file and the library versions, not the data."""
    def check(chain: Chain, c) -> None:
        if not chain.file(mode).is_file():
            raise TfqError(f"--export_modes={mode}: no {chain.file(mode)} (the stages above did not make it)")

    return stages.Stage(f"export {mode} {fmt}", lambda chain: export.ExportConfig(
                     dataset=chain.dataset, model=chain.model, mode=mode, format=fmt, artifacts=chain.cfg.artifacts),
                 reads=lambda chain, c: [chain.file(mode)],
                 writes=lambda chain, c: [chain.run / "export" / f"{mode}_{fmt}" / "export.json"],
                 function=lambda chain, c: export.export(c),
                 what=lambda chain, c: f"{mode}.tflite for {'a TFLite Micro app (C)' if fmt == 'c' else 'an Android app'}",
                 headline=lambda m: f"{m['folder']}: {', '.join(m['files'])}", before=check)


def stages_for(cfg: PipelineConfig) -> list[stages.Stage]:
    """The rows this run takes: the table's enabled stages, then one export per file and format."""
    return [*(s for s in STAGES if s.enabled(cfg)),
            *(_export_stage(m, f) for m in cfg.export_modes for f in export.FORMATS)]


def run_pair(cfg: PipelineConfig, dataset: str, model: str, environment: dict, tc: train.TrainConfig | None = None,
             *, mapper=map) -> dict:
    """One dataset x model's stages, from the table, skipping those whose key and outputs are current;
    `environment` is the driver's library versions and tfq code digest (a worker with others refuses
    to run), `tc` the training config the driver read from the flagfile, `mapper` runs the sweep's
    lines (`map`, or Ray tasks). Returns the stages it ran and skipped, and every output file
    (absolute path -> sha256), so a driver elsewhere can check that it sees them."""
    here = {"versions": versions(), "code": artifacts.code_digest()}
    if here != environment:
        import socket

        odd = [k for k in ("code", "versions") if here[k] != environment[k]]
        raise TfqError(f"{socket.gethostname()} runs other {' and '.join(odd)} than the driver "
                       "(install the same tfq checkout and constraints.txt on every node)")
    run = artifacts.check_writable(artifacts.run_dir(cfg.artifacts, dataset, model))
    for stale in artifacts.remove_stale_temps(run):
        print(f"[{dataset}_{model}] removed {stale.name}, left half-written by a writer that was stopped", flush=True)
    # every key holds the data source (official files or the JPEG copy), the library versions and
    # tfq's own code: a change to any of them makes the stages run again
    source = {"data": data.source_key(dataset, cfg.data_root, cfg.cache_dir), **environment}
    chain = Chain(cfg, dataset, model, run, tc or train_config(cfg, dataset, model), source, environment, mapper)
    rows = stages_for(cfg)
    runner = stages.Stages(run, f"{dataset}_{model}", cfg.force, [s.name for s in rows])
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
        runner.run(stage.name, key, lambda s=stage, c=c: s.writes(chain, c), lambda s=stage, c=c: s.function(chain, c),
                   stage.what(chain, c), stage.headline)
    return {"ran": runner.ran, "skipped": runner.skipped, "produced": runner.produced}


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _pct(v: float) -> str:
    return f"{100 * v:.2f}%"


def validate(cfg: PipelineConfig) -> None:
    """Every flag and every flagfile the run will read, before any stage starts."""
    if not cfg.datasets or not cfg.models:
        raise TfqError("--datasets and --models need at least one name each")
    for d in cfg.datasets:
        data.get(d)
    for m in cfg.models:
        models.get(m)
    cli.check_at_least(cfg, 0, "epochs", "max_train_examples", "max_eval_examples")
    cli.check_at_least(cfg, 1, "qat_epochs", "num_calibration", "latency_runs", "threads", "sweep_calibration_draws")
    cli.check_at_least(cfg, 0, "sweep_grid_examples", "qat_low_bit_epochs", "qat_low_bit_learning_rate")
    bad = [o for o in cfg.mixed_objectives if o not in mixed_search.OBJECTIVES]
    if bad or any(not 0 <= b <= 100 for b in cfg.mixed_budgets):
        raise TfqError(f"--mixed_budgets={','.join(map(str, cfg.mixed_budgets))} --mixed_objectives="
                       f"{','.join(cfg.mixed_objectives)}: budgets are points from 0 to 100, objectives "
                       f"{', '.join(mixed_search.OBJECTIVES)}")
    cli.check_at_least(cfg, 0, "micro_examples", "shift_examples")
    executors.executor(cfg.executor, cfg.ray_address)  # a known executor; --ray_address only with ray
    for other in cfg.cross_datasets:
        data.get(other)
        if cfg.generalize and any(generalize.compatible(d, [other]) for d in cfg.datasets):
            data.check_available(other, cfg.data_root, cfg.cache_dir)
    odd = [m for m in cfg.export_modes if m not in modes.KNOWN and not m.startswith("mixed_")]
    if odd:
        raise TfqError(f"--export_modes={','.join(odd)}: choose from {', '.join(modes.KNOWN)} or a mixed_* file")
    unknown = [s for s in cfg.qat_low_bit if s not in qat.LOW_BIT]
    if unknown:
        raise TfqError(f"--qat_low_bit={','.join(unknown)}: choose from {', '.join(qat.LOW_BIT)}")
    if not cfg.qat_learning_rate > 0:
        raise TfqError(f"--qat_learning_rate={cfg.qat_learning_rate}: must be above 0")
    for d in cfg.datasets:
        for m in cfg.models:
            train_config(cfg, d, m).validate()
    artifacts.check_writable(cfg.artifacts)


def _for_workers(cfg: PipelineConfig) -> PipelineConfig:
    """Absolute places (workers may start elsewhere), and every dataset built once, here, before
    chains that read the same one start side by side."""
    cfg = executors.absolute_places(cfg)
    others = {o for d in cfg.datasets for o in generalize.compatible(d, cfg.cross_datasets)} if cfg.generalize else set()
    for name in [*cfg.datasets, *sorted(others)]:
        data.load(name, root=cfg.data_root, cache=cfg.cache_dir)
    return cfg


def pipeline(cfg: PipelineConfig) -> Path:
    """Run every stage for every dataset x model, then the report; returns the report folder.
    The chains run through `--executor` (one after another here, or as Ray tasks)."""
    validate(cfg)
    started = time.time()
    environment = {"versions": versions(), "code": artifacts.code_digest()}  # once: the same for every stage
    with executors.executor(cfg.executor, cfg.ray_address) as ex:
        if ex.name != "local":
            cfg = _for_workers(cfg)
        # flagfiles are read here: a worker's working directory may not hold them
        jobs = {f"{d}_{m}": (cfg, d, m, environment, train_config(cfg, d, m)) for d in cfg.datasets for m in cfg.models}
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
            print(f"[{label}] finished through {ex.name}: ran {', '.join(outcome['ran']) or 'nothing'}; "
                      f"current: {', '.join(outcome['skipped']) or 'nothing'}", flush=True)
    if failed:
        raise TfqError(f"{len(failed)} of {len(jobs)} runs failed, so no report: "
                       + "; ".join(f"{f.label}: {f.error.rstrip('.')}" for f in failed)
                       + " (their finished stages are kept; a rerun redoes only the rest)")
    out = Path(cfg.artifacts) / "report"
    results = [p for d in cfg.datasets for m in cfg.models
               for p in artifacts.run_dir(cfg.artifacts, d, m).glob("*.json")]
    stages.Stages(out, "report", cfg.force).run(
        "report", stages.key(stages.digests(results), cfg.datasets, cfg.models, environment["code"], preset_note(cfg)),
        lambda: [out / report.REPORT_MD, out / "results.csv", out / "results.json", *sorted(out.glob("*.png"))],
        lambda: report.report(cfg.artifacts, out, datasets=cfg.datasets, models=cfg.models, note=preset_note(cfg)),
        "tables and plots from every run's result files", str)
    print(f"pipeline finished in {time.time() - started:.1f} s; report: {out / report.REPORT_MD}")
    return out


FLAGS = flags.FLAGS


def _define_flags() -> None:
    cli.define_flags(PipelineConfig)
    FLAGS.set_default("preset", "first_look")  # the command line's default; PipelineConfig's own is full


def main(argv):
    del argv
    given = {name for name in dataclasses.asdict(PipelineConfig()) if name in FLAGS and FLAGS[name].present}
    pipeline(with_preset(cli.config_from_flags(PipelineConfig), given))


if __name__ == "__main__":
    cli.run(main, _define_flags)
