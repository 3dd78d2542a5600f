"""tfq.sweep: the grid, its spread over calibration draws, the checks against real files, the CLI."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from tests.conftest import error_lines
from tfq import sweep
from tfq.quant.simulate import FAILED, NOT_INFORMATIVE, PASSED, check_verdict


def test_sweep_cli_writes_the_grid_and_the_checks(run_cli, converted):
    run, _ = converted
    proc = run_cli(
        "sweep",
        f"--artifacts={run.parent}",
        "--bits=2,8",
        "--calibration_draws=2",
        "--grid_examples=200",
        "--max_eval_examples=1000",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((run / "sweep.json").read_text())
    assert result["grid_examples"] == 200 and result["calibration_seeds"] == [0, 1]
    assert [line["label"] for line in result["lines"]] == [line.label for line in sweep.LINES]
    for line in result["lines"]:
        assert [p["bits"] for p in line["points"]] == [2, 8]
        for p in line["points"]:
            assert len(p["accuracy"]) == (2 if line["family"] != "weights" else 1)
            assert 0 <= p["spread"][0] <= p["mean"] <= p["spread"][1] <= 1
    by_line = {line["label"]: line["points"] for line in result["lines"]}
    int8_line = by_line["TFLite int8 scheme (w sym/channel, a asym min/max)"]
    assert int8_line[1]["mean"] > int8_line[0]["mean"] + 0.3  # 2 bits break the model, 8 do not
    checks = {c["file"]: c for c in result["checks"]}
    assert set(checks) == {f"{n}.tflite" for n in sweep.CHECKS}
    for c in checks.values():
        assert c["examples"] == 1000 and c["agreement"] >= 0.99, c
        assert c["informative"] == (c["float_file_disagreements"] >= sweep.MIN_INFORMATIVE)
        assert c["verdict"] == check_verdict(c) and c["passed"] is (
            None if c["verdict"] == NOT_INFORMATIVE else c["verdict"] == PASSED
        )
        assert c["float_agreement"] == pytest.approx(1 - c["float_file_disagreements"] / 1000)
    assert checks["int8.tflite"]["verdict"] in (PASSED, NOT_INFORMATIVE), checks["int8.tflite"]
    rows = list(csv.DictReader((run / "sweep.csv").open()))
    assert len(rows) == sum(len(p["accuracy"]) for line in result["lines"] for p in line["points"])


def test_a_check_passes_only_where_the_simulation_follows_the_file_better_than_float():
    labels = np.zeros(1000, int)
    floated = labels.copy()
    real = labels.copy()
    real[:10] = 1  # the file parts from float on 10 images
    follows = real.copy()
    follows[0] = 0  # the simulation follows it on 9 of them
    check = sweep.compare_with_file(real, follows, floated, labels)
    assert check["informative"] and check["passed"] and (check["sim_only_agrees"], check["float_only_agrees"]) == (9, 0)
    assert check["float_agreement"] == 0.99 and check["agreement"] == 0.999
    assert sweep.compare_with_file(real, floated, floated, labels)["passed"] is False  # the float model itself
    wanders = follows.copy()
    wanders[100:108] = 2  # follows the 9, but breaks 8 images where float and the file agree
    assert sweep.compare_with_file(real, wanders, floated, labels)["passed"] is False
    few = labels.copy()
    few[:3] = 1  # 3 disagreements: even a perfect simulation could not be told from float
    assert sweep.compare_with_file(few, few, floated, labels)["passed"] is None
    far = few.copy()
    far[500:800] = 2  # far from the file on 300 images: it fails, though float and the file part on only 3
    check = sweep.compare_with_file(few, far, floated, labels)
    assert not check["informative"] and not check["within_tolerance"]
    assert check["verdict"] == FAILED and check["passed"] is False


def test_bad_bits_are_one_clear_line(run_cli, tmp_path):
    proc = run_cli("sweep", f"--artifacts={tmp_path}", "--bits=1,8", timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "--bits=1,8: each must be 2 to 16" in error_lines(proc.stderr)[0]
    assert not list(tmp_path.rglob("sweep.*"))
