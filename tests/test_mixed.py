"""tfq.mixed: the mixed-precision stage writes a file, its recipe and a manifest that hold what they say,
reached as `python -m tfq.convert --mode=mixed` too."""

from __future__ import annotations

import json

from tfq import convert


def test_convert_mode_mixed_is_the_mixed_stage_and_writes_a_file_its_recipe_and_a_manifest_that_hold_what_they_say(
    run_cli, trained, data_root, cache, tmp_path
):
    import shutil

    from tfq import sensitivity
    from tfq.quant import mixed_search

    run = tmp_path / "mnist_mlp"
    shutil.copytree(trained / "mnist_mlp", run)
    convert.convert(
        convert.ConvertConfig(
            dataset="mnist",
            model="mlp",
            modes=("float32",),
            artifacts=str(tmp_path),
            data_root=str(data_root),
            cache_dir=str(cache),
        )
    )
    # the search ranks layers by the run's sensitivity.json when it was measured with the same settings
    sensitivity.sensitivity(
        sensitivity.SensitivityConfig(
            dataset="mnist",
            model="mlp",
            artifacts=str(tmp_path),
            num_calibration=50,
            max_eval_examples=300,
            latency_runs=10,
            data_root=str(data_root),
            cache_dir=str(cache),
        )
    )
    measured = (run / "sensitivity.json").read_bytes()
    common = (f"--artifacts={tmp_path}", "--model=mlp", "--num_calibration=50", "--max_eval_examples=300")
    proc = run_cli("convert", *common, "--mode=mixed", "--max_accuracy_drop=0.5", "--latency_runs=10")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "mixed.tflite: " in proc.stdout and "candidates" in proc.stdout
    m = json.loads((run / "mixed.json").read_text())
    assert m["budget_pts"] == 0.5 and m["objective"] == "size" and m["ladder"] == ["w4", "int8", "a16w8", "float"]
    assert -m["validation"]["vs_float32"]["delta_pts"] <= 0.5 and m["validation"]["examples"] == 300
    assert m["test"]["examples"] == 300 and set(m["test"]["uniform"]) == {"float", "int8", "w4"}
    assert m["path"][0]["action"] == "start: every layer w4" and m["candidates"] == len(m["path"])
    held = mixed_search.read_back(
        (run / "mixed.tflite").read_bytes(), mixed_search.layers((run / "float32.tflite").read_bytes()), "mixed.tflite"
    )
    assert {n: v["rung"] for n, v in held.items()} == m["assignment"] == {x["name"]: x["rung"] for x in m["layers"]}
    assert m["size_bytes"] == (run / "mixed.tflite").stat().st_size and m["latency_us"]["mixed"] > 0
    assert (run / "sensitivity.json").read_bytes() == measured  # reused, not measured again
    # the recipe remakes the same file through --recipe, with the search's own calibration rule
    proc = run_cli("convert", *common, f"--recipe={run / 'mixed.recipe.json'}", "--calibration_rule=minmax")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run / "recipe_mixed.tflite").read_bytes() == (run / "mixed.tflite").read_bytes()
    assert m["remake"].startswith("python -m tfq.convert --dataset=mnist --model=mlp --recipe=mixed.recipe.json")


def test_the_budgets_and_objectives_asked_for_name_one_file_each_and_bad_ones_are_one_line():
    import pytest

    from tfq import mixed
    from tfq.core.artifacts import TfqError

    cfg = mixed.MixedConfig(max_accuracy_drop=("0.3",), objective=("size",))
    assert mixed.planned(mixed._check(cfg)) == [(0.3, "size", "mixed")]
    many = mixed._check(mixed.MixedConfig(max_accuracy_drop=("0.3", "1", "0.3"), objective=("size", "latency")))
    assert mixed.planned(many) == [
        (0.3, "size", "mixed_size_0.3"),
        (1.0, "size", "mixed_size_1"),
        (0.3, "latency", "mixed_latency_0.3"),
        (1.0, "latency", "mixed_latency_1"),
    ]
    for kw, message in [
        (dict(max_accuracy_drop=()), "--mode=mixed needs --max_accuracy_drop"),
        (dict(max_accuracy_drop=("a",)), "--max_accuracy_drop=a: expected numbers of points"),
        (dict(max_accuracy_drop=("101",)), "--max_accuracy_drop=101.0: points from 0 to 100"),
        (dict(max_accuracy_drop=("1",), objective=("speed",)), "--objective=speed: choose from size, latency"),
        (dict(max_accuracy_drop=("1",), latency_runs=0), "--latency_runs=0"),
    ]:
        with pytest.raises(TfqError, match=message):
            mixed._check(mixed.MixedConfig(**kw))
