"""Per-layer sensitivity: `python -m tfq.sensitivity --dataset=cifar10 --model=cnn`.

For each weight layer (convolution, dense) of `float32.tflite` and each scheme (default: int8 and
4-bit weights, rungs of `tfq.quant.mixed_search.RUNGS`), on the validation split:
- only quantized: the accuracy drop against float32 when only that layer is quantized;
- only float: the accuracy given back when only that layer is left in float in a model quantized
  everywhere else (what keeping it in float buys, in context);
- the quantizer's own error of the layer's output in the fully quantized model (ai-edge-quantizer's
  validation: SNR in dB and MSE against the float model, on `error_examples` images).
Each drop comes with its paired 95% interval. Also measured: the uniform model of every rung
(validation accuracy, bytes, batch-1 latency), which is what the mixed-precision ladder is made
of. Writes `sensitivity.json`; the mixed-precision search (`tfq.quant.mixed_search`) reads it.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
from absl import flags

from tfq import data, models
from tfq.core import artifacts, cli, console
from tfq.core.artifacts import TfqError
from tfq.quant import aeq, mixed_search
from tfq.quant.modes import DEFAULT_CALIBRATION
from tfq.reporting.drops import drops

SENSITIVITY_JSON = "sensitivity.json"


@dataclasses.dataclass
class SensitivityConfig(cli.Run):
    schemes: tuple[str, ...] = cli.setting(("int8", "w4"), "Rungs to measure each layer at.")
    num_calibration: int = cli.setting(DEFAULT_CALIBRATION, "Training images for the min/max calibration.")
    seed: int = cli.setting(0, "Seed of the calibration draw.")  # calibration draw
    error_examples: int = cli.setting(64, "Validation images for the quantizer's per-tensor SNR/MSE.")
    latency_runs: int = cli.setting(100, "Timed invokes per uniform model.")
    max_eval_examples: int = cli.setting(0, "Use only this many validation/test examples (0: all).")

    def validate(self) -> None:
        data.spec_of(self)
        models.check(self)
        unknown = [s for s in self.schemes if s not in mixed_search.RUNG or s == "float"]
        if unknown or not self.schemes:
            raise TfqError(
                f"--schemes={','.join(self.schemes)}: choose from "
                f"{', '.join(r for r in mixed_search.RUNG if r != 'float')}"
            )
        cli.check_at_least(self, 1, "num_calibration", "error_examples", "latency_runs")
        cli.check_at_least(self, 0, "max_eval_examples")

    def key(self, float_sha256: str, input_range=None) -> dict:
        """What a sensitivity.json must match to be reused for a scorer built from this config: the
        float file, the calibration, the validation images (their source and slice, and the pixel
        range where it is not [0, 1]: the float file's bytes do not depend on it), the schemes, and
        tfq's own code."""
        pixels = {} if cli.pixel_range(input_range) == cli.UNIT_RANGE else {"input_range": list(input_range)}
        return {
            **pixels,
            "float32_sha256": float_sha256,
            "num_calibration": self.num_calibration,
            "seed": self.seed,
            "calibration_rule": mixed_search.CALIBRATION_RULE,
            "max_eval_examples": self.max_eval_examples,
            "data": data.source_key(self.dataset, self.data_root, self.cache_dir),
            "schemes": list(self.schemes),
            "code": artifacts.code_digest(),
        }


def float_flatbuffer(run) -> tuple[bytes, str]:
    """The run's float32.tflite and its digest, refused when it was not made from the current model."""
    path, model = run / "float32.tflite", models.source_file(run)
    remake = models.remake_float(run)
    if not path.is_file() or not model.is_file():
        raise TfqError(f"{path} does not exist (or its trained model is missing); make it with: {remake}")
    manifest = artifacts.read_json(run / "float32.json", default=None)
    if (manifest or {}).get("source_model", {}).get("sha256") != artifacts.sha256(model):
        raise TfqError(f"{path} was not made from the current {model.name}; remake it with: {remake}")
    return path.read_bytes(), artifacts.sha256(path)


def scorer_for(cfg, run) -> tuple[mixed_search.Scorer, str, data.Splits]:
    """The validation scorer of a run: its float model, min/max calibration on `num_calibration`
    training images drawn by `seed`, and the validation split."""
    float_blob, digest = float_flatbuffer(run)
    splits = data.load_of(cfg, max_eval=cfg.max_eval_examples or None)
    pixels = models.input_range(run, cfg.input_range)
    calibration = data.calibration_samples(splits, cfg.num_calibration, seed=cfg.seed, input_range=pixels)
    images, labels = data.to_numpy(splits.val)
    layers = mixed_search.layers(float_blob)
    return mixed_search.Scorer(float_blob, layers, calibration, images, labels, pixels), digest, splits


def _layer_errors(scorer: mixed_search.Scorer, blob: bytes, count: int) -> dict[str, dict]:
    """ai-edge-quantizer's own per-tensor comparison (SNR, MSE) of each layer's output."""
    from ai_edge_quantizer import model_validator
    from ai_edge_quantizer.utils import validation_utils

    key, name = aeq._signature(scorer.float_blob)  # noqa: SLF001 - the same signature lookup
    test = {key: [{name: x[None, ...]} for x in data.scale(scorer.images[:count], scorer.input_range).numpy()]}
    metrics = [validation_utils.ValidationErrorMetric.SNR, validation_utils.ValidationErrorMetric.MSE]
    with console.quiet():
        result = model_validator.compare_model(
            scorer.float_blob, blob, test, metrics, use_xnnpack=True, num_threads=1
        ).get_all_tensor_results()
    out = {}
    for layer in scorer.layers:
        values = result.get(layer.output) or {}
        snr = _finite(values.get("snr"))  # a power ratio
        out[layer.name] = {
            "snr_db": None if snr is None or snr <= 0 else 10 * float(np.log10(snr)),
            "mse": _finite(values.get("mse")),
        }
    return out


def _finite(v) -> float | None:
    return None if v is None or not np.isfinite(float(v)) else float(v)


def measure(scorer: mixed_search.Scorer, schemes: tuple[str, ...], *, error_examples: int, latency_runs: int) -> dict:
    """Every rung's uniform model, then each layer alone quantized and alone left float per scheme."""
    from tfq.runtimes.harness import Classifier, interleaved_latency_us

    float_correct = scorer.float_correct
    names = [layer.name for layer in scorer.layers]
    uniform = {r.name: scorer.build(dict.fromkeys(names, r.name)) for r in mixed_search.RUNGS}
    latency = interleaved_latency_us(
        {r: Classifier(b, label=f"uniform {r}", input_range=scorer.input_range) for r, b in uniform.items()},
        scorer.images[0],
        runs=latency_runs,
    )
    rungs = {}
    for r, blob in uniform.items():
        correct = scorer.correct(blob)
        rungs[r] = {
            "val_accuracy": float(correct.mean()),
            "val_vs_float32": mixed_search.paired_vs(float_correct, correct),
            "size_bytes": len(blob),
            "latency_us": latency[r]["p50"],
            "latency_spread_us": latency[r]["spread"],
            "description": mixed_search.RUNG[r].description,
        }
    rows = [
        {"name": layer.name, "op": layer.op, "params": layer.params, "macs": layer.macs, "schemes": {}}
        for layer in scorer.layers
    ]
    for scheme in schemes:
        errors = _layer_errors(scorer, uniform[scheme], error_examples)
        everywhere = scorer.correct(uniform[scheme])
        for row in console.progress(rows, f"sensitivity at {scheme}", unit="layer"):
            alone = scorer.correct(scorer.build({**dict.fromkeys(names, "float"), row["name"]: scheme}, "float"))
            spared = scorer.correct(scorer.build({**dict.fromkeys(names, scheme), row["name"]: "float"}, scheme))
            row["schemes"][scheme] = {
                "only_quantized_vs_float32": mixed_search.paired_vs(float_correct, alone),
                "only_float_vs_all_quantized": mixed_search.paired_vs(everywhere, spared),
                **errors[row["name"]],
            }
            if mixed_search.held(scheme, row["op"]) != scheme:  # e.g. no int4 depthwise kernel: it holds int8
                row["schemes"][scheme]["held_as"] = mixed_search.held(scheme, row["op"])
    ranking = {
        s: [r["name"] for r in sorted(rows, key=lambda r: -r["schemes"][s]["only_float_vs_all_quantized"]["delta_pts"])]
        for s in schemes
    }
    return drops(
        {
            "float_val_accuracy": float(float_correct.mean()),
            "val_examples": int(len(float_correct)),
            "rungs": rungs,
            "schemes": list(schemes),
            "layers": rows,
            "most_sensitive": ranking,
        }
    )


def sensitivity(cfg: SensitivityConfig) -> dict:
    """Measure a run's per-layer sensitivity; writes and returns `sensitivity.json`."""
    cfg.validate()
    run = artifacts.check_writable(models.run_of(cfg))
    started = time.time()
    scorer, digest, splits = scorer_for(cfg, run)
    result = {
        "dataset": cfg.dataset,
        "model": cfg.model,
        "split": "validation",
        "input_range": list(scorer.input_range),
        "key": cfg.key(digest, scorer.input_range),
        "calibration": {"images": cfg.num_calibration, "seed": cfg.seed, "rule": mixed_search.CALIBRATION_RULE},
        "error_examples": cfg.error_examples,
        "data_source": splits.source.to_json(),
        **measure(scorer, cfg.schemes, error_examples=cfg.error_examples, latency_runs=cfg.latency_runs),
    }
    result["evaluations"] = scorer.evaluations
    result["seconds"] = round(time.time() - started, 1)
    artifacts.write_json(run / SENSITIVITY_JSON, result)
    return result


def headline(result: dict) -> str:
    """The pipeline's one line for this stage: the most sensitive layers at the lowest width."""
    first = result["schemes"][-1]
    return f"most sensitive at {first}: {', '.join(result['most_sensitive'][first][:2])}"


FLAGS = flags.FLAGS


def _define_flags() -> None:
    cli.define_flags(SensitivityConfig)


def main(argv):
    del argv
    result_cfg = cli.config_from_flags(SensitivityConfig)
    result = sensitivity(result_cfg)
    print(f"float32 validation accuracy {100 * result['float_val_accuracy']:.2f}% on {result['val_examples']} images")
    for r, v in result["rungs"].items():
        print(
            f"  every layer {r:6s} drop {v['val_drop_pts']:+.2f} pts  {v['size_bytes']:>9,d} bytes  "
            f"{v['latency_us']:8.0f} us"
        )
    for s in result["schemes"]:
        print(f"{s}: only-quantized drop / only-float recovery (pts), SNR (dB)")
        for row in result["layers"]:
            v = row["schemes"][s]
            snr = f"{v['snr_db']:.1f}" if v["snr_db"] is not None else "-"
            print(
                f"  {row['name']:12s} {v['only_quantized_drop_pts']:+6.2f}  {v['only_float_recovery_pts']:+6.2f}  {snr}"
            )
    print(f"wrote {artifacts.run_dir(result_cfg.artifacts, result_cfg.dataset, result_cfg.model) / SENSITIVITY_JSON}")


if __name__ == "__main__":
    cli.run(main, _define_flags)
