"""The precision sweep: `python -m tfq.sweep --dataset=mnist --model=cnn`.

Expected result (MNIST CNN in the study, 1,000 grid images, float32 99.6%): weights alone
(symmetric, per channel) hold 99.5% at 4 bits and 99.0% at 3; activations alone (asymmetric
min/max) 99.3% at 4 bits, but at 3 bits 78% on average with a 59-point range over three
calibration draws; an MSE-chosen clip keeps 99.2% there. At 2 bits the symmetric weight grid
(-1, 0, +1) breaks the model (12.5%) while an asymmetric per-channel one keeps 97.9%.

The trained Keras model runs with simulated quantization (`tfq.quant.simulate`) along `LINES`: weights
only, activations only, or both, from 2 to 16 bits, one line per scheme (symmetric or asymmetric,
per-channel or per-tensor weights, activation ranges by min/max, percentile or MSE). Activation
ranges come from the converter's own calibration images (same count and seed), and from
`--calibration_draws` - 1 further draws, so every activation point carries its spread over
draws. The grid runs on a seeded subset of the test split (`--grid_examples`); the schemes that a
real file of the run folder also has (`CHECKS`) run on the whole test split against that file:
accuracy of each and agreement of their predictions. Writes `sweep.json` and `sweep.csv`.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import time

import numpy as np
from absl import flags

from tfq import data, models
from tfq.core import artifacts, cli, console, stats
from tfq.core.artifacts import TfqError
from tfq.core.backend import fresh_session, versions
from tfq.quant import modes
from tfq.quant.simulate import FAILED, NOT_INFORMATIVE, PASSED, Scheme, Simulator, check_verdict
from tfq.runtimes import harness, litert

BITS = (2, 3, 4, 5, 6, 8, 16)


@dataclasses.dataclass(frozen=True)
class Line:
    family: str  # "weights", "activations" or "both"
    label: str
    weights: dict | None  # Scheme fields for the weights (bits filled in), None: float
    activations: dict | None

    def scheme(self, bits: int) -> Scheme:
        fields = {}
        if self.weights is not None:
            fields.update(weight_bits=bits, **self.weights)
        if self.activations is not None:
            fields.update(activation_bits=bits, **self.activations)
        return Scheme(**fields)


_W_SC = dict(weight_symmetric=True, per_channel=True)
_W_ST = dict(weight_symmetric=True, per_channel=False)
_A_MINMAX = dict(activation_symmetric=False, activation_range="minmax")

LINES = (
    Line("weights", "symmetric, per-channel", _W_SC, None),
    Line("weights", "symmetric, per-tensor", _W_ST, None),
    Line("weights", "asymmetric, per-channel", dict(weight_symmetric=False, per_channel=True), None),
    Line("weights", "asymmetric, per-tensor", dict(weight_symmetric=False, per_channel=False), None),
    Line("activations", "asymmetric, min/max", None, _A_MINMAX),
    Line("activations", "symmetric, min/max", None, dict(activation_symmetric=True, activation_range="minmax")),
    Line(
        "activations", "asymmetric, percentile", None, dict(activation_symmetric=False, activation_range="percentile")
    ),
    Line("activations", "asymmetric, MSE", None, dict(activation_symmetric=False, activation_range="mse")),
    Line(
        "activations",
        "asymmetric, moving-average min/max (ai-edge-quantizer)",
        None,
        dict(activation_symmetric=False, activation_range="ema"),
    ),
    Line("both", "TFLite int8 scheme (w sym/channel, a asym min/max)", _W_SC, _A_MINMAX),
    Line("both", "w per-tensor, a asym min/max", _W_ST, _A_MINMAX),
    Line("both", "w sym/channel, a symmetric", _W_SC, dict(activation_symmetric=True, activation_range="minmax")),
    Line("both", "w sym/channel, a asym MSE", _W_SC, dict(activation_symmetric=False, activation_range="mse")),
)

# Real files and the simulated scheme that should reproduce each: the same grids, and the same
# range calibration (the converter: min/max; ai-edge-quantizer: its moving average).
CHECKS = {
    "int8": Scheme(8, True, True, 8, False, "minmax"),
    "int16x8": Scheme(8, True, True, 16, True, "minmax"),
    "aeq_a8w8": Scheme(8, True, True, 8, False, "ema"),
    "aeq_a8w8_sym": Scheme(8, True, True, 8, True, "ema"),
    "aeq_a8w8_pertensor": Scheme(8, True, False, 8, False, "ema"),
    "aeq_a16w8": Scheme(8, True, True, 16, True, "ema"),
    # ai-edge-quantizer's 4-bit files: depthwise kernels int8 (tfq's a8w4 recipes) or float (weight-only)
    "aeq_a8w4": Scheme(4, True, True, 8, False, "ema", depthwise="int8"),
    "aeq_w4": Scheme(4, True, True, None, depthwise="float"),
}
# Paired comparisons between two lines at each width, on the same grid images and (for
# activations) the same calibration draw: (label, line, minus this line).
CONTRASTS = (
    ("activations: symmetric minus asymmetric (min/max)", "symmetric, min/max", "asymmetric, min/max"),
    ("activations: percentile minus min/max", "asymmetric, percentile", "asymmetric, min/max"),
    ("activations: MSE minus min/max", "asymmetric, MSE", "asymmetric, min/max"),
    (
        "activations: moving average (ai-edge-quantizer) minus min/max",
        "asymmetric, moving-average min/max (ai-edge-quantizer)",
        "asymmetric, min/max",
    ),
    ("weights: per-tensor minus per-channel (symmetric)", "symmetric, per-tensor", "symmetric, per-channel"),
    ("weights: asymmetric minus symmetric (per-channel)", "asymmetric, per-channel", "symmetric, per-channel"),
)
AGREEMENT_TOLERANCE = {"accuracy_points": 0.15, "min_agreement": 0.995}  # issue 11's promise


@dataclasses.dataclass(unsafe_hash=True)  # hashable: the grid cache keys on it
class SweepConfig(cli.Run):
    bits: tuple[int, ...] = cli.setting(BITS, "Bit widths to simulate (2 to 16).")
    grid_examples: int = cli.setting(1000, "Test images per grid point (a seeded subset; 0: all).")
    calibration_draws: int = cli.setting(3, "Calibration draws for activation ranges (draw 0 = convert's).")
    num_calibration: int = cli.setting(modes.DEFAULT_CALIBRATION, "Calibration images per draw.")
    seed: int = cli.setting(0, "Seed of the grid subset and of calibration draw 0 (convert's --seed).")
    checks: bool = cli.setting(True, "Compare with the run's real files on the full test split.")
    max_eval_examples: int = cli.setting(0, "Use only this many test images (0: all).")

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "bits", tuple(self.bits))  # hashable: the config keys the grid's cache

    def validate(self) -> None:
        data.spec_of(self)
        models.check(self)
        cli.check_at_least(self, 1, "calibration_draws", "num_calibration")
        cli.check_at_least(self, 0, "grid_examples", "max_eval_examples")
        bad = [b for b in self.bits if not 2 <= b <= 16]
        if bad or not self.bits:
            raise TfqError(f"--bits={','.join(map(str, self.bits))}: each must be 2 to 16")


def _grid_subset(n_total: int, n: int, seed: int) -> np.ndarray:
    if not n or n >= n_total:
        return np.arange(n_total)
    return np.sort(np.random.default_rng(seed).choice(n_total, n, replace=False))


@dataclasses.dataclass
class _Grid:
    """What every line of one sweep reads: the test images, the grid subset, one simulator per
    calibration draw and float's predictions."""

    splits: data.Splits
    images: np.ndarray
    labels: np.ndarray
    scaled: np.ndarray
    subset: np.ndarray
    sims: list
    float_pred: np.ndarray


@functools.lru_cache(maxsize=1)
def _grid(cfg: SweepConfig, model_sha256: str) -> _Grid:
    """Built once per process and sweep (keyed by the model's digest too): the local run builds it
    once; a Ray worker builds it for the first line it runs and reuses it for the next ones."""
    del model_sha256  # part of the cache key only
    fresh_session(cfg.seed)
    run = artifacts.run_dir(cfg.artifacts, cfg.dataset, cfg.model)
    model, pixels = models.load_trained(run), models.input_range(run, cfg.input_range)
    splits = data.load_of(cfg, max_eval=cfg.max_eval_examples or None)
    images, labels = data.to_numpy(splits.test)
    scaled = data.scale(images, pixels).numpy()
    subset = _grid_subset(len(labels), cfg.grid_examples, cfg.seed)
    # Draw 0 is exactly what convert calibrates on (same count and seed); the others add spread.
    sims = [
        Simulator(
            model, data.calibration_samples(splits, cfg.num_calibration, seed=cfg.seed + d, input_range=pixels), seed=d
        )
        for d in range(cfg.calibration_draws)
    ]
    float_pred = sims[0].predict(scaled[subset], Scheme()).argmax(1)
    return _Grid(splits, images, labels, scaled, subset, sims, float_pred)


def line_points(cfg: SweepConfig, model_sha256: str, index: int) -> tuple[list[dict], dict]:
    """One line of the grid (`LINES[index]` at every width): its points, and per width the
    correctness of each calibration draw's predictions on the grid images. The unit of work an
    executor hands out (`tfq.scale.executors`)."""
    g = _grid(cfg, model_sha256)
    line, labels = LINES[index], g.labels[g.subset]
    points, correct = [], {}
    for bits in cfg.bits:
        scheme = line.scheme(bits)
        draws = g.sims if scheme.activation_bits else g.sims[:1]  # weights alone need no calibration
        preds = [s.predict(g.scaled[g.subset], scheme).argmax(1) for s in draws]
        correct[bits] = [p == labels for p in preds]
        acc = [float(c.mean()) for c in correct[bits]]
        points.append(
            {
                "bits": bits,
                "scheme": scheme.name,
                "accuracy": acc,
                "mean": float(np.mean(acc)),
                "spread": [min(acc), max(acc)],
                "agreement_with_float": float(np.mean([(p == g.float_pred).mean() for p in preds])),
            }
        )
    return points, correct


def sweep(cfg: SweepConfig, *, map_lines=map) -> dict:
    """Run the grid and the checks; writes sweep.json / sweep.csv in the run folder and returns the result.

    `map_lines(fn, indices)` runs `line_points` for every line: the builtin `map` here, Ray tasks
    through `tfq.scale.executors` (each task rebuilds the same grid, so the results are the same)."""
    cfg.validate()
    run = artifacts.check_writable(models.run_of(cfg))
    models.need_keras(run)  # the simulation reads the Keras model's layers
    started = time.time()
    try:
        return _sweep(cfg, run, started, map_lines)
    finally:
        _grid.cache_clear()  # the models and images; a later sweep (another run) builds its own


def _sweep(cfg: SweepConfig, run, started: float, map_lines) -> dict:
    digest = artifacts.sha256(run / artifacts.MODEL_FILE)
    g = _grid(cfg, digest)
    lines, correct = [], {}
    computed = map_lines(functools.partial(line_points, cfg, digest), range(len(LINES)))
    for line, (points, line_correct) in zip(
        LINES, console.progress(computed, "sweep", total=len(LINES), unit="scheme")
    ):
        lines.append({"family": line.family, "label": line.label, "points": points})
        correct.update({(line.label, bits): c for bits, c in line_correct.items()})
    labels, subset = g.labels, g.subset
    result = {
        "dataset": cfg.dataset,
        "input_range": list(models.input_range(run, cfg.input_range)),
        "model": cfg.model,
        "grid_examples": int(len(subset)),
        "grid_subset_seed": cfg.seed,
        "float_accuracy_grid": float((g.float_pred == labels[subset]).mean()),
        "calibration_samples": cfg.num_calibration,
        "calibration_seeds": [cfg.seed + d for d in range(cfg.calibration_draws)],
        "lines": lines,
        "contrasts": _contrasts(correct, cfg.bits),
        "checks": _checks(run, g.sims[0], g.scaled, g.images, labels, g.splits.source.to_json()) if cfg.checks else [],
        "tolerance": {**AGREEMENT_TOLERANCE, "informative_from_disagreements": MIN_INFORMATIVE},
        "source_model": {"path": str(run / artifacts.MODEL_FILE), "sha256": digest},
        "time_s": round(time.time() - started, 1),
        "versions": versions(),
    }
    with artifacts.atomic_paths(run / "sweep.json", run / "sweep.csv") as (json_tmp, csv_tmp):
        artifacts.write_json(json_tmp, result)
        csv_tmp.write_text(_csv(result))
    return result


def _contrasts(correct: dict, bits: tuple[int, ...]) -> list[dict]:
    """Each contrast at each width: the paired test per calibration draw (same images, same draw)."""
    out = []
    for label, line, baseline in CONTRASTS:
        points = []
        for b in bits:
            draws = [stats.paired(ref, other) for ref, other in zip(correct[baseline, b], correct[line, b])]
            deltas = [d["delta_pts"] for d in draws]
            points.append(
                {
                    "bits": b,
                    "delta_pts": float(np.mean(deltas)),
                    "draw_range_pts": [min(deltas), max(deltas)],
                    "draws": draws,
                }
            )
        out.append({"label": label, "line": line, "baseline": baseline, "points": points})
    return out


MIN_INFORMATIVE = 6  # float/file disagreements needed before a perfect simulation could beat float at p < 0.05


def compare_with_file(real: np.ndarray, simulated: np.ndarray, floated: np.ndarray, labels: np.ndarray) -> dict:
    """How well a simulation predicts a real file's classes, against the float model's own.

    The float model alone agrees with an 8-bit file on almost every image, so overall agreement
    says little. What tests the simulation is the images where float and the file disagree: there
    a faithful simulation follows the file. `sim_only` counts images the simulation gets as the
    file does and float does not; `float_only` the reverse. The check is informative when float
    and the file part on at least `MIN_INFORMATIVE` images (else even a perfect simulation could
    not be told from the float model); its verdict is `simulate.check_verdict`: failed outside the
    tolerance whatever else, passed inside it where it follows the file better than float does
    (McNemar's exact two-sided p < 0.05 on sim_only vs float_only), None (`passed`) only where it is
    within tolerance and uninformative."""
    real, simulated, floated = (np.asarray(a) for a in (real, simulated, floated))
    real_acc, sim_acc = float((real == labels).mean()), float((simulated == labels).mean())
    gap = abs(real_acc - sim_acc) * 100
    parted = floated != real
    sim_only, float_only = int((parted & (simulated == real)).sum()), int((~parted & (simulated != real)).sum())
    informative = int(parted.sum()) >= MIN_INFORMATIVE
    p = stats.mcnemar_p(float_only, sim_only)
    within = (
        gap <= AGREEMENT_TOLERANCE["accuracy_points"]
        and float((real == simulated).mean()) >= AGREEMENT_TOLERANCE["min_agreement"]
    )
    check = {
        "examples": int(len(labels)),
        "real_accuracy": real_acc,
        "simulated_accuracy": sim_acc,
        "float_accuracy": float((floated == labels).mean()),
        "gap_points": gap,
        "agreement": float((real == simulated).mean()),
        "float_agreement": float((real == floated).mean()),
        "float_file_disagreements": int(parted.sum()),
        "sim_only_agrees": sim_only,
        "float_only_agrees": float_only,
        "better_than_float_p": p,
        "within_tolerance": within,
        "informative": informative,
    }
    verdict = check_verdict(check)
    return {**check, "verdict": verdict, "passed": None if verdict == NOT_INFORMATIVE else verdict == PASSED}


def _checks(run, sim: Simulator, scaled, images, labels, source: dict) -> list[dict]:
    """Each real file with a simulated twin: both on the full test split, predictions compared,
    and the float model's own agreement with the file beside the simulation's."""
    from tfq import evaluate  # LiteRT; only for the checks

    out, pixels = [], models.input_range(run)
    floated = sim.predict(scaled, Scheme()).argmax(1)
    for name, scheme in CHECKS.items():
        path = run / f"{name}.tflite"
        if not path.is_file():
            continue
        real = evaluate.saved_predictions(path, len(labels), source)  # the evaluate stage's own pass, if current
        if real is None:
            clf = harness.Classifier(path, input_range=pixels)
            processes = 1 if clf.delegation()["xnnpack"] else litert.cores()
            real = harness.dequantize(clf.invoke_prepared(clf.prepare(images), processes), clf.output).argmax(1)
        simulated = sim.predict(scaled, scheme).argmax(1)
        out.append(
            {
                "file": path.name,
                "tflite_sha256": artifacts.sha256(path),
                "scheme": scheme.name,
                **compare_with_file(real, simulated, floated, labels),
            }
        )
    return out


def _csv(result: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["family", "line", "bits", "scheme", "calibration_draw", "accuracy", "agreement_with_float"])
    for line in result["lines"]:
        for p in line["points"]:
            for d, acc in enumerate(p["accuracy"]):
                w.writerow(
                    [
                        line["family"],
                        line["label"],
                        p["bits"],
                        p["scheme"],
                        d,
                        f"{acc:.4f}",
                        f"{p['agreement_with_float']:.4f}",
                    ]
                )
    return buf.getvalue()


def headline(result: dict) -> str:
    """The pipeline's one line for this stage: the informative checks that passed, the lowest agreement."""
    checks = result["checks"]
    worst = min(checks, key=lambda c: c["agreement"]) if checks else None
    verdicts = [check_verdict(c) for c in checks]
    failed = verdicts.count(FAILED)
    return (
        f"{verdicts.count(PASSED)}/{len(checks) - verdicts.count(NOT_INFORMATIVE)} informative checks passed"
        + (f", {failed} failed" if failed else "")
        + f" ({verdicts.count(NOT_INFORMATIVE)} of {len(checks)} could not tell the simulation from float32)"
        + (f"; lowest agreement {100 * worst['agreement']:.2f}%, {worst['file']}" if worst else "")
    )


FLAGS = flags.FLAGS


def _define_flags() -> None:
    cli.define_flags(SweepConfig)


def main(argv):
    del argv
    result = sweep(cli.config_from_flags(SweepConfig))
    print(
        f"{result['dataset']} {result['model']}: float {100 * result['float_accuracy_grid']:.2f}% on "
        f"{result['grid_examples']} test images, {result['time_s']} s"
    )
    for line in result["lines"]:
        accs = "  ".join(f"{p['bits']}:{100 * p['mean']:5.1f}" for p in line["points"])
        print(f"  {line['family']:11s} {line['label'][:34]:34s} {accs}")
    for c in result["checks"]:
        print(
            f"  check {c['file']:24s} real {100 * c['real_accuracy']:.2f}  simulated "
            f"{100 * c['simulated_accuracy']:.2f}  agreement {100 * c['agreement']:.2f}% (float "
            f"{100 * c['float_agreement']:.2f}%)  "
            + {True: "passed", False: "FAILED", None: "not informative"}[c["passed"]]
        )


if __name__ == "__main__":
    cli.run(main, _define_flags)
