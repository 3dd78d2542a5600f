"""tfq.generalize: every file on shifted sets and other datasets, gaps paired per image, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import error_lines
from tfq import data, generalize
from tfq.core.artifacts import TfqError
from tfq.data import corruptions
from tfq.runtimes import harness

MODES = ("float32", "int8", "aeq_w4")


@pytest.fixture(scope="module")
def measured(converted, data_root, cache):
    run, _ = converted
    cfg = generalize.GeneralizeConfig(
        dataset="mnist",
        model="cnn",
        modes=MODES,
        examples=30,
        cross_datasets=("usps",),
        max_eval_examples=120,
        artifacts=str(run.parent),
        data_root=str(data_root),
        cache_dir=str(cache),
    )
    return run, cfg, generalize.generalize(cfg)


def test_every_file_is_scored_on_every_set_and_the_json_matches_the_saved_predictions(measured):
    run, _, result = measured
    assert json.loads((run / "generalize.json").read_text()) == json.loads(json.dumps(result))
    shift = result["shift"]
    assert (
        shift["examples"] == 30 and shift["of_test_images"] == 120 and shift["sets"] == corruptions.set_names("mnist")
    )
    saved = np.load(run / "generalize.npz")
    indices = saved["shift/indices"]
    _, labels = data.to_numpy(
        data.load("mnist", root=result["config"]["data_root"], cache=result["config"]["cache_dir"]).test, limit=120
    )
    assert len(indices) == 30 and np.array_equal(indices, corruptions.subset(120, 30, 0))
    rows = {v["name"]: v for v in shift["variants"]}
    assert set(rows) == set(MODES)
    for name, row in rows.items():
        pred = saved[f"shift/{name}"]
        assert pred.shape == (len(shift["sets"]), 30)
        for i, set_name in enumerate(shift["sets"]):
            assert row["accuracy"][set_name] == pytest.approx((pred[i] == labels[indices]).mean())
            assert row["agreement_with_float32"][set_name] == pytest.approx(
                (pred[i] == saved["shift/float32"][i]).mean()
            )
    assert all(v == 1.0 for v in rows["float32"]["agreement_with_float32"].values()) and "gap" not in rows["float32"]


def test_a_shifted_set_is_scored_on_the_images_it_names(measured):
    """The stage's row for rotation/3 is the file's own classes on corrupt(images, rotation/3)."""
    run, cfg, result = measured
    x, _ = data.to_numpy(data.load("mnist", root=cfg.data_root, cache=cfg.cache_dir).test, limit=120)
    chosen = corruptions.subset(120, 30, 0)
    saved = np.load(run / "generalize.npz")
    i = result["shift"]["sets"].index("rotation/3")
    rotated = corruptions.corrupt(x[chosen], "mnist", "rotation/3", seed=0)
    direct = harness.Classifier(run / "int8.tflite").predict(rotated).argmax(1)
    np.testing.assert_array_equal(saved["shift/int8"][i], direct)


def test_the_gap_under_shift_is_the_mean_of_the_per_set_gaps(measured):
    _, _, result = measured
    rows = {v["name"]: v for v in result["shift"]["variants"]}
    for name in ("int8", "aeq_w4"):
        gap, acc, ref = rows[name]["gap"], rows[name]["accuracy"], rows["float32"]["accuracy"]
        shifted = [s for s in result["shift"]["sets"] if s != corruptions.CLEAN]
        want = 100 * np.mean([acc[s] - ref[s] for s in shifted])
        assert gap["shift"]["pts"] == pytest.approx(want)
        assert gap["clean"]["delta_pts"] == pytest.approx(100 * (acc["clean"] - ref["clean"]))
        assert gap["shift_minus_clean"]["pts"] == pytest.approx(want - gap["clean"]["delta_pts"])
        assert set(gap["by_corruption"]) == {c.name for c in corruptions.SMALL}
        for c in corruptions.SMALL:  # a corruption's gap is the mean of its severities' gaps
            levels = [f"{c.name}/{lv}" for lv in (1, 2, 3)]
            assert gap["by_corruption"][c.name]["pts"] == pytest.approx(
                100 * np.mean([acc[s] - ref[s] for s in levels])
            )


def test_other_datasets_go_through_evaluate_and_land_beside_the_run(measured):
    run, _, result = measured
    (usps,) = result["cross"]
    assert usps["dataset"] == "usps" and usps["examples"] == 120
    for row in usps["variants"]:
        saved = json.loads((run / f"xeval_usps_{row['name']}.json").read_text())
        assert saved["accuracy"] == row["accuracy"] and saved["eval_dataset"] == "usps"


def test_gaps_pair_images_known_values():
    names = [corruptions.CLEAN, "a/1", "a/2"]
    reference = np.array([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 1, 0]], bool)
    same = generalize.gaps(reference, reference, names, seed=0)
    assert same["shift"]["pts"] == same["shift_minus_clean"]["pts"] == 0 and same["clean"]["delta_pts"] == 0
    assert same["shift_minus_clean"]["p_value"] == 1.0 and same["shift_minus_clean"]["images_differing"] == 0
    worse = reference.copy()
    worse[1, :2] = False  # two of four images lost under a/1 only
    g = generalize.gaps(worse, reference, names, seed=0)
    assert g["by_set"]["a/1"]["delta_pts"] == -50 and g["by_set"]["a/2"]["delta_pts"] == 0
    assert g["shift"]["pts"] == pytest.approx(-25) and g["by_corruption"]["a"]["pts"] == pytest.approx(-25)
    d = g["shift_minus_clean"]
    assert d["pts"] == pytest.approx(-25) and d["images_differing"] == 2
    assert d["p_value"] == 0.5  # two images, both one way: 2 of the 4 sign patterns are as extreme
    assert d["ci95_pts"] == [pytest.approx(-50), pytest.approx(0)]  # resampling 4 images, 2 of them -0.5


def test_a_dataset_without_matching_classes_or_float32_is_a_clear_error(converted, tmp_path):
    run, _ = converted
    with pytest.raises(TfqError, match="a mnist model cannot be scored on it"):
        generalize.generalize(
            generalize.GeneralizeConfig(
                dataset="mnist", model="cnn", cross_datasets=("cifar10",), artifacts=str(run.parent)
            )
        )
    (tmp_path / "mnist_cnn").mkdir()
    (tmp_path / "mnist_cnn" / "int8.tflite").write_bytes((run / "int8.tflite").read_bytes())
    with pytest.raises(TfqError, match="no .*float32.tflite: gaps are against float32"):
        generalize.generalize(
            generalize.GeneralizeConfig(dataset="mnist", model="cnn", modes=("int8",), artifacts=str(tmp_path))
        )
    assert generalize.compatible("mnist", ["usps", "cifar10", "mnist", "emnist_digits"]) == ["usps", "emnist_digits"]


def test_emnist_digits_end_to_end_on_tfds_mock_data(converted, mock_root, tmp_path):
    import tensorflow_datasets as tfds

    run, _ = converted
    with tfds.testing.mock_data(num_examples=50):
        result = generalize.generalize(
            generalize.GeneralizeConfig(
                dataset="mnist",
                model="cnn",
                modes=("float32", "int8"),
                shift=False,
                cross_datasets=("emnist_digits",),
                artifacts=str(run.parent),
                data_root=str(mock_root),
                cache_dir=str(tmp_path / "cache"),
            )
        )
    (emnist,) = result["cross"]
    assert emnist["dataset"] == "emnist_digits" and emnist["examples"] == 50 and "shift" not in result
    assert {v["name"] for v in emnist["variants"]} == {"float32", "int8"}


def test_cli_bad_input_is_one_line_and_writes_nothing(run_cli, converted, tmp_path):
    run, _ = converted
    for args, message in (
        (("--mode=int3",), "unknown mode 'int3'"),
        (("--cross_datasets=cifar10",), "a mnist model cannot be scored on it"),
        (("--noshift",), "--noshift with no --cross_datasets leaves nothing to measure"),
        (("--examples=-1",), "--examples=-1"),
    ):
        proc = run_cli("generalize", "--dataset=mnist", "--model=cnn", f"--artifacts={run.parent}", *args, timeout=120)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert message in error_lines(proc.stderr)[0]
    proc = run_cli("generalize", "--dataset=mnist", "--model=cnn", f"--artifacts={tmp_path}", timeout=120)
    assert proc.returncode == 1 and "no .tflite files" in error_lines(proc.stderr)[0]
    assert not list(tmp_path.rglob("generalize.*"))
