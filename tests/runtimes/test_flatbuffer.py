"""tfq.runtimes.flatbuffer: what a file holds, read from the file; bad files in one line; weights at
Buffer.offset move inline, aligned, with every tensor unchanged."""

from __future__ import annotations

import pytest

from tfq.core.artifacts import TfqError
from tfq.runtimes import flatbuffer


def test_inlining_offset_buffers_keeps_every_tensor_and_aligns_the_weights(converted):
    from ai_edge_litert import schema_py_generated as schema

    run, _ = converted
    blob = (run / "aeq_a8w8.tflite").read_bytes()
    before = flatbuffer.read(blob)
    assert before.offset_buffers > 0  # ai-edge-quantizer writes its weights past the flatbuffer
    inline = flatbuffer.inline_buffers(blob)
    after = flatbuffer.read(inline)
    assert after.offset_buffers == 0 and after.ops == before.ops and after.tensors == before.tensors
    old = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(blob, 0))
    new = schema.Model.GetRootAsModel(inline, 0)
    moved = 0
    for i, b in enumerate(old.buffers):
        if b.offset and b.offset > 1:
            data = new.Buffers(i)
            start = data._tab.Vector(data._tab.Offset(4))  # noqa: SLF001
            assert start % flatbuffer.ALIGN == 0
            assert inline[start : start + data.DataLength()] == blob[b.offset : b.offset + b.size]
            moved += 1
    assert moved == before.offset_buffers
    assert flatbuffer.read(flatbuffer.inline_buffers(inline)).tensors == before.tensors  # nothing left to move


def test_reading_a_file_gives_its_ops_tensor_types_scales_and_io(tiny):
    f32, i8 = flatbuffer.read(tiny.blobs["float32"]), flatbuffer.read(tiny.blobs["int8"])
    assert f32.size_bytes == len(tiny.blobs["float32"]) and i8.size_bytes == len(tiny.blobs["int8"])
    assert {"CONV_2D", "FULLY_CONNECTED"} <= set(f32.op_counts())
    assert f32.dtypes("weights") == f32.dtypes("activations") == {"float32"}
    assert i8.dtypes("activations") == {"int8"} and "int8" in i8.dtypes("weights")
    conv = next(i8.tensors[op.inputs[1]] for op in i8.ops if op.name == "CONV_2D")
    assert conv.per_channel and len(conv.scales) == 8 and set(conv.zero_points) == {0}  # 8 filters, symmetric
    io = i8.io()
    assert io["inputs"][0]["dtype"] == "int8" and io["inputs"][0]["shape"] == [1, 28, 28, 1]
    assert io["outputs"][0]["shape"] == [1, 10] and io["outputs"][0]["scale"] > 0
    assert i8.float_ops() == [] and f32.float_ops()
    assert i8.weight_bytes < f32.weight_bytes / 3  # int8 kernels: a quarter of float32's, biases aside


def test_what_is_not_a_flatbuffer_is_one_line_naming_it(tmp_path):
    (tmp_path / "bad.tflite").write_bytes(b"\x00" * 64)
    for source, message in [
        (tmp_path / "bad.tflite", "bad.tflite is not a TFLite flatbuffer"),
        (tmp_path / "none.tflite", "none.tflite does not exist"),
        (b"TFL", "model bytes is not a TFLite flatbuffer"),
    ]:
        with pytest.raises(TfqError, match=message):
            flatbuffer.read(source)
