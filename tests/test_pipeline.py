"""tfq.pipeline: the real CLI end to end on small data, skipping, and flag-driven reruns."""

from __future__ import annotations

import csv
import dataclasses
import json
import re
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import STUDY, STUDY_EXPORTS, STUDY_STAGES, error_lines, study_config
from tfq import pipeline
from tfq.core.artifacts import TfqError
from tfq.quant import modes

STAGES, EXPORTS = STUDY_STAGES, STUDY_EXPORTS


def test_pipeline_writes_every_file(study_run):
    root, stdout, _ = study_run
    run = root / "mnist_mlp"
    for mode in [*modes.MODES, "qat_int8"]:
        assert (run / f"{mode}.tflite").is_file() and (run / f"eval_{mode}.json").is_file()
    for stage in STAGES:
        assert re.search(rf"^\[mnist_mlp\] {stage}: done in [0-9.]+ s; .*[0-9]", stdout, re.M), stage
    report = root / "report"
    for name in (
        "sweep.json",
        "sweep.csv",
        "qat_lowbit.json",
        "sensitivity.json",
        "mixed_size_1.tflite",
        "mixed_size_1.json",
        "mixed_size_1.recipe.json",
        "micro.json",
        "export/int8_c/int8.h",
        "export/int8_c/int8.c",
        "export/int8_android/labels.txt",
        "export/int8_android/int8.tflite",
        "generalize.json",
        "generalize.npz",
        "xeval_usps_int8.json",
        "xeval_usps_float32.npy",
    ):
        assert (run / name).is_file(), name
    for name in (
        "report.md",
        "results.csv",
        "results.json",
        "accuracy_vs_size_mnist.png",
        "latency.png",
        "per_class_int8.png",
        "bits_mnist_mlp.png",
        "sensitivity_mnist_mlp.png",
        "mixed_mnist_mlp.png",
        "training_mnist_mlp.png",
        "shift_mnist_mlp.png",
    ):
        assert (report / name).is_file(), name
    for png in report.glob("*.png"):
        with Image.open(png) as im:
            im.verify()
            assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 150
    rows = list(csv.DictReader((report / "results.csv").open()))
    assert {r["mode"] for r in rows} == {*modes.MODES, "qat_int8"}
    text = (report / "report.md").read_text()
    assert "## mnist" in text and "| mlp | int8 |" in text and "## Stage times" in text
    assert "| mnist_mlp | int8.tflite |" in text and "| aeq_a8w4 | int4 / int8 |" in text
    assert "## Low-bit QAT" in text and "| mnist_mlp | w4a8 |" in text
    assert "## Findings" in text and "- mnist_mlp, low-bit QAT against PTQ at the same widths: w4a8 QAT" in text
    assert "## Layer by layer: sensitivity" in text and "| dense0 | 401,408 |" in text
    assert "## Mixed precision under an accuracy budget" in text and "| mnist_mlp | size | 1 |" in text
    assert "## Generalization: quantization under shift and on other datasets" in text
    assert "### mnist_mlp on other datasets" in text and "| int8 | " in text.split("### mnist_mlp on other")[1]
    assert "## Training curves: what the validation split says" in text
    assert "## On a microcontroller: TFLite Micro" in text and re.search(
        r"^\| int8 \| [0-9,]+ B \| [0-9,]+ B \| ", text, re.M
    )
    micro = {v["name"]: v for v in json.loads((run / "micro.json").read_text())["variants"]}
    assert set(micro) == {*modes.MODES, "qat_int8", "mixed_size_1"} and micro["int8"]["runs"]
    assert not micro["float16"]["runs"] and micro["float16"]["unsupported_op"] == "DEQUANTIZE"
    gen = json.loads((run / "generalize.json").read_text())
    # clean + 8 corruptions x 3 severities
    assert gen["shift"]["examples"] == STUDY["shift_examples"] and len(gen["shift"]["sets"]) == 25
    assert [c["dataset"] for c in gen["cross"]] == ["usps"]  # cifar10's classes are not MNIST's: left out
    assert {v["name"] for v in gen["shift"]["variants"]} == {*modes.MODES, "qat_int8", "mixed_size_1"}
    assert not list(run.glob("xeval_cifar10_*"))
    state = json.loads((run / "pipeline.json").read_text())
    assert set(state) == {*STAGES, *EXPORTS}
    assert all(s["seconds"] >= 0 for s in state.values())


# What a default run must not print: library start-up logs, progress bars, warnings, tracebacks.
NOISE = re.compile(
    r"Traceback|I0000|E0000|W0000|WARNING|Warning|warn\(|cuInit|cuda|Downloading|Dl Completed|"
    r"Extraction|Generating|Shuffling|fully_quantize|INFO:|NodeDef|HDF5|absl::"
)


def test_a_default_run_prints_only_tfqs_lines_and_keras_epochs(study_run):
    _, stdout, stderr = study_run
    assert stderr == ""
    assert not NOISE.search(stdout), NOISE.search(stdout)
    for line in stdout.splitlines():
        assert re.match(
            r"^(\[\w+\] [\w. ]+: |\d+/\d+ - |Epoch \d+/\d+$|pipeline finished in|"
            r"(mnist|usps): building the tfds dataset "
            r"from the files in|BatchNorm statistics re-estimated)",
            line,
        ), line


def test_bad_flags_fail_before_any_stage_runs(run_cli, data_root, cache, tmp_path, monkeypatch):
    """The command line's one line and exit status once; every other bad setting through the same check in
    this process (no TensorFlow start-up per case)."""
    proc = run_cli("pipeline", "--models=mlp", f"--artifacts={tmp_path / 'a'}", "--qat_epochs=0", timeout=120)
    assert proc.returncode == 1 and error_lines(proc.stderr) == ["error: --qat_epochs=0: must be at least 1"]
    assert "Traceback" not in proc.stderr and not (tmp_path / "a").exists()
    monkeypatch.setenv("TFQ_OFFLINE", "1")
    cfg = pipeline.PipelineConfig(
        models=("mlp",), artifacts=str(tmp_path / "a"), data_root=str(data_root), cache_dir=str(cache)
    )
    (tmp_path / "flags").mkdir()
    (tmp_path / "flags" / "mnist_mlp.cfg").write_text("--epochs=two\n")
    for kw, message in [
        (dict(datasets=("mnist", "imagenet")), "unknown dataset 'imagenet'"),
        (dict(flags_dir=str(tmp_path / "flags")), "mnist_mlp.cfg: flag --epochs=two: invalid literal"),
        (dict(artifacts="/proc/nope"), "cannot write to /proc/nope"),
        (dict(mixed_budgets=(0.3,), mixed_objectives=("speed",)), "--mixed_objectives=speed"),
        (dict(export_modes=("int3",)), "--export_modes=int3: choose from"),
        (dict(micro_examples=-5), "--micro_examples=-5"),
        (dict(shift_examples=-1), "--shift_examples=-1"),
        (dict(cross_datasets=("emnist_digits",)), "dataset 'emnist_digits' is not available offline"),
        (dict(cross_datasets=("usps2",)), "unknown dataset 'usps2'"),
        (dict(runs=("cifar10_resnet9",)), "--runs=cifar10_resnet9: not <dataset>_<model>"),
        (dict(runs=("svhn_cnn",)), "--runs=svhn_cnn: not <dataset>_<model>"),
        (dict(runs=("mnist_cnn",), model_file="m.keras"), "--runs=mnist_cnn names tfq's own runs"),
    ]:
        with pytest.raises(TfqError, match=re.escape(message)):
            pipeline.pipeline(dataclasses.replace(cfg, **kw))
        assert not (tmp_path / "a").exists() or not list((tmp_path / "a").rglob("*.*"))


def _stages(out: str, said: str) -> set[str]:
    """The stages whose line in `out` says `said` (": done in ", ": current, skipped")."""
    return {line.split("] ")[1].split(":")[0] for line in out.splitlines() if said in line}


def _ran(out: str) -> set[str]:
    return _stages(out, ": done in ")


def test_a_rerun_skips_every_finished_stage(study, data_root, cache, capsys):
    root = study
    pipeline.pipeline(study_config(root, data_root, cache))
    out = capsys.readouterr().out
    assert _ran(out) == set()
    assert _stages(out, ": current, skipped") == {*STAGES, *EXPORTS, "report"}


def test_changing_one_flag_reruns_only_the_stages_it_affects(study, data_root, cache, capsys):
    root = study
    pipeline.pipeline(study_config(root, data_root, cache, latency_runs=30))
    assert _ran(capsys.readouterr().out) == {"evaluate", "report"}
    int8 = root / "mnist_mlp" / "int8.tflite"
    before = int8.read_bytes()
    pipeline.pipeline(study_config(root, data_root, cache, latency_runs=30, num_calibration=2))
    assert int8.read_bytes() != before  # 2 calibration images give other ranges than 50
    assert _ran(capsys.readouterr().out) == {*STAGES, *EXPORTS, "report"} - {"train"}


def test_force_reaches_every_stage_and_the_report(study, data_root, cache, monkeypatch):
    """What --force does to a current stage is the stage runner's (tests/core/test_stages.py); here, that
    the pipeline hands it to every row of the table and to the report."""
    from tfq.core import stages

    seen = []
    monkeypatch.setattr(stages.Stages, "run", lambda self, name, *a: seen.append((name, self.force)))
    pipeline.pipeline(study_config(study, data_root, cache, force=True))
    assert sorted(seen) == sorted((name, True) for name in (*STAGES, *EXPORTS, "report"))
    seen.clear()
    pipeline.pipeline(study_config(study, data_root, cache))
    assert seen and not any(force for _, force in seen)


def test_files_replaced_outside_the_pipeline_are_not_taken_for_its_own(study, data_root, cache, capsys):
    """A manual `tfq.convert --num_calibration=10` used to pass as the study's calibration."""
    from tfq import convert

    root = study
    int8 = root / "mnist_mlp" / "int8.tflite"
    ours = int8.read_bytes()
    convert.convert(
        convert.ConvertConfig(
            dataset="mnist",
            model="mlp",
            modes=("int8",),
            artifacts=str(root),
            num_calibration=10,
            data_root=str(data_root),
            cache_dir=str(cache),
        )
    )
    pipeline.pipeline(study_config(root, data_root, cache))
    out = capsys.readouterr().out
    assert "[mnist_mlp] convert: its files changed since it wrote them" in out
    assert int8.read_bytes() == ours  # the study's own calibration again (so its measurements still hold)
    assert _ran(out) == {"convert", "report"}


def test_evaluation_only_settings_do_not_retrain(study, data_root, cache, capsys):
    root = study
    later = dict(sweep=False, sensitivity=False, mixed_budgets=(), micro=False, generalize=False)
    pipeline.pipeline(study_config(root, data_root, cache, max_eval_examples=150, **later))
    ran = _ran(capsys.readouterr().out)
    assert "evaluate" in ran and "train" not in ran


def test_a_model_trained_outside_is_adopted_only_when_made_by_this_code(study, data_root, cache):
    from tfq import data
    from tfq.core import artifacts
    from tfq.core.backend import versions

    root = study
    run = root / "mnist_mlp"
    made = json.loads((run / artifacts.TRAIN_JSON).read_text())
    tc = pipeline.train_config(study_config(root, data_root, cache), "mnist", "mlp")
    source = {
        "data": data.source_key("mnist", str(data_root), str(cache)),
        "versions": versions(),
        "code": artifacts.code_digest(),
    }
    assert made["code"] == artifacts.code_digest()
    assert pipeline.adoptable(made, run / artifacts.MODEL_FILE, tc, source)
    assert not pipeline.adoptable({**made, "code": "older tfq code"}, run / artifacts.MODEL_FILE, tc, source)
    assert not pipeline.adoptable(
        {k: v for k, v in made.items() if k != "code"}, run / artifacts.MODEL_FILE, tc, source
    )  # train.json from before it recorded the code


def test_flagfiles_feed_training_and_reject_unknown_flags(tmp_path):
    tc = pipeline.train_config(pipeline.PipelineConfig(), "mnist", "cnn")
    assert tc.epochs == 10 and tc.cnn_widths == (32, 64, 128)
    (tmp_path / "mnist_cnn.cfg").write_text("# comment\n--epochs=3\n--bogus=1\n")
    with pytest.raises(TfqError, match="mnist_cnn.cfg: Unknown command line flag 'bogus'"):
        pipeline.train_config(pipeline.PipelineConfig(flags_dir=str(tmp_path)), "mnist", "cnn")


def test_runs_name_the_study_s_pairs_in_place_of_the_cross_product():
    """The study's flagfile lists its runs: the MLP on every dataset, the MNIST CNN, ResNet-8 and
    MobileNet on CIFAR-10."""
    assert pipeline.pairs(pipeline.PipelineConfig(datasets=("mnist", "cifar10"), models=("mlp", "cnn"))) == [
        ("mnist", "mlp"),
        ("mnist", "cnn"),
        ("cifar10", "mlp"),
        ("cifar10", "cnn"),
    ]
    given = [
        line.split("=", 1)[1] for line in Path("flags/study.cfg").read_text().splitlines() if line.startswith("--runs=")
    ]
    study = pipeline.pairs(pipeline.PipelineConfig(runs=tuple(given[0].split(","))))
    assert ("cifar10", "resnet8") in study and ("cifar10", "mobilenet") in study and ("mnist", "cnn") in study
    assert ("cifar10", "cnn") not in study and ("fashion_mnist", "cnn") not in study  # left out for time
    assert all(pipeline.train_config(pipeline.PipelineConfig(), d, m).model == m for d, m in study)


def test_the_first_look_is_the_no_flag_default_and_says_so_in_the_report():
    """`python -m tfq.pipeline` with no flags: the first look's settings, in its own folder; a flag the user
    gives wins over the preset; the full preset changes nothing; the report's note names what was cut."""
    look = pipeline.with_preset(pipeline.PipelineConfig(preset="first_look"), given=set())
    assert look.artifacts == "artifacts/first_look" and look.epochs == 2 and look.micro_examples == 100
    assert pipeline.train_config(look, "mnist", "cnn").epochs == 2  # the flagfile's 10, overridden
    mine = pipeline.with_preset(pipeline.PipelineConfig(preset="first_look", epochs=5), given={"epochs"})
    assert mine.epochs == 5 and mine.max_train_examples == 6_000 and mine.max_eval_examples == 2_000
    full = pipeline.PipelineConfig(preset="full")
    assert pipeline.with_preset(full, given=set()) == full and pipeline.preset_note(full) is None
    note = pipeline.preset_note(look)
    assert note.startswith("**A first look** (`--preset=first_look`") and "--epochs=2" in note
    assert "--mixed_budgets=1.0" in note and "not the study's" in note
    with pytest.raises(TfqError, match="--preset=quick: choose one of: first_look, full"):
        pipeline.with_preset(pipeline.PipelineConfig(preset="quick"), given=set())
