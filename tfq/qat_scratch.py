"""Quantization from the first step: `python -m tfq.qat_scratch --dataset=mnist --model=mlp --scheme=int8`.

The third timing the brief names, beside PTQ (after training) and QAT fine-tuning (`tfq.qat`):
the freshly built model is wrapped by tfmot (`quantize_model` for int8, the n-bit scheme for
w4a8/w4a4) before its first step, then trained exactly as the run folder's float model was (the
configuration its `train.json` records: epochs, schedule, batches, seed). It costs a full training run,
so it is not in the default study; its result (`qat_scratch_<scheme>.json`, and
`qat_scratch_int8.tflite`) is compared on the same test images with the float model of the run
folder, its post-training quantization and the fine-tuned QAT.
"""

from __future__ import annotations

import dataclasses
import time

from absl import flags

from tfq import convert, data, evaluate, models, qat
from tfq.core import artifacts, cli, stats
from tfq.core.artifacts import TfqError
from tfq.core.backend import fresh_session, keras, tfmot, versions
from tfq.models import imported
from tfq.models.fitting import compile_for_training, fit_epochs, schedule
from tfq.quant import modes
from tfq.runtimes import flatbuffer, harness
from tfq.train import TrainConfig

SCHEMES = {"int8": (8, 8), **qat.LOW_BIT}


@dataclasses.dataclass
class ScratchConfig(cli.Run):
    scheme: str = cli.setting("int8", "int8 (tfmot's default scheme) or an n-bit scheme.", choices=list(SCHEMES))


def _quantized(model: keras.Model, scheme: str) -> keras.Model:
    if scheme == "int8":
        return tfmot().quantization.keras.quantize_model(model)
    return qat._n_bit_model(model, *SCHEMES[scheme])  # noqa: SLF001 - the same n-bit wrapping as fine-tuned QAT


def from_scratch(cfg: ScratchConfig) -> dict:
    """Train a tfmot-wrapped fresh model with the float run's settings; returns the result written."""
    if cfg.scheme not in SCHEMES:
        raise TfqError(f"--scheme={cfg.scheme}: choose one of {', '.join(SCHEMES)}")
    data.spec_of(cfg)
    if cfg.model_file or imported.is_imported(artifacts.run_dir(cfg.artifacts, cfg.dataset, cfg.model)):
        raise TfqError(
            f"QAT from scratch retrains one of tfq's own models ({', '.join(models.MODELS)}) with its training "
            f"settings; {cfg.model} is a model of your own (fine-tune it with python -m tfq.qat instead)"
        )
    run = artifacts.check_writable(artifacts.run_dir(cfg.artifacts, cfg.dataset, cfg.model))
    float_model = models.load_trained(run)  # the comparison; fail before training if it is missing
    made = artifacts.read_json(run / artifacts.TRAIN_JSON)
    if made.get("batchnorm_reestimated"):
        raise TfqError(
            f"{run / artifacts.TRAIN_JSON}: the float run was too short for its BatchNorm statistics "
            "(they were re-estimated after it); train it with its flagfile first"
        )
    saved = {k: tuple(v) if isinstance(v, list) else v for k, v in made["config"].items()}
    tc = dataclasses.replace(
        TrainConfig(**saved), artifacts=cfg.artifacts, data_root=cfg.data_root, cache_dir=cfg.cache_dir
    )
    tc.validate()
    spec = data.spec_of(cfg)
    fresh_session(tc.seed)
    splits = data.load_of(
        cfg,
        max_train=tc.max_train_examples or None,
        max_eval=tc.max_eval_examples or None,
    )
    steps = -(-int(splits.train.cardinality()) // tc.batch_size)
    model = _quantized(models.build(cfg.model, spec.shape, spec.num_classes, **tc.model_kwargs()), cfg.scheme)
    compile_for_training(model, tc, steps)
    started = time.time()
    history = fit_epochs(
        model,
        splits.train.cache(),
        spec,
        val_ds=data.batches(splits.val, tc.batch_size, tc.input_range),
        **schedule(tc),
    )
    fit_s = time.time() - started

    test_x, test_y = data.to_numpy(splits.test)
    scaled = data.scale(test_x, tc.input_range).numpy()
    correct = {
        "float32": models.predict_classes(float_model, scaled) == test_y,
        "qat_from_scratch_keras": models.predict_classes(model, scaled) == test_y,
    }
    result = {
        "scheme": cfg.scheme,
        "weight_bits": SCHEMES[cfg.scheme][0],
        "activation_bits": SCHEMES[cfg.scheme][1],
        "dataset": cfg.dataset,
        "model": cfg.model,
        "train_config": dataclasses.asdict(tc),
        "fit_time_s": round(fit_s, 1),
        "history": history,
        "test_examples": int(len(test_y)),
    }
    blob = None
    if cfg.scheme == "int8":
        blob, _ = convert.convert_model(model, modes.QAT_INT8)
        modes.verify(modes.QAT_INT8, flatbuffer.read(blob), "qat_scratch_int8.tflite")
        correct["qat_from_scratch_int8_file"] = (
            harness.Classifier(blob, input_range=tc.input_range).predict(test_x).argmax(1) == test_y
        )
        result["size_bytes"] = len(blob)
    # the other timings on the same images, where their files are current
    for name, path in (
        ("ptq_int8_file", run / "int8.tflite"),
        ("finetuned_qat_int8_file", run / "qat_int8.tflite"),
        ("ptq_a8w4_file", run / "aeq_a8w4.tflite"),
    ):
        saved_pred = evaluate.saved_predictions(path, len(test_y), splits.source.to_json()) if path.is_file() else None
        if saved_pred is not None:
            correct[name] = saved_pred == test_y
    result["accuracy"] = {k: float(v.mean()) for k, v in correct.items()}
    result["vs_float32"] = {k: stats.paired(correct["float32"], v) for k, v in correct.items() if k != "float32"}
    result.update(
        source_model={"path": str(run / artifacts.MODEL_FILE), "sha256": artifacts.sha256(run / artifacts.MODEL_FILE)},
        data_source=splits.source.to_json(),
        versions=versions(),
    )
    stem = run / f"qat_scratch_{cfg.scheme}"
    paths = [stem.with_suffix(".json"), *([stem.with_suffix(".tflite")] if blob else [])]
    with artifacts.atomic_paths(*paths) as tmps:
        artifacts.write_json(tmps[0], result)
        if blob:
            tmps[1].write_bytes(blob)
    return result


FLAGS = flags.FLAGS


def _define_flags() -> None:
    cli.define_flags(ScratchConfig)


def main(argv):
    del argv
    r = from_scratch(cli.config_from_flags(ScratchConfig))
    print(" ".join(f"{k} {100 * v:.2f}%" for k, v in r["accuracy"].items()) + f" (fit {r['fit_time_s']:.0f} s)")


if __name__ == "__main__":
    cli.run(main, _define_flags)
