"""The table of a run's stages: each row's config from the run's settings, the files its key reads, the
files it writes, its stage's plain function, and its lines."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

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
    sensitivity,
    sweep,
    train,
)
from tfq.core import artifacts, stages
from tfq.core.artifacts import TfqError
from tfq.models import imported
from tfq.pipeline.config import PipelineConfig
from tfq.quant import modes
from tfq.scale import executors


def adoptable(made: dict, model_file: Path, tc: train.TrainConfig, source: dict) -> bool:
    """Whether a model that `python -m tfq.train` made (its train.json `made`) is what this run
    would train: the same settings, data, library versions and tfq code, and the file unchanged."""
    return (
        made.get("fingerprint") == tc.fingerprint()
        and model_file.is_file()
        and made.get("model_sha256") == artifacts.sha256(model_file)
        and made.get("data_source_key") == source["data"]
        and made.get("versions") == source["versions"]
        and made.get("code") == source["code"]
    )


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
        """The run's shared settings, which every stage's config takes: after the train stage, the
        pixel range its model takes, as recorded (an imported model's is in the keys downstream)."""
        return {
            "dataset": self.dataset,
            "model": self.model,
            "artifacts": self.cfg.artifacts,
            "data_root": self.cfg.data_root,
            "cache_dir": self.cfg.cache_dir,
            "input_range": models.input_range(self.run),
        }

    def file(self, name: str) -> Path:
        return self.run / f"{name}.tflite"

    @property
    def from_tflite(self) -> bool:
        """The run starts from a user's float .tflite (--float_tflite): there is no Keras model."""
        return bool(self.tc.float_tflite)

    def source_file(self) -> Path:
        """The file the run's other files are made from: the Keras model, or the float .tflite."""
        return self.run / (imported.FLOAT_TFLITE if self.from_tflite else artifacts.MODEL_FILE)

    def converted(self) -> list[str]:
        """The modes the convert stage makes: all of them; from a float .tflite, ai-edge-quantizer's (they
        start from float32.tflite, which the import wrote; the TFLite converter's need the Keras model)."""
        if self.from_tflite:
            return [m for m, mode in modes.MODES.items() if mode.family == "aeq"]
        return list(modes.MODES)

    def targets(self) -> list[Path]:
        """float32, the converted modes and the QAT file (unless QAT was not possible): what evaluate measures."""
        state = artifacts.read_json(self.run / stages.STATE_FILE, default={})
        qat_file = [] if state.get("qat", {}).get("not_possible") else [self.file(modes.QAT_INT8.name)]
        return [*(self.file(m) for m in dict.fromkeys(["float32", *self.converted()])), *qat_file]

    def mixed_stems(self) -> list[str]:
        return [stem for _, _, stem in mixed.planned(_mixed_config(self))] if self.cfg.mixed_budgets else []

    def flatbuffers(self) -> list[Path]:
        """Every file of the run: what TFLite Micro and the shifted sets measure."""
        return [*self.targets(), *(self.file(s) for s in self.mixed_stems())]


def _qat_config(chain: Chain) -> qat.QatConfig:
    cfg, tc = chain.cfg, chain.tc
    return qat.QatConfig(
        **chain.place(),
        epochs=cfg.qat_epochs,
        batch_size=tc.batch_size,
        learning_rate=cfg.qat_learning_rate,
        num_calibration=cfg.num_calibration,
        max_train_examples=tc.max_train_examples,
        max_eval_examples=tc.max_eval_examples,
        low_bit=cfg.qat_low_bit,
        low_bit_epochs=cfg.qat_low_bit_epochs,
        low_bit_learning_rate=cfg.qat_low_bit_learning_rate,
    )


def _mixed_config(chain: Chain) -> mixed.MixedConfig:
    cfg = chain.cfg
    return mixed.MixedConfig(
        **chain.place(),
        num_calibration=cfg.num_calibration,
        max_accuracy_drop=cfg.mixed_budgets,
        objective=cfg.mixed_objectives,
        output="",
        max_eval_examples=chain.tc.max_eval_examples,
    )


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
    return [chain.source_file()]


def _sweep_checked(chain: Chain, c) -> list[Path]:
    return [*_trained(chain, c), *(p for p in map(chain.file, sweep.CHECKS) if p.is_file())]


def _cross(chain: Chain) -> list[str]:
    return generalize.compatible(chain.dataset, chain.cfg.cross_datasets)


# The stages of one run, in order. Each reads only files the stages above it wrote.
STAGES = (
    stages.Stage(
        "train",
        lambda chain: chain.tc,
        reads=lambda chain, c: [],
        writes=lambda chain, c: [
            chain.source_file(),
            *([chain.run / "float32.json"] if chain.from_tflite else []),
            chain.run / artifacts.TRAIN_JSON,
        ],
        function=lambda chain, c: (
            executors.train_on_ray(train.train, c, c.ray_workers, c.ray_address or chain.cfg.ray_address)
            if c.strategy == "ray"
            else train.train(c)
        ),
        what=lambda chain, c: (
            f"importing {c.model_file} in place of training"
            if c.model_file
            else f"training the float {c.model} ({_count(c.epochs, 'epoch')}"
            + (f" on {c.ray_workers} Ray Train workers)" if c.strategy == "ray" else ")")
        ),
        headline=lambda r: (
            f"test accuracy {_pct(r['test_accuracy'])}"
            + (f" with pixels scaled to {r['input_range'][0]:g}..{r['input_range'][1]:g}" if "imported" in r else "")
        ),
    ),
    stages.Stage(
        "convert",
        lambda chain: convert.ConvertConfig(
            **chain.place(),
            modes=("all",) if not chain.from_tflite else tuple(chain.converted()),
            num_calibration=chain.cfg.num_calibration,
        ),
        reads=_trained,
        writes=lambda chain, c: [
            p.with_suffix(ext) for p in map(chain.file, chain.converted()) for ext in (".tflite", ".json")
        ],
        function=lambda chain, c: convert.convert(c),
        what=lambda chain, c: f"converting to {', '.join(chain.converted())}",
        headline=_sizes,
    ),
    stages.Stage(
        "qat",
        _qat_config,
        reads=lambda chain, c: [*_trained(chain, c), chain.file("float32")],
        writes=lambda chain, c: [
            chain.file(modes.QAT_INT8.name),
            chain.run / f"{modes.QAT_INT8.name}.json",
            chain.run / qat.QAT_MODEL_FILE,
            *([chain.run / qat.LOW_BIT_JSON] if c.low_bit else []),
        ],
        function=lambda chain, c: qat.qat(c),
        what=lambda chain, c: (
            f"quantization-aware fine-tuning and equally fine-tuned float controls: int8 "
            f"({_count(c.epochs, 'epoch')})"
            + (f", {', '.join(c.low_bit)} ({_count(c.low_bit_epochs or c.epochs, 'epoch')})" if c.low_bit else "")
        ),
        headline=lambda r: (
            f"QAT int8 {_pct(r['accuracy']['qat_int8'])}, PTQ int8 of the control "
            f"{_pct(r['accuracy']['ptq_int8_of_finetuned'])}"
        ),
    ),
    stages.Stage(
        "evaluate",
        lambda chain: evaluate.EvalConfig(
            **chain.place(),
            modes=tuple(p.stem for p in chain.targets()),
            threads=chain.cfg.threads,
            latency_runs=chain.cfg.latency_runs,
            max_eval_examples=chain.tc.max_eval_examples,
        ),
        reads=lambda chain, c: chain.targets(),
        writes=lambda chain, c: [
            chain.run / f"eval_{p.stem}{ext}" for p in chain.targets() for ext in (".json", ".npy")
        ],
        function=lambda chain, c: evaluate.evaluate(c),
        what=lambda chain, c: f"measuring {len(chain.targets())} flatbuffers in LiteRT",
        headline=lambda rs: ", ".join(f"{r['name']} {_pct(r['accuracy'])}" for r in rs),
    ),
    stages.Stage(
        "sweep",
        lambda chain: sweep.SweepConfig(
            **chain.place(),
            grid_examples=chain.cfg.sweep_grid_examples,
            calibration_draws=chain.cfg.sweep_calibration_draws,
            num_calibration=chain.cfg.num_calibration,
            max_eval_examples=chain.tc.max_eval_examples,
        ),
        reads=_sweep_checked,
        writes=lambda chain, c: [chain.run / "sweep.json", chain.run / "sweep.csv"],
        function=lambda chain, c: sweep.sweep(c, map_lines=chain.mapper),
        what=lambda chain, c: (
            f"simulated precisions, {len(sweep.LINES)} schemes x {len(c.bits)} widths, checked "
            f"against {len(_sweep_checked(chain, c)) - 1} real files"
        ),
        headline=sweep.headline,
        enabled=lambda cfg: cfg.sweep,
    ),
    stages.Stage(
        "sensitivity",
        lambda chain: sensitivity.SensitivityConfig(
            **chain.place(), num_calibration=chain.cfg.num_calibration, max_eval_examples=chain.tc.max_eval_examples
        ),
        reads=lambda chain, c: [chain.file("float32")],
        writes=lambda chain, c: [chain.run / sensitivity.SENSITIVITY_JSON],
        function=lambda chain, c: sensitivity.sensitivity(c),
        what=lambda chain, c: f"per-layer sensitivity on the validation split ({', '.join(c.schemes)})",
        headline=sensitivity.headline,
        enabled=lambda cfg: cfg.sensitivity,
    ),
    stages.Stage(
        "mixed",
        _mixed_config,
        reads=lambda chain, c: [
            chain.file("float32"),
            *(p for p in [chain.run / sensitivity.SENSITIVITY_JSON] if p.is_file()),
        ],
        writes=lambda chain, c: [
            chain.run / f"{stem}{ext}" for stem in chain.mixed_stems() for ext in (".tflite", ".recipe.json", ".json")
        ],
        function=lambda chain, c: mixed.mixed(c),
        what=lambda chain, c: (
            f"mixed precision within {', '.join(f'{b:g}' for b in c.max_accuracy_drop)} points "
            f"({', '.join(c.objective)})"
        ),
        headline=_sizes,
        enabled=lambda cfg: bool(cfg.mixed_budgets),
        before=_drop_other_budgets,
    ),
    stages.Stage(
        "micro",
        lambda chain: micro.MicroConfig(
            **chain.place(),
            modes=tuple(p.stem for p in chain.flatbuffers()),
            max_examples=chain.cfg.micro_examples or chain.tc.max_eval_examples,
        ),
        reads=lambda chain, c: chain.flatbuffers(),
        writes=lambda chain, c: [chain.run / micro.MICRO_JSON],
        function=lambda chain, c: micro.micro(c, report_unsupported=True),
        what=lambda chain, c: f"{len(c.modes)} flatbuffers under TFLite Micro",
        headline=micro.headline,
        enabled=lambda cfg: cfg.micro,
    ),
    stages.Stage(
        "generalize",
        lambda chain: generalize.GeneralizeConfig(
            **chain.place(),
            modes=tuple(p.stem for p in chain.flatbuffers()),
            examples=chain.cfg.shift_examples,
            cross_datasets=tuple(_cross(chain)),
            max_eval_examples=chain.tc.max_eval_examples,
        ),
        reads=lambda chain, c: chain.flatbuffers(),
        writes=lambda chain, c: [
            chain.run / generalize.GENERALIZE_JSON,
            chain.run / generalize.GENERALIZE_NPZ,
            *(
                evaluate.result_stem(p, p.stem, eval_dataset=o).with_suffix(ext)
                for o in c.cross_datasets
                for p in chain.flatbuffers()
                for ext in (".json", ".npy")
            ),
        ],
        function=lambda chain, c: generalize.generalize(c),
        what=lambda chain, c: (
            f"{len(c.modes)} flatbuffers on shifted test images ({c.examples or 'all'} per set)"
            + (f" and on {', '.join(c.cross_datasets)}" if c.cross_datasets else "")
        ),
        headline=generalize.headline,
        enabled=lambda cfg: cfg.generalize,
        key_also=lambda chain, c: {
            o: data.source_key(o, chain.cfg.data_root, chain.cfg.cache_dir) for o in c.cross_datasets
        },
    ),
)


def _export_stage(mode: str, fmt: str) -> stages.Stage:
    """Shipping one file in one format: its key holds the file and the library versions, not the data."""

    def unmade(chain: Chain) -> bool:  # a TFLite converter mode on a run from a float .tflite: no Keras model
        return chain.from_tflite and mode not in ("float32", *chain.converted())

    def check(chain: Chain, c) -> None:
        if not unmade(chain) and not chain.file(mode).is_file():
            raise TfqError(f"--export_modes={mode}: no {chain.file(mode)} (the stages above did not make it)")

    def run(chain: Chain, c):
        if unmade(chain):
            models.need_keras(chain.run)  # not possible, in the line QAT and the sweep give on such a run
        return export.export(c)

    return stages.Stage(
        f"export {mode} {fmt}",
        lambda chain: export.ExportConfig(**chain.place(), mode=mode, format=fmt),
        reads=lambda chain, c: [chain.source_file() if unmade(chain) else chain.file(mode)],
        writes=lambda chain, c: (
            [] if unmade(chain) else [chain.run / "export" / f"{mode}_{fmt}" / name for name in export.files(mode, fmt)]
        ),
        function=run,
        what=lambda chain, c: f"{mode}.tflite for {'a TFLite Micro app (C)' if fmt == 'c' else 'an Android app'}",
        headline=lambda m: f"{m['folder']}: {', '.join(m['files'])}",
        before=check,
    )


def stages_for(cfg: PipelineConfig) -> list[stages.Stage]:
    """The rows this run takes: the table's enabled stages, then one export per file and format."""
    return [
        *(s for s in STAGES if s.enabled(cfg)),
        *(_export_stage(m, f) for m in cfg.export_modes for f in export.FORMATS),
    ]


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _pct(v: float) -> str:
    return f"{100 * v:.2f}%"
