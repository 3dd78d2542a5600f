"""tfq.report: the Pareto front and the numbers the tables derive from result files."""

from __future__ import annotations

import csv
import json

import pytest

from tests.conftest import error_lines
from tfq import report
from tfq.artifacts import TfqError


def test_pareto_keeps_points_no_smaller_model_beats():
    points = [(100, 0.90), (50, 0.95), (300, 0.99), (200, 0.96), (250, 0.95), (50, 0.80)]
    assert sorted(report.pareto(points)) == [1, 2, 3]


def _eval(accuracy, size, p50, per_class):
    return {"accuracy": accuracy, "agreement": 1.0, "size_bytes": size, "latency_us": {"p50": p50},
            "xnnpack": True, "ops_outside_delegate": ["SOFTMAX"], "examples": 100, "threads": 1, "cpu": "test cpu",
            "per_class_accuracy": per_class, "data_source": {"description": "unit test data"}}


def test_report_derives_deltas_ratios_and_speedups(tmp_path):
    run = tmp_path / "mnist_cnn"
    run.mkdir()
    (run / "eval_float32.json").write_text(json.dumps(_eval(0.99, 1000, 400.0, [1.0, 0.98])))
    (run / "eval_int8.json").write_text(json.dumps(_eval(0.985, 250, 100.0, [0.99, 0.98])))
    md = report.report(tmp_path, datasets=("mnist",), models=("cnn",)).read_text()
    assert "| cnn | int8 | 98.50% | -0.50 | 100.00% | 0.2 KB | 0.250x | 100 µs | 4.00x | SOFTMAX |" in md
    rows = list(csv.DictReader((tmp_path / "report" / "results.csv").open()))
    assert [r["mode"] for r in rows] == ["float32", "int8"]
    assert float(rows[1]["speedup"]) == pytest.approx(4.0) and float(rows[1]["size_ratio"]) == pytest.approx(0.25)


def test_stage_times_total_and_split_off_training(tmp_path):
    for name, train, qat in (("mnist_cnn", 600, 100), ("mnist_mlp", 100, 20)):
        run = tmp_path / name
        run.mkdir()
        (run / "eval_float32.json").write_text(json.dumps(_eval(0.99, 1000, 400.0, [1.0, 0.98])))
        stages = {"train": train, "convert": 10, "qat": qat, "evaluate": 40}
        (run / "pipeline.json").write_text(json.dumps({s: {"seconds": v} for s, v in stages.items()}))
        (run / "qat_int8.json").write_text(json.dumps({
            "qat": {"epochs": 1, "time_s": qat * 0.4}, "control": {"time_s": qat * 0.4},
            "accuracy": {"float_finetuned": 0.99, "ptq_int8_of_finetuned": 0.98, "qat_int8": 0.985},
            "qat_gain_over_ptq": 0.005, "qat_drop_vs_float": 0.005}))
    md = report.report(tmp_path, datasets=("mnist",), models=("mlp", "cnn")).read_text()
    assert "| mnist_cnn | 600 | 10 | 100 | 40 | 80 | 150 |" in md
    assert "| **all** | **700** | **20** | **120** | **80** | **96** | **220** |" in md
    # 920 s in all; 220 s outside the train stage (23.9%); 124 s outside any fitting (13.5%)
    assert "All stages: 920 s (15.3 min). Everything but the train stage: 220 s, 23.9% of it; " \
           "counting the QAT fine-tuning fits as training too, 124 s, 13.5%." in md


def test_report_without_results_says_what_to_run(tmp_path):
    with pytest.raises(TfqError, match="python -m tfq.pipeline"):
        report.report(tmp_path, datasets=("mnist",), models=("cnn",))


def test_an_unwritable_report_folder_is_one_line(run_cli):
    proc = run_cli("report", "--artifacts=/proc/nope", timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert error_lines(proc.stderr) == ["error: cannot write to /proc/nope/report: No such file or directory"]
