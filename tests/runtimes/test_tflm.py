"""tfq.runtimes.tflm: the smallest arena is found by real loads, TFLite Micro's failures become one line naming
the op, and worker processes give the same outputs as one interpreter."""

from __future__ import annotations

import numpy as np
import pytest

from tfq.runtimes import harness, tflm


def test_the_smallest_arena_runs_a_real_image_and_sixteen_bytes_less_does_not(converted, data_root, cache):
    from tfq import data

    run, _ = converted
    blob = (run / "int8.tflite").read_bytes()
    images, _ = data.to_numpy(data.load("mnist", root=data_root, cache=cache, max_eval=1).test)
    example = harness.Classifier(blob).prepare(images)
    arena, recorded = tflm.smallest_arena(blob, example)
    assert arena % tflm.ALIGN == 0 and 4_000 < arena < 1_000_000
    assert tflm.runs_in_child(blob, arena, example) and not tflm.runs_in_child(blob, arena - tflm.ALIGN, example)
    assert recorded["total"] == recorded["head"] + recorded["tail"] and abs(recorded["total"] - arena) < 4096


@pytest.mark.parametrize("mode, op", [("float16", "DEQUANTIZE"), ("dynamic", None), ("aeq_a8w4", "FULLY_CONNECTED")])
def test_what_tflite_micro_lacks_is_one_line_naming_the_op(converted, mode, op):
    run, _ = converted
    with pytest.raises(tflm.MicroError) as e:
        tflm.smallest_arena((run / f"{mode}.tflite").read_bytes())
    assert e.value.kind == "unsupported" and "\n" not in str(e.value)
    assert e.value.op == op if op else e.value.op in ("CONV_2D", "FULLY_CONNECTED")
    assert str(e.value).startswith(f"TFLite Micro's {e.value.op} kernel (op {e.value.index}) fails to prepare")


def test_worker_processes_give_the_outputs_of_one_interpreter(converted, data_root, cache):
    from tfq import data

    run, _ = converted
    blob = (run / "int8.tflite").read_bytes()
    images, _ = data.to_numpy(data.load("mnist", root=data_root, cache=cache, max_eval=30).test)
    x = harness.Classifier(blob).prepare(images)
    one = tflm.run(tflm.build(blob, tflm.generous_arena(blob)), x)
    split = tflm.run_in_processes(blob, tflm.smallest_arena(blob, x[:1])[0], x, processes=3)
    assert one.dtype == np.int8 and one.shape == (30, 10) and np.array_equal(one, split)


def test_a_failing_worker_is_a_micro_error_with_tflite_micros_reason(converted):
    run, _ = converted
    blob = (run / "int8.tflite").read_bytes()
    with pytest.raises(tflm.MicroError, match="TFLite Micro worker process failed .*: the tensor arena is too small"):
        tflm.run_in_processes(blob, 1_000, np.zeros((4, 28, 28, 1), np.int8), processes=2)


def test_a_load_that_fails_or_crashes_in_the_child_is_one_line(converted, tmp_path):
    run, _ = converted
    with pytest.raises(tflm.MicroError) as e:
        tflm.check(b"TFL3" * 16, tflm.GENEROUS_ARENA)  # not a model: TFLite Micro rejects or crashes
    assert e.value.kind == "other" and "\n" not in str(e.value)
    assert not tflm.runs_in_child((run / "int8.tflite").read_bytes(), 64)


@pytest.mark.parametrize(
    "log, kind, op, index",
    [
        (
            "conv.cc:12 Hybrid models are not supported on TFLite Micro.\nNode CONV_2D (number 3) failed to prepare "
            "with status 1\n",
            "unsupported",
            "CONV_2D",
            3,
        ),
        ("Didn't find op for builtin opcode 'GELU' version '1'\n", "unsupported", "GELU", None),
        ("Failed to resize buffer. Requested: 50176, available 43400, missing: 6776\n", "arena", None, None),
        ("something new\n", "other", None, None),
    ],
)
def test_reasons_are_read_from_tflite_micros_log(log, kind, op, index):
    e = tflm.reason(log)
    assert (e.kind, e.op, e.index) == (kind, op, index)
    if op == "CONV_2D":
        assert (
            str(e) == "TFLite Micro's CONV_2D kernel (op 3) fails to prepare: Hybrid models are not supported on "
            "TFLite Micro."
        )
