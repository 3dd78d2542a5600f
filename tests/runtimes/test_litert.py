"""tfq.runtimes.litert: splitting the accuracy pass over processes gives the same outputs in the same order."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from tfq import data
from tfq.runtimes import harness, litert


@pytest.mark.parametrize("mode", ["int16x8", "float32"])
def test_processes_give_the_same_outputs_as_one_interpreter(converted, data_root, cache, mode):
    x, _ = data.to_numpy(data.load("mnist", root=data_root, cache=cache).test, limit=301)
    clf = harness.Classifier(converted[0] / f"{mode}.tflite", batch_size=64)
    prepared = clf.prepare(x)
    alone = clf.invoke_prepared(prepared)
    # 301 images over 3 workers: uneven slices, each with a padded last batch
    split = litert.run_in_processes(clf.content, prepared, processes=3, batch_size=64, xnnpack=clf.xnnpack)
    assert split.dtype == alone.dtype and split.shape == (301, 10)
    np.testing.assert_array_equal(split, alone)
    assert len(np.unique(alone.argmax(1))) > 1  # real, varied outputs, not a constant


def test_batched_interpreter_resizes_a_dynamic_batch(converted):
    content = (converted[0] / "int8.tflite").read_bytes()
    assert litert.batched_interpreter(content, 32).get_input_details()[0]["shape"][0] == 32
    assert litert.batched_interpreter(content, 1).get_input_details()[0]["shape"][0] == 1


def test_a_failing_worker_is_one_clear_error():
    with pytest.raises(litert.LiteRTError, match="worker process failed"):
        litert.run_in_processes(b"not a flatbuffer", np.zeros((4, 28, 28, 1), np.float32), processes=2, batch_size=2)


def test_the_worker_module_loads_without_tensorflow():
    probe = (
        "import importlib.util, sys; spec = importlib.util.spec_from_file_location('w', sys.argv[1]); "
        "spec.loader.exec_module(importlib.util.module_from_spec(spec)); "
        "print(sorted(m for m in ('tensorflow', 'tfq', 'keras') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe, litert.__file__], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
