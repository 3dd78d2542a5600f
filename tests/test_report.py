"""tfq.report and tfq.reporting: the Pareto front and the numbers the tables derive from result files."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from tests.conftest import REPO, error_lines
from tfq import report
from tfq.core import artifacts, stats
from tfq.core.artifacts import TfqError
from tfq.reporting import fmt, generalization, headline, plots, sweep, timing, training
from tfq.reporting.collect import Study


def test_pareto_keeps_points_no_smaller_model_beats():
    points = [(100, 0.90), (50, 0.95), (300, 0.99), (200, 0.96), (250, 0.95), (50, 0.80)]
    assert sorted(plots.pareto(points)) == [1, 2, 3]


def _eval(run, name, accuracy, size, p50, per_class, **extra):
    """An eval file beside a stand-in flatbuffer, with the digest the harness records."""
    run.mkdir(exist_ok=True)
    (run / f"{name}.tflite").write_bytes(name.encode() * 3)
    e = {
        "name": name,
        "tflite_sha256": artifacts.sha256(run / f"{name}.tflite"),
        "accuracy": accuracy,
        "agreement": 1.0,
        "size_bytes": size,
        "latency_us": {"p50": p50},
        "xnnpack": True,
        "ops_outside_delegate": ["SOFTMAX"],
        "examples": 100,
        "threads": 1,
        "cpu": "test cpu",
        "per_class_accuracy": per_class,
        "data_source": {"description": "unit test data"},
        "split": "test",
        **extra,
    }
    (run / f"eval_{name}.json").write_text(json.dumps(e))
    return e


def test_report_derives_deltas_ratios_and_speedups(tmp_path):
    run = tmp_path / "mnist_cnn"
    base = _eval(run, "float32", 0.99, 1000, 400.0, [1.0, 0.98])
    # 100 images: float32 right on 99, int8 on 90 (9 only float32 gets right)
    counts = {"only_reference_right": 9, "only_other_right": 0, "images": 100}
    _eval(
        run,
        "int8",
        0.90,
        250,
        100.0,
        [0.99, 0.98],
        vs_reference=counts,
        reference={"file": "float32.tflite", "sha256": base["tflite_sha256"]},
    )
    _eval(
        run,
        "float16",
        0.99,
        500,
        400.0,
        [1.0, 0.98],
        vs_reference=counts,
        reference={"file": "model.keras", "sha256": "another reference"},
    )
    _eval(run, "dynamic", 0.99, 250, 90.0, [1.0, 0.98], examples=50)
    md = report.report(tmp_path, datasets=("mnist",), models=("cnn",)).read_text()
    lo, hi = stats.interval_pts(9, 0, 100)
    assert hi < 0 and stats.mcnemar_p(9, 0) < 0.004
    assert (
        f"| cnn | int8 | 90.00% | -9.00 [{lo:+.2f}, {hi:+.2f}] | 0.004 * | 100.00% | 0.2 KB | 0.250x | 100 µs "
        "| 4.00x | SOFTMAX |"
    ) in md
    assert "| cnn | float16 | 99.00% | +0.00 | - |" in md  # its test was against another reference: not shown
    assert "| cnn | dynamic | 99.00% | not on the same images | - |" in md
    rows = list(csv.DictReader((tmp_path / "report" / "results.csv").open()))
    assert [r["mode"] for r in rows] == ["float32", "float16", "dynamic", "int8"]
    int8 = next(r for r in rows if r["mode"] == "int8")
    assert float(int8["speedup"]) == pytest.approx(4.0) and float(int8["size_ratio"]) == pytest.approx(0.25)


def test_stage_times_total_and_split_off_training(tmp_path):
    for name, train, qat in (("mnist_cnn", 600, 100), ("mnist_mlp", 100, 20)):
        run = tmp_path / name
        _eval(run, "float32", 0.99, 1000, 400.0, [1.0, 0.98])
        stages = {
            "train": train,
            "convert": 10,
            "qat": qat,
            "evaluate": 40,
            **({"export int8 c": 2, "export int8 android": 1} if name == "mnist_mlp" else {}),
        }
        (run / "pipeline.json").write_text(json.dumps({s: {"seconds": v} for s, v in stages.items()}))
        (run / "qat_int8.json").write_text(
            json.dumps(
                {
                    "qat": {"epochs": 1, "time_s": qat * 0.4},
                    "control": {"time_s": qat * 0.4},
                    "accuracy": {"float_finetuned": 0.99, "ptq_int8_of_finetuned": 0.98, "qat_int8": 0.985},
                    "qat_gain_over_ptq": 0.005,
                    "qat_drop_vs_float": 0.005,
                }
            )
        )
    md = report.report(tmp_path, datasets=("mnist",), models=("mlp", "cnn")).read_text()
    # no sweep, sensitivity, mixed or micro stage in this run; the MLP's two exports add up to one column
    assert "| mnist_cnn | 600 | 10 | 100 | 40 | - | - | - | - | - | - | 80 | 150 |" in md
    assert "| mnist_mlp | 100 | 10 | 20 | 40 | - | - | - | - | - | 3 | 16 | 73 |" in md
    assert (
        "| **all** | **700** | **20** | **120** | **80** | **0** | **0** | **0** | **0** | **0** | **3** | **96** "
        "| **223** |"
    ) in md
    # 923 s in all; 223 s outside the train stage (24.2%); 127 s outside any fitting (13.8%)
    assert (
        "All stages: 923 s (15.4 min). Everything but the train stage: 223 s, 24.2% of it; "
        "counting the QAT fine-tuning fits as training too, 127 s, 13.8%." in md
    )


def test_report_without_results_says_what_to_run(tmp_path):
    with pytest.raises(TfqError, match="python -m tfq.pipeline"):
        report.report(tmp_path, datasets=("mnist",), models=("cnn",))


def test_an_unwritable_report_folder_is_one_line(run_cli):
    proc = run_cli("report", "--artifacts=/proc/nope", timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert error_lines(proc.stderr) == ["error: cannot write to /proc/nope/report: No such file or directory"]


def test_results_that_no_longer_match_their_files_are_left_out_and_named(tmp_path):
    run = tmp_path / "mnist_cnn"
    _eval(run, "float32", 0.99, 1000, 400.0, [1.0, 0.98])
    _eval(run, "int8", 0.985, 250, 100.0, [0.99, 0.98])
    _eval(run, "float16", 0.99, 500, 400.0, [1.0, 0.98], source_model_sha256="old-model")
    (run / "train.json").write_text(json.dumps({"model_sha256": "current-model"}))
    (run / "int8.tflite").write_bytes(b"converted again since")
    legacy = {k: v for k, v in _eval(run, "dynamic", 0.99, 250, 90.0, [1.0, 0.98]).items() if k != "tflite_sha256"}
    (run / "eval_dynamic.json").write_text(json.dumps(legacy))
    md = report.report(tmp_path, datasets=("mnist",), models=("cnn",)).read_text()
    assert "| cnn | float32 |" in md and "| cnn | int8 |" not in md and "| cnn | float16 |" not in md
    assert "- mnist_cnn/eval_int8.json: int8.tflite changed after it was measured" in md
    assert "- mnist_cnn/eval_float16.json: float16.tflite was made from an older trained model" in md
    assert "- mnist_cnn/eval_dynamic.json: it records no digest of the file it measured" in md


def test_speed_carries_the_per_round_range(tmp_path):
    run = tmp_path / "mnist_cnn"
    _eval(run, "float32", 0.99, 1000, 400.0, [1.0, 0.98])
    _eval(run, "int8", 0.99, 250, 100.0, [1.0, 0.98])
    for name, rounds in (("float32", [400.0, 420.0, 380.0]), ("int8", [100.0, 84.0, 95.0])):
        e = json.loads((run / f"eval_{name}.json").read_text())
        e["latency_us"].update(round_p50=rounds, measured_with=["float32", "int8"])
        (run / f"eval_{name}.json").write_text(json.dumps(e))
    md = report.report(tmp_path, datasets=("mnist",), models=("cnn",)).read_text()
    assert "| 100 µs | 4.00x [4.00-5.00] |" in md  # 400/100, 420/84, 380/95
    e = json.loads((run / "eval_int8.json").read_text())
    e["latency_us"]["measured_with"] = ["int8"]  # float32 timed in another pass: no paired range
    (run / "eval_int8.json").write_text(json.dumps(e))
    assert "| 100 µs | 4.00x | SOFTMAX |" in report.report(tmp_path, datasets=("mnist",), models=("cnn",)).read_text()


def test_qat_from_scratch_and_stale_sweep_checks(tmp_path):
    run = tmp_path / "mnist_mlp"
    _eval(run, "float32", 0.98, 1000, 20.0, [1.0, 0.96])
    (run / "train.json").write_text(json.dumps({"model_sha256": "current"}))
    paired = {"delta_pts": -0.5, "ci95_pts": [-0.9, -0.1], "p_value": 0.01}
    scratch = {
        "scheme": "w4a8",
        "fit_time_s": 61.0,
        "source_model": {"sha256": "current"},
        "accuracy": {"float32": 0.98, "qat_from_scratch_keras": 0.975},
        "vs_float32": {"qat_from_scratch_keras": paired},
    }
    (run / "qat_scratch_w4a8.json").write_text(json.dumps(scratch))
    (run / "qat_scratch_int8.json").write_text(
        json.dumps({**scratch, "scheme": "int8", "source_model": {"sha256": "older"}})
    )
    check = {
        "file": "float32.tflite",
        "tflite_sha256": "not this file's",
        "scheme": "float",
        "real_accuracy": 0.98,
        "simulated_accuracy": 0.98,
        "gap_points": 0.0,
        "agreement": 1.0,
        "within_tolerance": True,
        "float_agreement": 1.0,
        "float_file_disagreements": 0,
        "sim_only_agrees": 0,
        "float_only_agrees": 0,
        "informative": False,
        "passed": None,
    }
    older = {
        k: v
        for k, v in check.items()
        if k
        not in (
            "float_agreement",
            "float_file_disagreements",
            "sim_only_agrees",
            "float_only_agrees",
            "informative",
            "passed",
        )
    }
    sweep = {
        "source_model": {"sha256": "current"},
        "checks": [check, {**older, "file": "int8.tflite"}],
        "lines": [],
        "contrasts": [],
        "grid_examples": 100,
        "float_accuracy_grid": 0.98,
        "calibration_seeds": [0],
    }
    (run / "sweep.json").write_text(json.dumps(sweep))
    md = report.report(tmp_path, datasets=("mnist",), models=("mlp",)).read_text()
    assert "| mnist_mlp | w4a8 | 61 s | 98.00% | 97.50% (-0.50 [-0.90, -0.10] *) | - |" in md
    assert "mnist_mlp/qat_scratch_int8.json: it is compared with an older trained model" in md
    assert "mnist_mlp/sweep.json check of float32.tflite: float32.tflite changed or went after the check" in md
    assert "mnist_mlp/sweep.json check of int8.tflite: made before checks stood beside float32's own agreement" in md
    assert "| mnist_mlp | float32.tflite |" not in md and "| mnist_mlp | int8.tflite |" not in md


def test_bits_plot_takes_draws_that_agree_to_the_last_bit(tmp_path):
    run = tmp_path / "mnist_cnn"
    _eval(run, "float32", 0.98, 1000, 20.0, [1.0, 0.96])
    accuracy = [0.096, 0.096, 0.096]  # numpy's mean is 0.09600000000000002: above max, by float rounding
    point = {
        "bits": 4,
        "scheme": "a4",
        "accuracy": accuracy,
        "mean": float(np.mean(accuracy)),
        "spread": [min(accuracy), max(accuracy)],
        "agreement_with_float": 1.0,
    }
    sweep = {
        "source_model": {"sha256": "any"},
        "checks": [],
        "contrasts": [],
        "grid_examples": 100,
        "float_accuracy_grid": 0.98,
        "calibration_seeds": [0, 1, 2],
        "lines": [{"family": "activations", "label": "asymmetric, min/max", "points": [point]}],
    }
    (run / "sweep.json").write_text(json.dumps(sweep))
    report.report(tmp_path, datasets=("mnist",), models=("cnn",))
    assert (tmp_path / "report" / "bits_mnist_cnn.png").stat().st_size > 1000


def _micro(run, name, variants):
    (run / name).write_text(
        json.dumps(
            {
                "dataset": "mnist",
                "model": "cnn",
                "examples": 100,
                "test_examples": 100,
                "runtime": "tflite-micro test",
                "parts": [
                    {"name": "256 KB flash", "memory": "flash", "bytes": 262144},
                    {"name": "64 KB RAM", "memory": "ram", "bytes": 65536},
                ],
                "variants": variants,
            }
        )
    )


def _micro_entry(run, stem, agreement, arena=50_000, **extra):
    paired = {"delta_pts": 0.0, "ci95_pts": [-1.0, 1.0]}
    return {
        "name": stem,
        "file": f"somewhere/else/{stem}.tflite",
        "tflite_sha256": artifacts.sha256(run / f"{stem}.tflite"),
        "runs": True,
        "flash_bytes": 200_000,
        "arena_bytes": arena,
        "accuracy": 0.99,
        "litert_accuracy": 0.99,
        "agreement_with_litert": agreement,
        "disagreements": round((1 - agreement) * 100),
        "vs_litert": paired,
        "host_ms_per_image": 1.0,
        "fits": {"256 KB flash": True, "64 KB RAM": arena <= 65536},
        **extra,
    }


def test_the_microcontroller_section_keeps_current_entries_and_flags_low_agreement(tmp_path):
    run = tmp_path / "mnist_cnn"
    _eval(run, "float32", 0.99, 1000, 400.0, [1.0, 0.98])
    _eval(run, "int8", 0.99, 250, 100.0, [1.0, 0.98])
    _eval(run, "int16x8", 0.99, 500, 900.0, [1.0, 0.98])
    ok, low = _micro_entry(run, "int8", 1.0), _micro_entry(run, "int16x8", 0.98, arena=100_000)
    gone = {**_micro_entry(run, "float32", 1.0), "tflite_sha256": "an older file"}
    missing = {"name": "float16", "file": "float16.tflite", "tflite_sha256": "x", "runs": False, "error": "e"}
    _micro(run, "micro.json", [ok, low, gone, missing])
    _micro(run, "micro_full.json", [ok])
    md = report.report(tmp_path, datasets=("mnist",), models=("cnn",)).read_text()
    section = md.split("## On a microcontroller: TFLite Micro")[1].split("\n## ")[0]
    assert "| int8 | 200,000 B | 50,000 B | yes | yes |" in section
    assert "| int16x8 | 200,000 B | 100,000 B | yes | no |" in section
    assert "| float32 |" not in section  # its file changed since: left out, and said so
    assert "- mnist_cnn/micro.json entry float32: float32.tflite changed or went after TFLite Micro ran it" in md
    assert "- mnist_cnn/micro.json entry float16" in md  # no float16.tflite at all
    assert "Below 99.9% agreement with LiteRT: int16x8 (98.00%)." in section
    assert "Fits the smallest part (256 KB flash, 64 KB RAM): int8 (99.00%)" in section
    assert (
        "The whole test split (100 images" in section
        and "| int8 | 99.00% | 99.00% | +0.00 [-1.00, +1.00] | 100.00% | 0 |" in section
    )


def test_early_stop_replays_the_rule_tfq_train_applies():
    assert training.early_stop([1.0, 0.8, 0.9, 0.85, 0.95, 0.7], 3) == (5, 2)  # stops after 5, restores 2
    assert training.early_stop([1.0, 0.8, 0.8, 0.8, 0.7], 2) == (4, 2)  # equal is not better
    assert training.early_stop([1.0, 0.9, 0.8], 3) == (3, 3)  # never stops: the last epoch is the best
    assert training.early_stop([0.5, 0.6, 0.55, 0.54], 2, better=max) == (4, 2)


def test_training_curves_table_and_plot_come_from_the_history(tmp_path):
    run = tmp_path / "mnist_mlp"
    _eval(run, "float32", 0.99, 1000, 400.0, [1.0, 0.98])
    history = {
        "loss": [0.5, 0.3, 0.2, 0.15, 0.1],
        "accuracy": [0.8, 0.9, 0.93, 0.95, 0.97],
        "val_loss": [0.4, 0.3, 0.32, 0.33, 0.34],
        "val_accuracy": [0.85, 0.91, 0.90, 0.905, 0.9],
    }
    (run / "train.json").write_text(json.dumps({"history": history, "early_stopping": None, "model_sha256": "x"}))
    md = report.report(tmp_path, datasets=("mnist",), models=("mlp",)).read_text()
    assert "| mnist_mlp | 5 | no | 0.3000 (2) | 91.00% (2) | 90.00% | 5 / 2 | +1.00 |" in md
    assert (tmp_path / "report" / "training_mnist_mlp.png").is_file()


def _generalize(run, files, variants, cross=()):
    sets = ["clean", "noise/1", "noise/2", "blur/1", "blur/2"]
    shift = {
        "examples": 100,
        "of_test_images": 1000,
        "subset_seed": 0,
        "sets": sets,
        "corruptions": [
            {
                "name": "noise",
                "family": "noise",
                "library": "albumentations",
                "severities": [1, 2],
                "unit": "u",
                "levels": 2,
            },
            {
                "name": "blur",
                "family": "blur",
                "library": "albumentations",
                "severities": [1, 2],
                "unit": "u",
                "levels": 2,
            },
        ],
        "libraries": {"albumentations": "2.0.8", "imagecorruptions-imaug": "1.1.5"},
        "variants": variants,
    }
    (run / "generalize.json").write_text(json.dumps({"files": files, "shift": shift, "cross": list(cross)}))


def _variant(name, acc, gap=None):
    v = {
        "name": name,
        "accuracy": dict(zip(["clean", "noise/1", "noise/2", "blur/1", "blur/2"], acc)),
        "agreement_with_float32": {s: 1.0 for s in ["clean", "noise/1", "noise/2", "blur/1", "blur/2"]},
        "mean_shift_accuracy": sum(acc[1:]) / 4,
    }
    if gap:
        v["gap"] = gap
    return v


def _paired(pts, lo, hi, p):
    return {"pts": pts, "ci95_pts": [lo, hi], "p_value": p, "images_differing": 10, "images": 100}


def _gap(clean, shift, ci, by, p=0.5):
    return {
        "clean": {"delta_pts": clean, "ci95_pts": [clean - 1, clean + 1]},
        "shift": _paired(shift, shift - 0.5, shift + 0.5, p),
        "shift_minus_clean": _paired(shift - clean, *ci, p),
        "by_corruption": {c: _paired(v, v - 1, v + 1, p) for c, v in by.items()},
    }


def test_the_generalization_section_tables_plots_and_findings(tmp_path):
    run = tmp_path / "mnist_cnn"
    f32 = _eval(run, "float32", 0.99, 1000, 400.0, [1.0, 0.98])
    w4 = _eval(run, "aeq_w4", 0.98, 300, 400.0, [1.0, 0.98], vs_reference={"delta_pts": -1.0, "ci95_pts": [-1.5, -0.5]})
    i8 = _eval(run, "int8", 0.99, 250, 100.0, [1.0, 0.98])
    mx = _eval(run, "mixed_size_1", 0.99, 250, 100.0, [1.0, 0.98])
    files = {
        "float32": f32["tflite_sha256"],
        "aeq_w4": w4["tflite_sha256"],
        "int8": i8["tflite_sha256"],
        "mixed_size_1": mx["tflite_sha256"],
    }
    variants = [
        _variant("float32", [0.99, 0.9, 0.8, 0.85, 0.7]),
        _variant(
            "aeq_w4",
            [0.98, 0.85, 0.7, 0.8, 0.6],
            _gap(-1.0, -7.5, [-8.0, -5.0], {"noise": -8.0, "blur": -7.0}, p=0.001),
        ),
        _variant(
            "int8", [0.99, 0.9, 0.8, 0.85, 0.71], _gap(0.0, 0.25, [-0.5, 1.0], {"noise": 0.0, "blur": 0.5}, p=0.02)
        ),
        {
            **_variant(
                "mixed_size_1",
                [0.99, 0.9, 0.8, 0.85, 0.71],
                _gap(0.0, 0.25, [-0.5, 1.0], {"noise": 0.0, "blur": 0.5}, p=0.02),
            ),
            "same_predictions_as": "int8",
        },
    ]
    cross = [
        {
            "dataset": "usps",
            "examples": 2007,
            "data_source": {"description": "usps test"},
            "variants": [
                {"name": "float32", "accuracy": 0.95, "agreement_with_float32": 1.0, "vs_float32": None},
                {
                    "name": "aeq_w4",
                    "accuracy": 0.94,
                    "agreement_with_float32": 0.98,
                    "vs_float32": {"delta_pts": -1.0, "ci95_pts": [-1.6, -0.4]},
                },
            ],
        }
    ]
    _generalize(run, files, variants, cross)
    md = report.report(tmp_path, datasets=("mnist",), models=("cnn",)).read_text()
    assert "## Generalization: quantization under shift and on other datasets" in md
    # two distinct files (mixed_size_1 is int8's twin): Holm doubles the smaller p, keeps the larger
    assert (
        "| aeq_w4 | 98.00% | 73.75% | 100.00% | -1.00 [-2.00, +0.00] | -7.50 [-8.00, -7.00] | -6.50 [-8.00, -5.00] "
        "| 0.001 (0.002 *) | noise -8.00 [-9.00, -7.00] |" in md
    )
    assert (
        "| int8 | 99.00% | 81.50% | 100.00% | +0.00 [-1.00, +1.00] | +0.25 [-0.25, +0.75] | +0.25 [-0.50, +1.00] "
        "| 0.020 (0.020 *) | none below float32 |" in md
    )
    assert "| mixed_size_1 (= int8) |" in md
    assert "- Across the study, Holm over all 2 distinct files of the 1 runs" in md
    assert (
        "  - 4-bit weights: 1 distinct files; 1 lose more under shift than clean (mnist_cnn aeq_w4 "
        "-6.50), 0 less, 0 no different beyond chance." in md
    )
    assert (
        "  - int8 PTQ: 1 distinct files; 0 lose more under shift than clean, 1 less (mnist_cnn int8 "
        "+0.25), 0 no different beyond chance." in md
    )  # the twin is not counted again
    assert "aeq_w4: noise -8.00 [-9.00, -7.00] (p 0.001)" in md and "int8: none below float32" in md
    assert "| aeq_w4 | -1.00 [-1.50, -0.50] | 94.00% | -1.00 [-1.60, -0.40] | 98.00% |" in md
    assert (tmp_path / "report" / "shift_mnist_cnn.png").is_file()
    # a file replaced after the stage measured it takes the whole section out, and says why
    (run / "int8.tflite").write_bytes(b"another file")
    i8["tflite_sha256"] = artifacts.sha256(run / "int8.tflite")
    (run / "eval_int8.json").write_text(json.dumps(i8))
    md = report.report(tmp_path, datasets=("mnist",), models=("cnn",)).read_text()
    assert "## Generalization" not in md
    assert "- mnist_cnn/generalize.json: int8 changed or went after it was measured" in md


def test_a_count_across_runs_is_corrected_across_the_study():
    """p = 0.03 in each of two runs: beyond chance within its run (Holm over one file), not across
    the two (Holm: 0.06)."""

    def tested(name, p):
        return [{"name": name, "gap": {"shift_minus_clean": {"pts": -1.0, "p_value": p}}, "holm_p": p}]

    lines = generalization.family_summary({"mnist_cnn": tested("aeq_w4", 0.03), "cifar10_cnn": tested("aeq_w4", 0.03)})
    assert lines[0].startswith("- Across the study, Holm over all 2 distinct files of the 2 runs")
    assert (
        lines[1] == "  - 4-bit weights: 2 distinct files; 0 lose more under shift than clean, 0 less, 2 no "
        "different beyond chance."
    )
    alone = generalization.family_summary({"mnist_cnn": tested("aeq_w4", 0.03)})
    assert "1 lose more under shift than clean (mnist_cnn aeq_w4 -1.00)" in alone[1]


def test_sweep_checks_say_which_could_fail_and_what_they_found():
    """The verdict is recomputed from what a check recorded, so a check saved by older code reads the same."""
    base = {"within_tolerance": True, "informative": True, "sim_only_agrees": 5, "float_only_agrees": 1}
    assert sweep.verdict({**base, "informative": False}) == "not informative"
    assert sweep.verdict({**base, "sim_only_agrees": 9, "float_only_agrees": 0}) == "passed"  # p = 0.004
    assert sweep.verdict(base) == "not shown better than float32"  # follows the file, p = 0.22
    assert sweep.verdict({**base, "sim_only_agrees": 1}) == "**failed**"
    assert sweep.verdict({**base, "within_tolerance": False}) == "**failed**"
    assert sweep.verdict({**base, "within_tolerance": False, "informative": False}) == "**failed**"


def test_drops_are_shown_as_the_file_minus_its_reference():
    assert fmt.negated(0.34, [0.07, 0.56]) == "-0.34 [-0.56, -0.07]"


def test_the_scale_out_estimate_places_chains_longest_first():
    chains = {
        "mnist_mlp": 140,
        "mnist_cnn": 1352,
        "fashion_mnist_mlp": 194,
        "fashion_mnist_cnn": 1352,
        "cifar10_mlp": 206,
        "cifar10_cnn": 1729,
    }
    assert timing.machines_estimate(chains, 1)[0] == sum(chains.values())
    wall, placed = timing.machines_estimate(chains, 2)
    assert wall == 1352 + 1352  # both 1,352 s chains end up on the machine without cifar10_cnn
    assert placed["cifar10_cnn"] != placed["mnist_cnn"] == placed["fashion_mnist_cnn"]
    assert {placed[c] for c in ("cifar10_mlp", "fashion_mnist_mlp", "mnist_mlp")} == {placed["cifar10_cnn"]}
    assert timing.machines_estimate(chains, 3)[0] == timing.machines_estimate(chains, 6)[0] == 1729
    runs = {n: {"stages": {"train": {"seconds": s}}} for n, s in chains.items()}
    md = "\n".join(timing.scaleout(Study(rows=[], runs=runs)))
    assert "| 2 | 45.1 min | 1.84x | mnist_cnn, fashion_mnist_cnn |" in md


def test_a_low_bit_scheme_not_possible_is_named_with_its_reason_beside_the_schemes_that_ran():
    from tfq.reporting import findings, qat

    ran = {
        "weight_bits": 4,
        "activation_bits": 8,
        "time_s": 12.0,
        "accuracy": {"qat_keras": 0.9, "ptq_simulated": 0.8},
        "qat_vs_ptq": {"delta_pts": 10.0, "ci95_pts": [8.0, 12.0], "p_value": 0.001},
        "qat_vs_float_finetuned": {"delta_pts": -1.0, "ci95_pts": [-2.0, 0.0], "p_value": 0.05},
    }
    low_bit = {
        "epochs": 2,
        "learning_rate": 1e-4,
        "float_finetuned": 0.91,
        "control_time_s": 5.0,
        "schemes": {"w4a8": ran, "w4a4": {"weight_bits": 4, "activation_bits": 4, "not_possible": "tfmot: odd"}},
    }
    qat_int8 = {"qat": {"time_s": 30.0}, "control": {"time_s": 20.0}}
    study = Study(
        rows=[], runs={"mnist_cnn": {"low_bit": low_bit, "stages": {"qat": {"seconds": 90.0}}, "qat": qat_int8}}
    )
    md = "\n".join(qat.low_bit(study))
    assert "| mnist_cnn | w4a8 | 2, 0.0001 | 91.00% |" in md and "| mnist_cnn | w4a4 |" not in md
    assert "- mnist_cnn, w4a4: not possible: tfmot: odd" in md
    assert "w4a8 QAT 90.00%, +10.00 [+8.00, +12.00] over PTQ." in "\n".join(findings.section(study))
    assert "| 67 |" in "\n".join(timing.stage_times(study))  # the fits: 30 + 20 + 12 + 5 s, none for w4a4


def test_the_readme_headline_is_rewritten_between_its_markers_only(tmp_path):
    facts = {
        "cpu": "test cpu",
        "threads": 1,
        "mnist_cnn": {
            m: {
                "accuracy": 0.99,
                "delta_pts": -0.02,
                "ci95_pts": [-0.05, 0.03],
                "p_value": 0.62,
                "images": 10_000,
                "size_bytes": 300 * 1024,
                "size_ratio": 0.264,
                "p50_us": 69.0,
                "speedup": 3.4,
                "ops_outside_delegate": "",
            }
            for m in headline.HEADLINE_MODES
        },
    }
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\n{headline.README_BEGIN}\nold words\n{headline.README_END}\n\n## rest\n")
    headline.write_readme_headline(readme, facts)
    text = readme.read_text()
    assert text.startswith("# title\n\n") and text.endswith(f"{headline.README_END}\n\n## rest\n")
    assert "old words" not in text and "int8 99.00% (Δ -0.02 [-0.05, +0.03], p 0.620) in 300.0 KB" in text
    readme.write_text("# no markers\n")
    with pytest.raises(TfqError, match="no generated headline"):
        headline.write_readme_headline(readme, facts)


def test_the_readme_headline_is_the_committed_results_written_out():
    """Every number in the README's expected result comes from the committed artifacts/report/results.json:
    the paragraph and table between the README's markers are `headline_md` of its "headline" facts."""
    facts = json.loads((REPO / "artifacts" / "report" / "results.json").read_text())["headline"]
    text = (REPO / "README.md").read_text()
    block = text.split(headline.README_BEGIN, 1)[1].split(headline.README_END, 1)[0]
    assert facts.get(headline.HEADLINE_RUN) and facts.get(headline.LOW_BIT_RUN)  # both parts of it are there
    assert block.strip() == headline.headline_md(facts).strip()


def test_an_export_not_possible_on_a_run_adds_no_time_and_the_others_still_count():
    state = {
        "export int8 c": {"key": "k", "not_possible": "needs the Keras model"},
        "export aeq_a8w8 c": {"key": "k", "seconds": 1.5},
        "export aeq_a8w8 android": {"key": "k", "seconds": 0.5},
    }
    assert timing._seconds(state, "export") == 2.0
    assert timing._seconds({"export int8 c": state["export int8 c"]}, "export") is None


def test_each_dataset_names_its_models_parameters_and_multiply_accumulates(tmp_path):
    made = {
        "cnn": {
            "params": 93322,
            "macs": 38600000,
            "test_accuracy": 0.9912,
            "epochs": 10,
            "wall_time_s": 767.4,
            "test_examples": 10000,
        },
        "digits_net": {"params": 8506, "macs": 512000, "test_accuracy": 0.838, "imported": {"source": "digits.keras"}},
    }
    for model, train in made.items():
        run = tmp_path / f"mnist_{model}"
        _eval(run, "float32", 0.99, 1000, 400.0, [1.0, 0.98])
        (run / artifacts.TRAIN_JSON).write_text(json.dumps(train))
    md = report.report(tmp_path, datasets=("mnist",), models=tuple(made)).read_text()
    assert "| cnn | 93,322 | 38,600,000 | 99.12% (10,000 images) | 10 epochs in 767 s |" in md
    assert "| digits_net | 8,506 | 512,000 | 83.80% | imported |" in md
