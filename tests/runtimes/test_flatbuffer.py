"""tfq.runtimes.flatbuffer: weights at Buffer.offset move inline, aligned, with every tensor unchanged."""

from __future__ import annotations

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
