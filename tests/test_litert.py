"""tfq.litert: splitting the accuracy pass over processes gives the same outputs in the same order."""

from __future__ import annotations

import numpy as np
import pytest

from tfq import data, evaluate, litert


@pytest.mark.parametrize("mode", ["int16x8", "float32"])
def test_processes_give_the_same_outputs_as_one_interpreter(converted, data_root, cache, mode):
    x, _ = data.to_numpy(data.load("mnist", root=data_root, cache=cache).test, limit=301)
    clf = evaluate.Classifier(converted[0] / f"{mode}.tflite", batch_size=64)
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
