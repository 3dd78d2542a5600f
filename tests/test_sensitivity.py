"""tfq.sensitivity: per-layer drops with their intervals, the quantizer's own SNR, uniform rungs,
and the CLI's bad-input errors."""

from __future__ import annotations

import json

import pytest

from tests.conftest import error_lines
from tfq import sensitivity
from tfq.core.artifacts import TfqError


@pytest.fixture(scope="module")
def measured(converted, data_root, cache):
    run, _ = converted
    cfg = sensitivity.SensitivityConfig(
        dataset="mnist",
        model="cnn",
        artifacts=str(run.parent),
        num_calibration=50,
        error_examples=8,
        latency_runs=10,
        max_eval_examples=300,
        data_root=str(data_root),
        cache_dir=str(cache),
    )
    return cfg, sensitivity.sensitivity(cfg), run


def test_every_layer_has_both_measures_per_scheme_with_intervals_around_them(measured):
    cfg, result, run = measured
    assert json.loads((run / sensitivity.SENSITIVITY_JSON).read_text()) == json.loads(json.dumps(result))
    assert result["split"] == "validation" and result["val_examples"] == 300
    assert [layer["name"] for layer in result["layers"]][-1] == "probs" and len(result["layers"]) == 7
    for layer in result["layers"]:
        assert set(layer["schemes"]) == {"int8", "w4"}
        for v in layer["schemes"].values():
            lo, hi = v["only_quantized_ci95_pts"]
            assert lo <= v["only_quantized_drop_pts"] <= hi
            lo, hi = v["only_float_ci95_pts"]
            assert lo <= v["only_float_recovery_pts"] <= hi
            # every drop is a whole number of the 300 images
            assert abs(v["only_quantized_drop_pts"] * 3 - round(v["only_quantized_drop_pts"] * 3)) < 1e-6
    # 8-bit outputs are closer to float than 4-bit ones, layer by layer, by the quantizer's own SNR
    for layer in result["layers"]:
        assert layer["schemes"]["int8"]["snr_db"] > layer["schemes"]["w4"]["snr_db"] > 0
    assert set(result["most_sensitive"]["w4"]) == {layer["name"] for layer in result["layers"]}


def test_uniform_rungs_are_measured_and_ordered_by_size(measured):
    _, result, _ = measured
    r = result["rungs"]
    assert (
        r["float"]["val_drop_pts"] == 0 and r["w4"]["size_bytes"] < r["int8"]["size_bytes"] < r["float"]["size_bytes"]
    )
    assert r["int8"]["size_bytes"] < r["a16w8"]["size_bytes"] < r["float"]["size_bytes"]
    assert all(v["latency_us"] > 0 for v in r.values())


def test_it_is_refused_for_a_float_file_of_another_model(measured, tmp_path):
    cfg, _, run = measured
    import shutil

    copy = tmp_path / run.name
    shutil.copytree(run, copy)
    (copy / "float32.json").write_text(json.dumps({"source_model": {"sha256": "0" * 64}}))
    with pytest.raises(TfqError, match="was not made from the current model.keras; remake it with"):
        sensitivity.sensitivity(sensitivity.SensitivityConfig(**{**cfg.__dict__, "artifacts": str(tmp_path)}))


def test_bad_flags_are_one_line_errors(run_cli, tmp_path):
    for args, message in [
        (("--schemes=int3",), "--schemes=int3: choose from w4, int8, a16w8"),
        (("--dataset=imagenet",), "unknown dataset 'imagenet'"),
        (("--error_examples=0",), "--error_examples=0: must be at least 1"),
        ((), "float32.tflite does not exist"),
    ]:
        proc = run_cli("sensitivity", f"--artifacts={tmp_path}", *args, timeout=120)
        assert proc.returncode == 1 and message in error_lines(proc.stderr)[0], proc.stderr[-2000:]
    assert not list(tmp_path.rglob("*.json"))


def test_each_layer_is_measured_alone_quantized_and_alone_spared_against_the_same_images(tiny):
    from tfq.quant import mixed_search

    scorer = mixed_search.Scorer(
        tiny.blobs["float32"], mixed_search.layers(tiny.blobs["float32"]), tiny.calibration, tiny.images, tiny.labels
    )
    result = sensitivity.measure(scorer, ("int8", "w4"), error_examples=4, latency_runs=3)
    assert result["float_val_accuracy"] == 1.0 and result["val_examples"] == len(tiny.images)  # labels: its own
    assert [layer["name"] for layer in result["layers"]] == ["conv", "probs"]
    assert (
        result["layers"][0]["params"] == 3 * 3 * 1 * 8 and result["layers"][1]["params"] == 13 * 13 * 8 * 10
    )  # kernels
    for layer in result["layers"]:
        for v in layer["schemes"].values():
            lo, hi = v["only_quantized_ci95_pts"]
            assert lo <= v["only_quantized_drop_pts"] <= hi and v["only_quantized_drop_pts"] >= 0  # from 100%
            assert v["snr_db"] is not None and v["mse"] >= 0
        assert layer["schemes"]["int8"]["snr_db"] > layer["schemes"]["w4"]["snr_db"]
    assert (
        result["rungs"]["w4"]["size_bytes"]
        < result["rungs"]["int8"]["size_bytes"]
        < result["rungs"]["float"]["size_bytes"]
    )
    assert sorted(result["most_sensitive"]["w4"]) == ["conv", "probs"]
    assert sensitivity.headline(result) == f"most sensitive at w4: {', '.join(result['most_sensitive']['w4'])}"
