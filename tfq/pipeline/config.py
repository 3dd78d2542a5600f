"""The pipeline's settings: one PipelineConfig, and the presets the command line starts from."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from tfq import (
    data,
    generalize,
    models,
    qat,
    sweep,
    train,
)
from tfq.core import artifacts, cli
from tfq.core.artifacts import TfqError
from tfq.quant import mixed_search, modes
from tfq.scale import executors

# The defaults of `python -m tfq.pipeline` for every flag the user does not give. With no flags at all it
# is a first look: every stage on the MNIST CNN in minutes, on fewer epochs, images and timings, in its own
# folder (the committed study's stays untouched); `--preset=full` keeps every setting as the flagfiles and
# PipelineConfig give it, as the study (flags/study.cfg) does.
PRESETS = {
    "first_look": {
        "artifacts": "artifacts/first_look",
        "epochs": 2,
        "max_train_examples": 6_000,
        "max_eval_examples": 2_000,
        "qat_low_bit": ("w4a8",),
        "qat_low_bit_epochs": 1,
        "latency_runs": 100,
        "sweep_grid_examples": 300,
        "mixed_budgets": (1.0,),
        "micro_examples": 100,
        "shift_examples": 50,
    },
    "full": {},
}


@dataclasses.dataclass
class PipelineConfig:
    datasets: tuple[str, ...] = cli.setting(("mnist",), f"Datasets: {', '.join(data.DATASETS)}.")
    models: tuple[str, ...] = cli.setting(("cnn",), f"Models: {', '.join(models.MODELS)}.")
    runs: tuple[str, ...] = cli.setting(
        (), "Runs as <dataset>_<model> (e.g. cifar10_resnet8), in place of every --datasets x --models."
    )
    artifacts: str = cli.setting("artifacts", "Root of the run folders and the report.")
    flags_dir: str = cli.setting("flags", "Folder of the tuned <dataset>_<model>.cfg training flagfiles.")
    force: bool = cli.setting(False, "Redo every stage, current or not.")
    epochs: int = cli.setting(0, "Override every flagfile's training epochs (0: keep them).")  # 0: each flagfile's own
    max_train_examples: int = cli.setting(0, "Use only this many training examples (0: all).")
    max_eval_examples: int = cli.setting(0, "Use only this many validation/test examples (0: all).")
    qat_epochs: int = cli.setting(1, "QAT fine-tuning epochs (the float control gets the same).")
    qat_learning_rate: float = cli.setting(qat.QatConfig.learning_rate, "QAT fine-tuning learning rate.")
    qat_low_bit: tuple[str, ...] = cli.setting(
        tuple(qat.LOW_BIT), "Low-bit QAT schemes fine-tuned beside int8 (empty: none)."
    )
    qat_low_bit_epochs: int = cli.setting(qat.QatConfig.low_bit_epochs, "Low-bit QAT epochs (0: --qat_epochs).")
    qat_low_bit_learning_rate: float = cli.setting(
        qat.QatConfig.low_bit_learning_rate, "Low-bit QAT learning rate (0: --qat_learning_rate)."
    )
    num_calibration: int = cli.setting(modes.DEFAULT_CALIBRATION, "Calibration images for int8/int16x8.")
    latency_runs: int = cli.setting(200, "Timed batch-1 invokes per model.")
    threads: int = cli.setting(1, "Interpreter threads for evaluation.")
    sweep_grid_examples: int = cli.setting(
        sweep.SweepConfig.grid_examples, "Test images per sweep grid point (0: all)."
    )
    sweep_calibration_draws: int = cli.setting(
        sweep.SweepConfig.calibration_draws, "Calibration draws per simulated activation range (spread)."
    )
    # after the two above: in this class body the name then stops meaning the module
    sweep: bool = cli.setting(True, "Run the simulated precision sweep after evaluate.")
    mixed_budgets: tuple[float, ...] = cli.setting(
        (), "Validation-accuracy budgets (points) for mixed-precision files (tfq.mixed); empty: none."
    )
    mixed_objectives: tuple[str, ...] = cli.setting(
        ("size",), f"Mixed-precision objectives: {', '.join(mixed_search.OBJECTIVES)}."
    )
    # last, for the same reason as `sweep`
    sensitivity: bool = cli.setting(True, "Measure per-layer sensitivity (tfq.sensitivity).")
    micro_examples: int = cli.setting(0, "Test images per file under TFLite Micro (0: --max_eval_examples, else all).")
    # after micro_examples, for the same reason as `sweep`
    micro: bool = cli.setting(
        True, "Run every flatbuffer under TFLite Micro (tfq.micro): arena, accuracy, agreement with LiteRT."
    )
    shift_examples: int = cli.setting(
        generalize.GeneralizeConfig.examples, "Test images per shifted set, a seeded subset (0: all)."
    )
    cross_datasets: tuple[str, ...] = cli.setting(
        (),
        "Other datasets to score each run on where the classes match, e.g. "
        "usps,usps_resized,emnist_digits (MNIST runs); empty: none.",
    )
    # after the two above, for the same reason as `sweep`
    generalize: bool = cli.setting(
        True, "Score every flatbuffer on shifted test sets and --cross_datasets (tfq.generalize)."
    )
    export_modes: tuple[str, ...] = cli.setting(
        (), "Files (e.g. int8,qat_int8) to export as C arrays and Android bundles (tfq.export); empty: none."
    )
    executor: str = cli.setting(
        "local",
        "Where the chains (one per dataset x model) "
        "and the sweep's lines run: here one after another, or as Ray tasks (pip install -e .[ray]).",
        choices=list(executors.EXECUTORS),
    )
    ray_address: str | None = cli.setting(
        None,
        "--executor=ray: HOST:PORT of a running cluster (`ray start --head`); "
        "default: a local Ray instance for this run.",
    )
    # a user's model: the same settings as every stage's (`cli.Run`)
    model_file: str | None = cli.same_setting(cli.Run, "model_file")
    float_tflite: str | None = cli.same_setting(cli.Run, "float_tflite")
    run_name: str | None = cli.same_setting(cli.Run, "run_name")
    input_range: tuple[float, ...] | None = cli.same_setting(cli.Run, "input_range")
    image_size: tuple[int, ...] | None = cli.same_setting(cli.Run, "image_size")
    data_root: str | None = cli.setting(None, "Raw dataset files (default: $TFQ_DATA_ROOT).")
    cache_dir: str | None = cli.setting(None, "tfds build folder (default: $TFQ_CACHE_DIR or ~/.cache/tfq).")
    # the defaults the command line started from (PRESETS); the report names a first look
    preset: str = cli.setting(
        "full",
        "The defaults for every flag not given: first_look "
        "(every stage on the MNIST CNN in minutes, in artifacts/first_look) or full (the study's).",
        choices=list(PRESETS),
    )


def pairs(cfg: PipelineConfig) -> list[tuple[str, str]]:
    """The (dataset, model) of every run: `--runs`, else every dataset x model."""
    if not cfg.runs:
        return [(d, m) for d in cfg.datasets for m in cfg.models]
    out = [data.split_run(r) for r in dict.fromkeys(cfg.runs)]
    for run, (d, m) in zip(dict.fromkeys(cfg.runs), out):
        if d not in data.DATASETS or m not in models.MODELS:
            raise TfqError(
                f"--runs={run}: not <dataset>_<model> with a dataset of {', '.join(data.DATASETS)} "
                f"and a model of {', '.join(models.MODELS)}"
            )
    return out


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
    return (
        f"**A {cfg.preset.replace('_', ' ')}** (`--preset={cfg.preset}`, the defaults of `python -m "
        f"tfq.pipeline` with no flags: {shown}): fewer epochs, images and timings than the study, so its "
        "numbers are not the study's; `--preset=full` runs every setting in full."
    )


def train_config(cfg: PipelineConfig, dataset: str, model: str) -> train.TrainConfig:
    """The tuned flagfile `flags/<dataset>_<model>.cfg` (`train.from_flagfile`), with the pipeline's overrides."""
    places = {"artifacts": cfg.artifacts, "data_root": cfg.data_root, "cache_dir": cfg.cache_dir}
    if cfg.model_file or cfg.float_tflite:  # imported, not trained: no flagfile
        user = {
            "model_file": cfg.model_file,
            "float_tflite": cfg.float_tflite,
            "run_name": cfg.run_name,
            "input_range": cfg.input_range,
            "image_size": cfg.image_size,
        }
        slices = {"max_train_examples": cfg.max_train_examples, "max_eval_examples": cfg.max_eval_examples}
        return train.TrainConfig(dataset=dataset, **user, **places, **slices)
    # an image folder's run may have a flagfile of its own: flags/<folder name>_<model>.cfg
    tc = train.from_flagfile(Path(cfg.flags_dir) / f"{artifacts.dataset_label(dataset)}_{model}.cfg", dataset, model)
    return dataclasses.replace(
        tc,
        **places,
        input_range=cfg.input_range or tc.input_range,
        image_size=cfg.image_size or tc.image_size,
        epochs=cfg.epochs or tc.epochs,
        max_train_examples=cfg.max_train_examples or tc.max_train_examples,
        max_eval_examples=cfg.max_eval_examples or tc.max_eval_examples,
    )
