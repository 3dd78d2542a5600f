"""The study in one command: `python -m tfq.pipeline --datasets=mnist --models=cnn`.

For each dataset x model: train -> convert (every post-training mode, the converter's and
ai-edge-quantizer's) -> qat -> evaluate (every flatbuffer) -> sweep (simulated precisions, checked
against the real files) -> sensitivity (per layer) -> mixed (per-layer precisions within each
accuracy budget) -> micro (every file under TFLite Micro) -> generalize (every file on shifted copies of
the test split and on `--cross_datasets` that share its classes) -> export (`--export_modes`: C arrays
and Android bundles), then one report over all runs. Orchestration only: each stage is the plain function
of its module. A stage is skipped when its key (its settings plus the digests of the files it
reads) matches the key recorded when it last finished and its outputs are still there, so a
rerun does nothing and a changed flag reruns just the stages downstream of it (`--force` redoes
everything). Keys and stage times live in `artifacts/<dataset>_<model>/pipeline.json`.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from absl import flags

from tfq import convert, data, evaluate, export, generalize, micro, models, qat, report, sensitivity, sweep, train
from tfq.core import artifacts, cli, stages
from tfq.core.artifacts import TfqError
from tfq.core.backend import versions
from tfq.quant import mixed, modes
from tfq.reporting import timing
from tfq.scale import executors


@dataclasses.dataclass
class PipelineConfig:
    datasets: tuple[str, ...] = ("mnist",)
    models: tuple[str, ...] = ("cnn",)
    artifacts: str = "artifacts"
    flags_dir: str = "flags"
    force: bool = False
    epochs: int = 0  # 0: each flagfile's own
    max_train_examples: int = 0
    max_eval_examples: int = 0
    qat_epochs: int = 1
    qat_learning_rate: float = qat.QatConfig.learning_rate
    qat_low_bit: tuple[str, ...] = tuple(qat.LOW_BIT)
    qat_low_bit_epochs: int = qat.QatConfig.low_bit_epochs  # 0: --qat_epochs
    qat_low_bit_learning_rate: float = qat.QatConfig.low_bit_learning_rate  # 0: --qat_learning_rate
    num_calibration: int = modes.DEFAULT_CALIBRATION
    latency_runs: int = 200
    threads: int = 1
    sweep_grid_examples: int = sweep.SweepConfig.grid_examples
    sweep_calibration_draws: int = sweep.SweepConfig.calibration_draws
    sweep: bool = True  # after the two above: in this class body the name then stops meaning the module
    mixed_budgets: tuple[float, ...] = ()  # validation drops (points) for --mode=mixed; empty: no mixed stage
    mixed_objectives: tuple[str, ...] = ("size",)
    sensitivity: bool = True  # last, for the same reason as `sweep`
    micro_examples: int = 0  # test images per file under TFLite Micro (0: --max_eval_examples, else all)
    micro: bool = True  # after micro_examples, for the same reason as `sweep`
    shift_examples: int = generalize.GeneralizeConfig.examples  # test images per shifted set (0: all)
    cross_datasets: tuple[str, ...] = ()  # scored where a run's classes match (MNIST -> usps, emnist_digits)
    generalize: bool = True  # after the two above, for the same reason as `sweep`
    export_modes: tuple[str, ...] = ()  # files to export for apps, in every tfq.export format
    executor: str = "local"  # or "ray": chains and sweep lines as Ray tasks (tfq.scale.executors)
    ray_address: str | None = None  # HOST:PORT of a running Ray cluster; None: a local instance
    data_root: str | None = None
    cache_dir: str | None = None
    preset: str = "full"  # the defaults the command line started from (PRESETS); the report names a first look


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
    """The tuned flagfile `flags/<dataset>_<model>.cfg`, read by absl exactly as
    `python -m tfq.train --flagfile=...` reads it, with the pipeline's overrides."""
    path = Path(cfg.flags_dir) / f"{dataset}_{model}.cfg"
    fv = flags.FlagValues()
    train.define_flags(fv)
    try:
        fv(["tfq.pipeline", f"--dataset={dataset}", f"--model={model}",
            *([f"--flagfile={path}"] if path.is_file() else [])])
    except flags.Error as e:
        raise TfqError(f"{path}: {str(e).splitlines()[0]}") from None
    tc = cli.config_from_flags(train.TrainConfig, fv)
    if (tc.dataset, tc.model) != (dataset, model):
        raise TfqError(f"{path} trains --dataset={tc.dataset} --model={tc.model}, not {dataset} {model}")
    return dataclasses.replace(
        tc, artifacts=cfg.artifacts, data_root=cfg.data_root,
        cache_dir=cfg.cache_dir, epochs=cfg.epochs or tc.epochs,
        max_train_examples=cfg.max_train_examples or tc.max_train_examples,
        max_eval_examples=cfg.max_eval_examples or tc.max_eval_examples)


_PLACES = ("artifacts", "data_root", "cache_dir")  # where files live does not change results


def _settings(config) -> dict:
    return {k: v for k, v in dataclasses.asdict(config).items() if k not in _PLACES}


def adoptable(made: dict, model_file: Path, tc: train.TrainConfig, source: dict) -> bool:
    """Whether a model that `python -m tfq.train` made (its train.json `made`) is what this run
    would train: the same settings, data, library versions and tfq code, and the file unchanged."""
    return (made.get("fingerprint") == tc.fingerprint() and model_file.is_file()
            and made.get("model_sha256") == artifacts.sha256(model_file)
            and made.get("data_source_key") == source["data"] and made.get("versions") == source["versions"]
            and made.get("code") == source["code"])


def run_pair(cfg: PipelineConfig, dataset: str, model: str, environment: dict, tc: train.TrainConfig | None = None,
             *, mapper=map) -> dict:
    """One dataset x model's stages; `environment` is the driver's library versions and tfq code digest
    (a worker with others refuses to run), `tc` the training config the driver read from the flagfile,
    `mapper` runs the sweep's lines (`map`, or Ray tasks). Returns the stages it ran and skipped,
    and every output file (absolute path -> sha256), so a driver elsewhere can check that it sees them."""
    here = {"versions": versions(), "code": artifacts.code_digest()}
    if here != environment:
        import socket

        odd = [k for k in ("code", "versions") if here[k] != environment[k]]
        raise TfqError(f"{socket.gethostname()} runs other {' and '.join(odd)} than the driver "
                       "(install the same tfq checkout and constraints.txt on every node)")
    run = artifacts.check_writable(artifacts.run_dir(cfg.artifacts, dataset, model))
    for stale in artifacts.remove_stale_temps(run):
        print(f"[{dataset}_{model}] removed {stale.name}, left half-written by a writer that was stopped", flush=True)
    planned = ["train", "convert", "qat", "evaluate", *(["sweep"] if cfg.sweep else []),
               *(["sensitivity"] if cfg.sensitivity else []), *(["mixed"] if cfg.mixed_budgets else []),
               *(["micro"] if cfg.micro else []), *(["generalize"] if cfg.generalize else []),
               *(f"export {m} {f}" for m in cfg.export_modes for f in export.FORMATS)]
    chain = stages.Stages(run, f"{dataset}_{model}", cfg.force, planned)
    tc = tc or train_config(cfg, dataset, model)
    model_file = run / artifacts.MODEL_FILE
    # every key holds the data source (official files or the JPEG copy), the library versions and
    # tfq's own code: a change to any of them makes the stages run again
    source = {"data": data.source_key(dataset, cfg.data_root, cfg.cache_dir), **environment}
    train_key = stages.key(tc.fingerprint(), source)
    made = artifacts.read_json(run / artifacts.TRAIN_JSON, default={})
    train_outputs = [model_file, run / artifacts.TRAIN_JSON]
    if adoptable(made, model_file, tc, source):
        chain.adopt("train", train_key, made["wall_time_s"], train_outputs)
    chain.run("train", train_key, lambda: train_outputs,
               lambda: (executors.train_on_ray(train.train, tc, tc.ray_workers, tc.ray_address or cfg.ray_address)
                        if tc.strategy == "ray" else train.train(tc)),
               f"training the float {model} ({_count(tc.epochs, 'epoch')}"
               + (f" on {tc.ray_workers} Ray Train workers)" if tc.strategy == "ray" else ")"),
               lambda r: f"test accuracy {_pct(r['test_accuracy'])}")

    model_digest = artifacts.sha256(model_file)
    cc = convert.ConvertConfig(dataset=dataset, model=model, modes=("all",), artifacts=cfg.artifacts,
                               num_calibration=cfg.num_calibration, data_root=cfg.data_root,
                               cache_dir=cfg.cache_dir)
    mode_files = [run / f"{m}.tflite" for m in modes.MODES]
    mode_outputs = [*mode_files, *(p.with_suffix(".json") for p in mode_files)]
    chain.run("convert", stages.key(model_digest, _settings(cc), source), lambda: mode_outputs,
               lambda: convert.convert(cc),
               f"converting to {', '.join(modes.MODES)}",
               lambda ms: ", ".join(f"{m['file']} {m['size_bytes'] / 1024:,.1f} KB" for m in ms))

    qc = qat.QatConfig(dataset=dataset, model=model, epochs=cfg.qat_epochs, batch_size=tc.batch_size,
                       learning_rate=cfg.qat_learning_rate, artifacts=cfg.artifacts,
                       num_calibration=cfg.num_calibration, max_train_examples=tc.max_train_examples,
                       max_eval_examples=tc.max_eval_examples, low_bit=cfg.qat_low_bit,
                       low_bit_epochs=cfg.qat_low_bit_epochs, low_bit_learning_rate=cfg.qat_low_bit_learning_rate,
                       data_root=cfg.data_root,
                       cache_dir=cfg.cache_dir)
    qat_file = run / f"{modes.QAT_INT8.name}.tflite"
    qat_outputs = [qat_file, qat_file.with_suffix(".json"), run / qat.QAT_MODEL_FILE,
                   *([run / qat.LOW_BIT_JSON] if qc.low_bit else [])]
    chain.run("qat", stages.key(model_digest, stages.digests([run / "float32.tflite"]), _settings(qc), source),
               lambda: qat_outputs, lambda: qat.qat(qc),
               f"quantization-aware fine-tuning and equally fine-tuned float controls: int8 "
               f"({_count(qc.epochs, 'epoch')})" + (f", {', '.join(qc.low_bit)} "
                                                    f"({_count(qc.low_bit_epochs or qc.epochs, 'epoch')})"
                                                    if qc.low_bit else ""),
               lambda r: f"QAT int8 {_pct(r['accuracy']['qat_int8'])}, PTQ int8 of the control "
                         f"{_pct(r['accuracy']['ptq_int8_of_finetuned'])}")

    targets = [*mode_files, qat_file]
    ec = evaluate.EvalConfig(dataset=dataset, model=model, modes=tuple(p.stem for p in targets),
                             artifacts=cfg.artifacts, threads=cfg.threads, latency_runs=cfg.latency_runs,
                             max_eval_examples=tc.max_eval_examples, data_root=cfg.data_root,
                             cache_dir=cfg.cache_dir)
    chain.run("evaluate", stages.key(stages.digests(targets), _settings(ec), source),
               lambda: [run / f"eval_{p.stem}{ext}" for p in targets for ext in (".json", ".npy")],
               lambda: evaluate.evaluate(ec),
               f"measuring {len(targets)} flatbuffers in LiteRT",
               lambda rs: ", ".join(f"{r['name']} {_pct(r['accuracy'])}" for r in rs))

    if cfg.sweep:
        sc = sweep.SweepConfig(dataset=dataset, model=model, artifacts=cfg.artifacts,
                               grid_examples=cfg.sweep_grid_examples, calibration_draws=cfg.sweep_calibration_draws,
                               num_calibration=cfg.num_calibration, max_eval_examples=tc.max_eval_examples,
                               data_root=cfg.data_root, cache_dir=cfg.cache_dir)
        checked = [run / f"{name}.tflite" for name in sweep.CHECKS if (run / f"{name}.tflite").is_file()]
        chain.run("sweep", stages.key(model_digest, stages.digests(checked), _settings(sc), source),
                   lambda: [run / "sweep.json", run / "sweep.csv"], lambda: sweep.sweep(sc, map_lines=mapper),
                   f"simulated precisions, {len(sweep.LINES)} schemes x {len(sc.bits)} widths, checked against "
                   f"{len(checked)} real files", sweep.headline)

    float_file, sensitivity_file = run / "float32.tflite", run / sensitivity.SENSITIVITY_JSON
    if cfg.sensitivity:
        nc = sensitivity.SensitivityConfig(dataset=dataset, model=model, artifacts=cfg.artifacts,
                                           num_calibration=cfg.num_calibration,
                                           max_eval_examples=tc.max_eval_examples, data_root=cfg.data_root,
                                           cache_dir=cfg.cache_dir)
        chain.run("sensitivity", stages.key(stages.digests([float_file]), _settings(nc), source), lambda: [sensitivity_file],
                   lambda: sensitivity.sensitivity(nc),
                   f"per-layer sensitivity on the validation split ({', '.join(nc.schemes)})", sensitivity.headline)
    if cfg.mixed_budgets:
        mc = convert.ConvertConfig(dataset=dataset, model=model, modes=("mixed",), artifacts=cfg.artifacts,
                                   num_calibration=cfg.num_calibration, max_accuracy_drop=cfg.mixed_budgets,
                                   objective=cfg.mixed_objectives, output="", max_eval_examples=tc.max_eval_examples,
                                   data_root=cfg.data_root, cache_dir=cfg.cache_dir)
        names = convert.mixed_names(mc)
        stems = {stem for _, _, stem in names}
        for old in run.glob("mixed_*_*.json"):  # this stage's files for budgets no longer asked for
            stem = old.name.removesuffix(".recipe.json").removesuffix(".json")
            if stem not in stems:
                for ext in (".tflite", ".recipe.json", ".json"):
                    (run / f"{stem}{ext}").unlink(missing_ok=True)
        read = [float_file, *([sensitivity_file] if sensitivity_file.is_file() else [])]
        chain.run("mixed", stages.key(stages.digests(read), _settings(mc), source),
                   lambda: [run / f"{stem}{ext}" for _, _, stem in names for ext in (".tflite", ".recipe.json", ".json")],
                   lambda: convert.convert(mc),
                   f"mixed precision within {', '.join(f'{b:g}' for b in cfg.mixed_budgets)} points "
                   f"({', '.join(cfg.mixed_objectives)})",
                   lambda ms: ", ".join(f"{m['file']} {m['size_bytes'] / 1024:,.1f} KB" for m in ms))

    flatbuffers = [*targets, *([run / f"{stem}.tflite" for _, _, stem in names] if cfg.mixed_budgets else [])]
    if cfg.micro:
        uc = micro.MicroConfig(dataset=dataset, model=model, modes=tuple(p.stem for p in flatbuffers),
                               max_examples=cfg.micro_examples or tc.max_eval_examples, artifacts=cfg.artifacts,
                               data_root=cfg.data_root, cache_dir=cfg.cache_dir)
        chain.run("micro", stages.key(stages.digests(flatbuffers), _settings(uc), source), lambda: [run / micro.MICRO_JSON],
                   lambda: micro.micro(uc, report_unsupported=True),
                   f"{len(flatbuffers)} flatbuffers under TFLite Micro", micro.headline)
    if cfg.generalize:
        others = generalize.compatible(dataset, cfg.cross_datasets)
        gc = generalize.GeneralizeConfig(dataset=dataset, model=model, modes=tuple(p.stem for p in flatbuffers),
                                         examples=cfg.shift_examples, cross_datasets=tuple(others),
                                         max_eval_examples=tc.max_eval_examples, artifacts=cfg.artifacts,
                                         data_root=cfg.data_root, cache_dir=cfg.cache_dir)
        cross_sources = {o: data.source_key(o, cfg.data_root, cfg.cache_dir) for o in others}
        chain.run("generalize", stages.key(stages.digests(flatbuffers), _settings(gc), source, cross_sources),
                   lambda: [run / generalize.GENERALIZE_JSON, run / generalize.GENERALIZE_NPZ,
                            *(evaluate.result_stem(p, p.stem, eval_dataset=o).with_suffix(ext)
                              for o in others for p in flatbuffers for ext in (".json", ".npy"))],
                   lambda: generalize.generalize(gc),
                   f"{len(flatbuffers)} flatbuffers on shifted test images ({cfg.shift_examples or 'all'} per set)"
                   + (f" and on {', '.join(others)}" if others else ""), generalize.headline)
    for mode in cfg.export_modes:
        if not (run / f"{mode}.tflite").is_file():
            raise TfqError(f"--export_modes={mode}: no {run / f'{mode}.tflite'} (the stages above did not make it)")
        for fmt in export.FORMATS:
            xc = export.ExportConfig(dataset=dataset, model=model, mode=mode, format=fmt, artifacts=cfg.artifacts)
            folder = run / "export" / f"{mode}_{fmt}"
            chain.run(f"export {mode} {fmt}", stages.key(stages.digests([run / f"{mode}.tflite"]), _settings(xc), environment),
                       lambda folder=folder: [folder / "export.json"], lambda xc=xc: export.export(xc),
                       f"{mode}.tflite for {'a TFLite Micro app (C)' if fmt == 'c' else 'an Android app'}",
                       lambda m: f"{m['folder']}: {', '.join(m['files'])}")
    return {"ran": chain.ran, "skipped": chain.skipped, "produced": chain.produced}


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
    bad = [o for o in cfg.mixed_objectives if o not in mixed.OBJECTIVES]
    if bad or any(not 0 <= b <= 100 for b in cfg.mixed_budgets):
        raise TfqError(f"--mixed_budgets={','.join(map(str, cfg.mixed_budgets))} --mixed_objectives="
                       f"{','.join(cfg.mixed_objectives)}: budgets are points from 0 to 100, objectives "
                       f"{', '.join(mixed.OBJECTIVES)}")
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


def _recorded_seconds(run: Path) -> float:
    state = run / stages.STATE_FILE
    return timing.chain_seconds(artifacts.read_json(state)) if state.is_file() else 0.0


def _check_collected(label: str, produced: dict[str, str]) -> None:
    """The files a chain's worker made must be here, as made: the artifacts folder is shared."""
    for path, digest in produced.items():
        if not Path(path).is_file() or artifacts.sha256(path) != digest:
            raise TfqError(f"[{label}] a worker wrote {path}, but the driver does not see it there: every node "
                           "must mount the artifacts folder at the same path")


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
            jobs = dict(sorted(jobs.items(), key=lambda kv: -_recorded_seconds(Path(cfg.artifacts) / kv[0])))
        outcomes = ex.chains(run_pair, jobs)
    failed = [o for o in outcomes.values() if isinstance(o, executors.Failure)]
    for f in failed:  # every chain has returned: nothing else writes there now
        artifacts.remove_stale_temps(Path(cfg.artifacts) / f.label)
    for label, outcome in outcomes.items():
        if ex.name != "local" and not isinstance(outcome, executors.Failure):  # a worker may run elsewhere
            _check_collected(label, outcome["produced"])
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
    flags.DEFINE_enum("preset", "first_look", list(PRESETS), "The defaults for every flag not given: first_look "
                      "(every stage on the MNIST CNN in minutes, in artifacts/first_look) or full (the study's).")
    flags.DEFINE_list("datasets", ["mnist"], f"Datasets: {', '.join(data.DATASETS)}.")
    flags.DEFINE_list("models", ["cnn"], f"Models: {', '.join(models.MODELS)}.")
    flags.DEFINE_string("artifacts", "artifacts", "Root of the run folders and the report.")
    flags.DEFINE_string("flags_dir", "flags", "Folder of the tuned <dataset>_<model>.cfg training flagfiles.")
    flags.DEFINE_boolean("force", False, "Redo every stage, current or not.")
    flags.DEFINE_integer("epochs", 0, "Override every flagfile's training epochs (0: keep them).")
    cli.define_slice_flags()
    flags.DEFINE_integer("qat_epochs", 1, "QAT fine-tuning epochs (the float control gets the same).")
    flags.DEFINE_float("qat_learning_rate", qat.QatConfig.learning_rate, "QAT fine-tuning learning rate.")
    flags.DEFINE_list("qat_low_bit", list(qat.LOW_BIT), "Low-bit QAT schemes fine-tuned beside int8 (empty: none).")
    flags.DEFINE_integer("qat_low_bit_epochs", qat.QatConfig.low_bit_epochs, "Low-bit QAT epochs (0: --qat_epochs).")
    flags.DEFINE_float("qat_low_bit_learning_rate", qat.QatConfig.low_bit_learning_rate,
                       "Low-bit QAT learning rate (0: --qat_learning_rate).")
    flags.DEFINE_integer("num_calibration", modes.DEFAULT_CALIBRATION, "Calibration images for int8/int16x8.")
    flags.DEFINE_integer("latency_runs", 200, "Timed batch-1 invokes per model.")
    flags.DEFINE_integer("threads", 1, "Interpreter threads for evaluation.")
    flags.DEFINE_boolean("sweep", True, "Run the simulated precision sweep after evaluate.")
    flags.DEFINE_integer("sweep_grid_examples", sweep.SweepConfig.grid_examples,
                         "Test images per sweep grid point (0: all).")
    flags.DEFINE_integer("sweep_calibration_draws", sweep.SweepConfig.calibration_draws,
                         "Calibration draws per simulated activation range (spread).")
    flags.DEFINE_boolean("sensitivity", True, "Measure per-layer sensitivity (tfq.sensitivity).")
    flags.DEFINE_list("mixed_budgets", [], "Validation-accuracy budgets (points) for mixed-precision files "
                      "(tfq.convert --mode=mixed); empty: none.")
    flags.DEFINE_list("mixed_objectives", ["size"], f"Mixed-precision objectives: {', '.join(mixed.OBJECTIVES)}.")
    flags.DEFINE_boolean("micro", True, "Run every flatbuffer under TFLite Micro (tfq.micro): arena, accuracy, "
                         "agreement with LiteRT.")
    flags.DEFINE_integer("micro_examples", 0, "Test images per file under TFLite Micro (0: --max_eval_examples, else all).")
    flags.DEFINE_boolean("generalize", True, "Score every flatbuffer on shifted test sets and --cross_datasets "
                         "(tfq.generalize).")
    flags.DEFINE_integer("shift_examples", generalize.GeneralizeConfig.examples,
                         "Test images per shifted set, a seeded subset (0: all).")
    flags.DEFINE_list("cross_datasets", [], "Other datasets to score each run on where the classes match, e.g. "
                      "usps,usps_resized,emnist_digits (MNIST runs); empty: none.")
    flags.DEFINE_list("export_modes", [], "Files (e.g. int8,qat_int8) to export as C arrays and Android bundles "
                      "(tfq.export); empty: none.")
    flags.DEFINE_enum("executor", "local", list(executors.EXECUTORS), "Where the chains (one per dataset x model) "
                      "and the sweep's lines run: here one after another, or as Ray tasks (pip install -e .[ray]).")
    flags.DEFINE_string("ray_address", None, "--executor=ray: HOST:PORT of a running cluster (`ray start --head`); "
                        "default: a local Ray instance for this run.")
    flags.DEFINE_string("data_root", None, "Raw dataset files (default: $TFQ_DATA_ROOT).")
    flags.DEFINE_string("cache_dir", None, "tfds build folder (default: $TFQ_CACHE_DIR or ~/.cache/tfq).")


def main(argv):
    del argv
    given = {name for name in dataclasses.asdict(PipelineConfig()) if name in FLAGS and FLAGS[name].present}
    pipeline(with_preset(cli.config_from_flags(PipelineConfig), given))


if __name__ == "__main__":
    _define_flags()
    cli.run(main)
