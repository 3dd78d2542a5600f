"""Quantization-aware training: `python -m tfq.qat --dataset=mnist --model=cnn`.

Fine-tunes the trained float model with `tfmot.quantization.keras.quantize_model`, saves the QAT
model (`qat_model.keras`) and converts it to `qat_int8.tflite` with the int8 mode's input/output
contract (int8 in and out, integer ops only). QAT fine-tuning is extra training, so a fair
comparison needs a control: the float model fine-tuned for the same epochs at the same learning
rate, converted to int8 by post-training quantization. `qat_int8.json` records both, so the gain
of QAT over PTQ is measured against equally trained models.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time

import numpy as np
from absl import flags

from tfq import convert, data, models
from tfq.core import artifacts, cli, stats
from tfq.core.artifacts import NotPossible, TfqError
from tfq.core.backend import fresh_session, keras, tfmot, versions
from tfq.models.fitting import fit_epochs, schedule
from tfq.quant import modes
from tfq.quant.modes import MODES, QAT_INT8
from tfq.runtimes import flatbuffer, harness

QAT_MODEL_FILE = "qat_model.h5"  # tfmot wrappers do not round-trip the .keras format
LOW_BIT_JSON = "qat_lowbit.json"

# Low-bit QAT with tfmot's n-bit scheme (conv weights per channel, Dense weights per tensor, both
# symmetric; activations asymmetric): name -> (weight bits, activation bits).
LOW_BIT = {"w4a8": (4, 8), "w4a4": (4, 4)}
# How a w4a8 QAT model ships: ai-edge-quantizer's a8w4 with the QAT's own weight grids (Dense per
# tensor, conv per channel), applied to a float32 file of the QAT weights rounded to that grid.
SHIP_RECIPE = "ship_a8w4_qat.json"


@dataclasses.dataclass
class QatConfig(cli.Run):
    epochs: int = cli.setting(1, "QAT fine-tuning epochs (the float control gets the same).")
    batch_size: int = cli.setting(128, "Batch size.")
    # 1e-4 moved the CIFAR-10 float model itself by -0.35 points in one epoch
    learning_rate: float = cli.setting(1e-5, "Adam learning rate for QAT and the control.")
    num_calibration: int = cli.setting(modes.DEFAULT_CALIBRATION, "Calibration images for the PTQ control.")
    max_train_examples: int = cli.setting(0, "Use only this many training examples (0: all).")
    max_eval_examples: int = cli.setting(0, "Use only this many validation/test examples (0: all).")
    seed: int = cli.setting(0, "Random seed.")
    low_bit: tuple[str, ...] = cli.setting(
        (),
        f"Also fine-tune these n-bit QAT schemes ({', '.join(LOW_BIT)}) against an "
        "equally fine-tuned control; writes qat_lowbit.json.",
    )
    # benchmarks/low_bit_qat.sh on the CIFAR-10 CNN's validation split: 2 epochs at 1e-4 (docs/precision-study.md).
    # They differ from the int8 stage's, so low-bit QAT gets a control of its own (0: the int8 values).
    low_bit_epochs: int = cli.setting(2, "Low-bit QAT epochs (0: --epochs).")
    low_bit_learning_rate: float = cli.setting(1e-4, "Low-bit QAT learning rate (0: --learning_rate).")

    def validate(self) -> None:
        """Every flag, before the fine-tuning starts (not after it, when the control needs them)."""
        data.spec_of(self)
        models.check(self)
        cli.check_at_least(self, 1, "epochs", "batch_size", "num_calibration")
        cli.check_at_least(self, 0, "max_train_examples", "max_eval_examples")
        if not self.learning_rate > 0:
            raise TfqError(f"--learning_rate={self.learning_rate}: must be above 0")
        cli.check_at_least(self, 0, "low_bit_epochs", "low_bit_learning_rate")
        unknown = [s for s in self.low_bit if s not in LOW_BIT]
        if unknown:
            raise TfqError(f"--low_bit={','.join(unknown)}: choose from {', '.join(LOW_BIT)}")


def _fit(model: keras.Model, cfg: QatConfig, cached_train, spec, val_ds) -> dict:
    """One arm's fine-tuning: epoch e's batches are `data.training_epoch(seed, e)` for both arms."""
    keras.utils.set_random_seed(cfg.seed)
    model.compile(
        optimizer=keras.optimizers.Adam(cfg.learning_rate), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    return fit_epochs(model, cached_train, spec, val_ds=val_ds, **schedule(cfg))


def _tflite_pred(blob: bytes, x, input_range) -> np.ndarray:
    return harness.Classifier(blob, input_range=input_range).predict(x).argmax(1)


def _tflite_correct(blob: bytes, x, y, input_range) -> np.ndarray:
    return _tflite_pred(blob, x, input_range) == y


def qat(cfg: QatConfig) -> dict:
    """QAT fine-tune, the equally fine-tuned float control, both int8 flatbuffers; returns qat_int8.json."""
    cfg.validate()
    run = artifacts.check_writable(models.run_of(cfg))
    spec = data.spec_of(cfg)
    cfg = dataclasses.replace(cfg, input_range=models.input_range(run, cfg.input_range))  # the run's own, from here
    # whatever ran before in this process (a pipeline's train stage, or nothing): the stage then
    # gives the same files alone, in a pipeline, or after a skipped train
    fresh_session(cfg.seed)
    float_model = models.load_trained(run)
    splits = data.load_of(
        cfg,
        max_train=cfg.max_train_examples or None,
        max_eval=cfg.max_eval_examples or None,
    )
    val_ds = data.batches(splits.val, cfg.batch_size, cfg.input_range)
    cached_train = splits.train.cache()
    test_x, test_y = data.to_numpy(splits.test)

    started = time.time()
    keras.utils.set_random_seed(cfg.seed)  # the same layer seeds (dropout) in both arms' clones
    try:
        qat_model = tfmot().quantization.keras.quantize_model(float_model)
    except (ValueError, RuntimeError) as e:
        raise NotPossible(
            f"tfmot cannot quantize {run / artifacts.MODEL_FILE}: {str(e).splitlines()[0][:200]}"
        ) from None
    qat_history = _fit(qat_model, cfg, cached_train, spec, val_ds)
    qat_time = time.time() - started
    qat_blob, settings = convert.convert_model(qat_model, QAT_INT8)
    qat_fb = flatbuffer.read(qat_blob, label=f"{QAT_INT8.name}.tflite")
    # TFLITE_BUILTINS lets anything tfmot left unquantized fall back to float: fail now, before the
    # control's fit, rather than record it
    modes.verify(QAT_INT8, qat_fb, str(run / f"{QAT_INT8.name}.tflite"))

    keras.utils.set_random_seed(cfg.seed)  # the clone's dropout seeds, as for the QAT arm (and _fit resets again)
    control = keras.models.clone_model(float_model)
    control.set_weights(float_model.get_weights())
    started = time.time()
    control_history = _fit(control, cfg, cached_train, spec, val_ds)
    control_time = time.time() - started

    calibration = data.calibration_samples(splits, cfg.num_calibration, seed=cfg.seed, input_range=cfg.input_range)
    control_blob, _ = convert.convert_model(control, MODES["int8"], calibration=calibration)
    scaled = data.scale(test_x, cfg.input_range).numpy()
    correct = {
        # the float models are scored in Keras: the same float math as a float32 flatbuffer,
        # without converting one just to score it
        "float_before": models.predict_classes(float_model, scaled) == test_y,
        "float_finetuned": models.predict_classes(control, scaled) == test_y,
        "ptq_int8_of_finetuned": _tflite_correct(control_blob, test_x, test_y, cfg.input_range),
        "qat_int8": _tflite_correct(qat_blob, test_x, test_y, cfg.input_range),
    }
    result = {
        "mode": QAT_INT8.name,
        "file": f"{QAT_INT8.name}.tflite",
        "description": QAT_INT8.description,
        "size_bytes": len(qat_blob),
        "converter": settings,
        "qat": {
            "epochs": cfg.epochs,
            "learning_rate": cfg.learning_rate,
            "batch_size": cfg.batch_size,
            "train_examples": int(splits.train.cardinality()),
            "time_s": round(qat_time, 1),
            "history": qat_history,
        },
        "test_examples": len(test_y),
        "input_range": list(cfg.input_range),
        "accuracy": {name: float(c.mean()) for name, c in correct.items()},
        # paired on the same test images: McNemar's test and a 95% interval, in points
        "qat_vs_ptq": stats.paired(correct["ptq_int8_of_finetuned"], correct["qat_int8"]),
        "qat_vs_float_finetuned": stats.paired(correct["float_finetuned"], correct["qat_int8"]),
        "control": {
            "what": "float model fine-tuned with the same epochs, learning rate, batches (order and "
            "augmentation) and seeds, then int8 post-training quantized",
            "time_s": round(control_time, 1),
            "history": control_history,
        },
        "flatbuffer": qat_fb.summary(),
        "source_model": {
            "path": str(run / artifacts.MODEL_FILE),
            "sha256": artifacts.sha256(run / artifacts.MODEL_FILE),
        },
        "data_source": splits.source.to_json(),
        "versions": versions(),
    }
    acc = result["accuracy"]
    result["qat_gain_over_ptq"] = acc["qat_int8"] - acc["ptq_int8_of_finetuned"]
    result["qat_drop_vs_float"] = acc["float_finetuned"] - acc["qat_int8"]
    low_bit = None
    if cfg.low_bit:
        lcfg = dataclasses.replace(
            cfg, epochs=cfg.low_bit_epochs or cfg.epochs, learning_rate=cfg.low_bit_learning_rate or cfg.learning_rate
        )
        low_control, low_correct = control, correct["float_finetuned"]
        if (lcfg.epochs, lcfg.learning_rate) != (cfg.epochs, cfg.learning_rate):
            keras.utils.set_random_seed(cfg.seed)  # as for the int8 control
            low_control = keras.models.clone_model(float_model)
            low_control.set_weights(float_model.get_weights())
            started = time.time()
            low_history = _fit(low_control, lcfg, cached_train, spec, val_ds)
            low_control_s = round(time.time() - started, 1)
            low_correct = models.predict_classes(low_control, scaled) == test_y
        else:
            low_history, low_control_s = control_history, 0.0  # the int8 control serves
        float_file = run / "float32.tflite"  # the reference every file's delta is against (convert made it)
        low_bit = _low_bit(
            lcfg,
            float_model,
            low_control,
            low_correct,
            calibration,
            (cached_train, spec, val_ds),
            test_x,
            test_y,
            float_file.read_bytes() if float_file.is_file() else None,
        )
        low_bit.update(control_history=low_history, control_time_s=low_control_s)
        low_bit.update(
            source_model=result["source_model"], data_source=result["data_source"], versions=result["versions"]
        )

    if not low_bit:  # an older run's low-bit results would otherwise pass for this one's
        (run / LOW_BIT_JSON).unlink(missing_ok=True)
    outputs = [run / QAT_MODEL_FILE, run / result["file"], run / f"{QAT_INT8.name}.json"]
    with artifacts.atomic_paths(*outputs, *([run / LOW_BIT_JSON] if low_bit else [])) as tmps:
        qat_model.save(tmps[0], include_optimizer=False)
        tmps[1].write_bytes(qat_blob)
        artifacts.write_json(tmps[2], result)
        if low_bit:
            artifacts.write_json(tmps[3], low_bit)
    return result


def _n_bit_model(float_model: keras.Model, weight_bits: int, activation_bits: int) -> keras.Model:
    q = tfmot().quantization.keras
    scheme = q.experimental.default_n_bit.DefaultNBitQuantizeScheme(
        num_bits_weight=weight_bits, num_bits_activation=activation_bits
    )
    try:
        return q.quantize_apply(q.quantize_annotate_model(float_model), scheme)
    except (ValueError, RuntimeError) as e:
        raise NotPossible(
            f"tfmot cannot quantize the model at w{weight_bits}a{activation_bits}: {str(e).splitlines()[0][:200]}"
        ) from None


# the layers tfmot's n-bit scheme quantizes a kernel of, and its name (DepthwiseConv2D is no Conv2D)
_QUANTIZED_KERNELS = (
    (keras.layers.Conv2D, "kernel"),
    (keras.layers.DepthwiseConv2D, "depthwise_kernel"),
    (keras.layers.Dense, "kernel"),
)


def float_twin(qat_model: keras.Model, float_model: keras.Model, weight_bits: int) -> keras.Model:
    """The float architecture with the QAT model's weights, each kernel rounded with the range its
    quantizer holds (`quant_<layer>/kernel_min`/`kernel_max`, `depthwise_kernel_min`/`_max`: per
    output channel for Conv2D, per tensor for Dense and for DepthwiseConv2D, whose kernel's last
    axis is its depth multiplier; symmetric narrow range), i.e. the very weights the QAT model
    computes with."""
    from tfq.quant.simulate import fake_quant_kernel

    twin = keras.models.clone_model(float_model)
    # tfmot's wrappers keep the wrapped layer's variables under their own names ("conv1_1/kernel:0")
    # beside the quantizers' ("quant_conv1_1/kernel_min:0")
    trained = {v.name: v.numpy() for v in qat_model.weights}
    for layer in twin.layers:
        if not layer.weights:
            continue
        weights = [trained[f"{layer.name}/{v.name.split('/')[-1]}"] for v in layer.weights]
        name = next((n for cls, n in _QUANTIZED_KERNELS if isinstance(layer, cls)), None)
        if name:
            lo, hi = trained[f"quant_{layer.name}/{name}_min:0"], trained[f"quant_{layer.name}/{name}_max:0"]
            weights[0] = fake_quant_kernel(weights[0], lo, hi, weight_bits, narrow_range=True)
        layer.set_weights(weights)
    return twin


def _ship_a8w4(model: keras.Model, calibration) -> bytes:
    from tfq.quant import aeq

    float_blob, _ = convert.convert_model(model, MODES["float32"])
    return aeq.quantize(float_blob, aeq.load(aeq.RECIPES / SHIP_RECIPE), calibration, "QAT a8w4 shipping")


def _low_bit(
    cfg: QatConfig,
    float_model,
    control,
    control_correct,
    calibration,
    training,
    test_x,
    test_y,
    float_blob: bytes | None = None,
) -> dict:
    """Each LOW_BIT scheme: QAT fine-tuning (the batches and seeds of the int8 arms), its Keras
    accuracy against post-training quantization of the equally fine-tuned control at the same
    widths (simulated), and for w4a8 both shipped as real a8w4 files. A scheme tfmot cannot apply
    to the model is recorded with its reason (`not_possible`), so the int8 QAT before it is kept."""
    from tfq.quant.simulate import Scheme, Simulator

    scaled = data.scale(test_x, cfg.input_range).numpy()
    ptq = Simulator(control, calibration)
    out = {
        "what": "tfmot n-bit QAT against PTQ of the equally fine-tuned float control",
        "epochs": cfg.epochs,
        "learning_rate": cfg.learning_rate,
        "test_examples": int(len(test_y)),
        "input_range": list(cfg.input_range),
        "float_finetuned": float(control_correct.mean()),
        "schemes": {},
    }
    control_file = None
    for name in cfg.low_bit:
        w_bits, a_bits = LOW_BIT[name]
        fresh_session(cfg.seed)
        try:
            qat_model = _n_bit_model(float_model, w_bits, a_bits)
        except NotPossible as e:
            out["schemes"][name] = {"weight_bits": w_bits, "activation_bits": a_bits, "not_possible": str(e)}
            continue
        started = time.time()
        history = _fit(qat_model, cfg, *training)
        fit_s = time.time() - started
        qat_pred = models.predict_classes(qat_model, scaled)
        qat_correct = qat_pred == test_y
        # PTQ at the same widths and on QAT's own weight grids (conv per channel, Dense per tensor),
        # min/max activation ranges
        ptq_scheme = Scheme(w_bits, True, True, a_bits, False, "minmax", dense_per_channel=False)
        ptq_correct = ptq.predict(scaled, ptq_scheme).argmax(1) == test_y
        entry = {
            "weight_bits": w_bits,
            "activation_bits": a_bits,
            "time_s": round(fit_s, 1),
            "history": history,
            "accuracy": {"qat_keras": float(qat_correct.mean()), "ptq_simulated": float(ptq_correct.mean())},
            "qat_vs_ptq": stats.paired(ptq_correct, qat_correct),
            "qat_vs_float_finetuned": stats.paired(control_correct, qat_correct),
        }
        if a_bits == 8 and w_bits == 4:
            twin = float_twin(qat_model, float_model, w_bits)
            shipped = _ship_a8w4(twin, calibration)
            control_file = control_file or _ship_a8w4(control, calibration)
            shipped_pred = _tflite_pred(shipped, test_x, cfg.input_range)
            shipped_correct = shipped_pred == test_y
            control_file_correct = _tflite_correct(control_file, test_x, test_y, cfg.input_range)
            entry["accuracy"].update(
                qat_shipped_a8w4=float(shipped_correct.mean()), ptq_a8w4_file=float(control_file_correct.mean())
            )
            entry["shipped"] = {
                "recipe": SHIP_RECIPE,
                "size_bytes": len(shipped),
                "weight_dtypes": sorted(flatbuffer.read(shipped).dtypes("weights")),
                "vs_qat_keras": stats.paired(qat_correct, shipped_correct),
                "agreement_with_qat_keras": float(np.mean(shipped_pred == qat_pred)),
                "vs_ptq_file": stats.paired(control_file_correct, shipped_correct),
            }
            if float_blob is not None:  # like with like: each shipped file against the run's float32 file
                float_file_correct = _tflite_correct(float_blob, test_x, test_y, cfg.input_range)
                entry["shipped"].update(
                    float32_sha256=hashlib.sha256(float_blob).hexdigest(),
                    vs_float32_file=stats.paired(float_file_correct, shipped_correct),
                    ptq_file_vs_float32_file=stats.paired(float_file_correct, control_file_correct),
                )
        out["schemes"][name] = entry
    return out


def load_qat_model(path):
    """Reload a saved QAT model (its quantize wrappers need tfmot's scope)."""
    with tfmot().quantization.keras.quantize_scope():
        return keras.models.load_model(path)


FLAGS = flags.FLAGS


def _define_flags() -> None:
    cli.define_flags(QatConfig)


def main(argv):
    del argv
    r = qat(cli.config_from_flags(QatConfig))
    a = r["accuracy"]
    print(
        f"qat_int8 {a['qat_int8']:.4f}  ptq int8 (same fine-tuning) {a['ptq_int8_of_finetuned']:.4f}  "
        f"float fine-tuned {a['float_finetuned']:.4f}  -> {r['file']} ({r['size_bytes']:,d} bytes)"
    )


if __name__ == "__main__":
    cli.run(main, _define_flags)
