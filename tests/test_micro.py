"""tfq.micro: every file of a run under TFLite Micro, with LiteRT's answers beside it; the CLI's
table and its bad input."""

from __future__ import annotations

import json

import pytest

from tests.conftest import error_lines
from tfq import micro


@pytest.fixture(scope="module")
def measured(converted, data_root, cache):
    run, _ = converted
    result = micro.micro(
        micro.MicroConfig(
            dataset="mnist",
            model="cnn",
            max_examples=60,
            artifacts=str(run.parent),
            data_root=str(data_root),
            cache_dir=str(cache),
        )
    )
    return run, result, {v["name"]: v for v in result["variants"]}


def test_integer_files_run_and_give_litert_s_classes(measured):
    run, result, by_name = measured
    assert json.loads((run / micro.MICRO_JSON).read_text())["variants"] == json.loads(json.dumps(result["variants"]))
    for name in ("int8", "int16x8", "float32"):
        v = by_name[name]
        assert v["runs"] and v["examples"] == 60 and v["flash_bytes"] == (run / f"{name}.tflite").stat().st_size
        assert v["agreement_with_litert"] == 1.0 and v["accuracy"] == v["litert_accuracy"]
        assert v["vs_litert"]["only_reference_right"] == v["vs_litert"]["only_other_right"] == 0
        assert v["fits"]["64 KB RAM"] == (v["arena_bytes"] <= 64 * 1024)
        assert v["fits"]["256 KB flash"] == (v["flash_bytes"] <= 256 * 1024)
    assert by_name["int8"]["arena_bytes"] < by_name["float32"]["arena_bytes"]  # int8 activations: a quarter
    assert by_name["int8"]["ops"]["CONV_2D"] >= 2


def test_files_it_cannot_run_are_reported_with_the_op(measured):
    _, _, by_name = measured
    for name, op in (("float16", "DEQUANTIZE"), ("aeq_a8w4", "FULLY_CONNECTED"), ("aeq_w4", "DEQUANTIZE")):
        v = by_name[name]
        assert not v["runs"] and v["unsupported_op"] == op and v["error"].startswith(f"TFLite Micro's {op} kernel")
        assert "arena_bytes" not in v and v["fits"]["64 KB RAM"] is None


def test_offset_weights_are_measured_inline_and_as_written(measured):
    _, _, by_name = measured
    v = by_name["aeq_a8w8"]
    assert v["buffers_inlined"]["offset_buffers"] > 0 and v["runs"]
    assert v["agreement_with_litert"] == 1.0  # moved inline, TFLite Micro reads the weights right
    assert v["litert_reference"].startswith("LiteRT run here on the same bytes")
    # as written, this TFLite Micro build misreads them: why the inline copy is what ships
    assert v["as_written"]["examples"] == 60 and v["as_written"]["agreement_with_litert"] < 0.5


def test_saved_litert_classes_are_reused_and_equal_bytes_are_measured_once(converted, data_root, cache, tmp_path):
    import shutil

    from tfq import evaluate

    run, _ = converted
    folder = tmp_path / "mnist_cnn"
    folder.mkdir()
    shutil.copy(run / "int8.tflite", folder / "int8.tflite")
    shutil.copy(run / "aeq_a8w8.tflite", folder / "aeq_a8w8.tflite")
    shutil.copy(run / "int8.tflite", folder / "qat_int8.tflite")  # same bytes under another name
    evaluate.evaluate(
        evaluate.EvalConfig(
            dataset="mnist",
            model="cnn",
            modes=("int8", "aeq_a8w8"),
            artifacts=str(tmp_path),
            latency_runs=1,
            latency_rounds=1,
            data_root=str(data_root),
            cache_dir=str(cache),
        )
    )
    result = micro.micro(
        micro.MicroConfig(
            dataset="mnist",
            model="cnn",
            max_examples=40,
            artifacts=str(tmp_path),
            data_root=str(data_root),
            cache_dir=str(cache),
        )
    )
    by_name = {v["name"]: v for v in result["variants"]}
    assert by_name["int8"]["litert_reference"].startswith("saved by evaluate")
    assert by_name["qat_int8"]["same_bytes_as"] == "int8" and by_name["qat_int8"]["file"].endswith("qat_int8.tflite")
    assert by_name["qat_int8"]["accuracy"] == by_name["int8"]["accuracy"]
    assert by_name["aeq_a8w8"]["buffers_inlined"]["litert_same_classes_as_saved"] is True


def test_a_file_that_fails_while_running_is_reported_not_fatal(converted, data_root, cache, tmp_path, monkeypatch):
    import shutil

    from tfq.runtimes import tflm

    run, _ = converted
    (tmp_path / "mnist_cnn").mkdir()
    shutil.copy(run / "int8.tflite", tmp_path / "mnist_cnn" / "int8.tflite")

    def fails(*_args, **_kw):
        raise tflm.MicroError(
            "a TFLite Micro worker process failed (exit 1): TFLite Micro's CONV_2D kernel (op 2) "
            "fails to invoke: Type INT4 not supported."
        )

    monkeypatch.setattr(tflm, "run_in_processes", fails)
    result = micro.micro(
        micro.MicroConfig(
            dataset="mnist",
            model="cnn",
            max_examples=10,
            artifacts=str(tmp_path),
            data_root=str(data_root),
            cache_dir=str(cache),
        )
    )
    v = result["variants"][0]
    assert not v["runs"] and v["unsupported_op"] == "CONV_2D" and "fails to invoke" in v["error"]


def test_the_cli_prints_the_table_and_names_what_it_cannot_run(run_cli, converted):
    run, _ = converted
    proc = run_cli("micro", f"--artifacts={run.parent}", "--mode=int8,float32", "--max_examples=20")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("TFLite Micro, 20 test images of mnist")
    assert [line.split()[0] for line in lines[2:]] == ["int8", "float32"]
    before = (run / micro.MICRO_JSON).read_bytes()
    proc = run_cli("micro", f"--artifacts={run.parent}", "--mode=float16", "--max_examples=20")
    assert proc.returncode == 1 and len(error_lines(proc.stderr)) == 1
    assert "float16.tflite: TFLite Micro cannot run it: TFLite Micro's DEQUANTIZE kernel" in error_lines(proc.stderr)[0]
    assert (run / micro.MICRO_JSON).read_bytes() == before  # nothing written


@pytest.mark.parametrize(
    "args, message",
    [
        (("--mode=int3",), "unknown mode 'int3'"),
        (("--max_examples=-1",), "--max_examples=-1"),
        (("--dataset=imagenet",), "unknown dataset 'imagenet'"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(run_cli, tmp_path, args, message):
    proc = run_cli("micro", f"--artifacts={tmp_path}", *args, timeout=120)
    assert proc.returncode == 1 and message in error_lines(proc.stderr)[0], proc.stderr[-2000:]
    assert not list(tmp_path.rglob("*.*"))


def test_fits_reads_flash_and_ram_against_each_part():
    assert micro.fits(256 * 1024, 64 * 1024) == {
        "256 KB flash": True,
        "1 MB flash": True,
        "64 KB RAM": True,
        "256 KB RAM": True,
    }
    assert micro.fits(256 * 1024 + 1, None) == {
        "256 KB flash": False,
        "1 MB flash": True,
        "64 KB RAM": None,
        "256 KB RAM": None,
    }
