"""Read a .tflite flatbuffer: tensors, dtypes, quantization parameters, ops, weight bytes.

What a quantization mode promises (int8 only, fp16 weights, int16 activations...) is checked
here from the file itself, never assumed from the converter settings that made it. It reads with
the schema that `ai_edge_litert` ships, so it loads without TensorFlow (and a worker process or
a device-side tool can use it). Weights may sit inline (`Buffer.data`) or past the flatbuffer at
`Buffer.offset`/`size`, as files over 2 GB and some quantizers write them; both count.
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from pathlib import Path

import numpy as np

from tfq.core.artifacts import TfqError

_FLOAT_TYPES = {"float32", "float16"}


@dataclasses.dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str  # "int8", "float32", ...
    shape: tuple[int, ...]
    constant: bool  # stored in the file (weights, biases, constant shapes)
    nbytes: int  # bytes stored in the file for this tensor
    scales: tuple[float, ...] = ()
    zero_points: tuple[int, ...] = ()
    quantized_dimension: int = 0

    @property
    def per_channel(self) -> bool:
        return len(self.scales) > 1


@dataclasses.dataclass(frozen=True)
class Op:
    name: str  # builtin name, e.g. "CONV_2D"
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Flatbuffer:
    size_bytes: int
    tensors: tuple[Tensor, ...]
    ops: tuple[Op, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    offset_buffers: int = 0  # buffers stored past the flatbuffer (Buffer.offset) rather than inline

    @property
    def weight_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors if t.constant)

    @property
    def activations(self) -> list[Tensor]:
        return [t for t in self.tensors if not t.constant]

    @property
    def weights(self) -> list[Tensor]:
        """Constant tensors of more than a handful of values (kernels and biases, not shapes)."""
        return [t for t in self.tensors if t.constant and int(np.prod(t.shape or (1,))) > 8]

    def op_counts(self) -> dict[str, int]:
        return dict(Counter(op.name for op in self.ops))

    def float_ops(self) -> list[str]:
        """Ops that read or write a float activation: they need a float kernel on the target."""
        out = []
        for op in self.ops:
            touched = [self.tensors[i] for i in (*op.inputs, *op.outputs) if i >= 0]
            if any(t.dtype in _FLOAT_TYPES and not t.constant for t in touched):
                out.append(op.name)
        return out

    def dtypes(self, which: str = "all") -> set[str]:
        pick = {"all": self.tensors, "activations": self.activations, "weights": self.weights}[which]
        return {t.dtype for t in pick}

    def io(self) -> dict:
        """Input and output dtypes with their quantization (scale, zero point), for manifests."""

        def describe(i):
            t = self.tensors[i]
            return {
                "name": t.name,
                "dtype": t.dtype,
                "shape": list(t.shape),
                "scale": t.scales[0] if t.scales else None,
                "zero_point": t.zero_points[0] if t.zero_points else None,
            }

        return {"inputs": [describe(i) for i in self.inputs], "outputs": [describe(i) for i in self.outputs]}

    def summary(self) -> dict:
        return {
            "size_bytes": self.size_bytes,
            "weight_bytes": self.weight_bytes,
            "weight_dtypes": sorted(self.dtypes("weights")),
            "activation_dtypes": sorted(self.dtypes("activations")),
            "ops": self.op_counts(),
            "float_ops": sorted(set(self.float_ops())),
            "per_channel_weights": any(t.per_channel for t in self.weights),
            **self.io(),
        }


def _names(enum_cls) -> dict[int, str]:
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_") and isinstance(v, int)}


def _at_offset(buffer) -> bool:
    return bool(buffer.offset and buffer.offset > 1)  # offset 1 marks 'none'


def _stored_bytes(buffer) -> int:
    """Bytes a buffer holds, inline or at an offset past the flatbuffer."""
    if buffer.data is not None and len(buffer.data):
        return len(buffer.data)
    return int(buffer.size) if _at_offset(buffer) else 0


ALIGN = 16  # the schema's force_align for Buffer.data: kernels read weights in place


def inline_buffers(blob: bytes, label: str = "model bytes") -> bytes:
    """The same model with every `Buffer.offset` weight moved inline into `Buffer.data`, each
    16-byte aligned as the schema asks: the layout TFLite Micro reads correctly (it misreads
    ai-edge-quantizer's offset buffers; see tfq.micro). Tensors and their bytes are unchanged."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as fb

    class Aligned(flatbuffers.Builder):
        def CreateNumpyVector(self, x):  # noqa: N802 - flatbuffers' name
            if x.dtype != np.uint8:
                return super().CreateNumpyVector(x)
            self.StartVector(1, x.size, ALIGN)
            self.head -= x.size
            self.Bytes[self.head : self.head + x.size] = x.tobytes()
            self.vectorNumElems = x.size
            return self.EndVector()

    model = fb.ModelT.InitFromObj(fb.Model.GetRootAsModel(blob, 0))
    for b in model.buffers:
        if _at_offset(b):
            if b.offset + b.size > len(blob):
                raise TfqError(f"{label} is a damaged TFLite flatbuffer (a buffer runs past its end)")
            b.data, b.offset, b.size = np.frombuffer(blob[b.offset : b.offset + b.size], np.uint8), 0, 0
    builder = Aligned(len(blob) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    out = bytes(builder.Output())
    packed = fb.Model.GetRootAsModel(out, 0)
    for i in range(packed.BuffersLength()):
        data = packed.Buffers(i)
        if data.DataLength() and data._tab.Vector(data._tab.Offset(4)) % ALIGN:  # noqa: SLF001
            raise TfqError(f"buffer {i} is not {ALIGN}-byte aligned after inlining")  # pragma: no cover
    return out


def read(source: str | os.PathLike | bytes, label: str | None = None) -> Flatbuffer:
    """Parse a .tflite file (path or bytes); a clear TfqError, naming `label` (default: the path),
    if it is not one."""
    from ai_edge_litert import schema_py_generated as fb

    label = label or ("model bytes" if isinstance(source, (bytes, bytearray)) else str(source))
    if isinstance(source, (bytes, bytearray)):
        buf = bytes(source)
    else:
        try:
            buf = Path(source).read_bytes()
        except FileNotFoundError:
            raise TfqError(f"{label} does not exist") from None
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise TfqError(f"{label} is not a TFLite flatbuffer (no TFL3 identifier)")
    try:
        model = fb.ModelT.InitFromObj(fb.Model.GetRootAsModel(buf, 0))
        dtype_names = {k: v.lower() for k, v in _names(fb.TensorType).items()}
        op_names = _names(fb.BuiltinOperator)
        graph = model.subgraphs[0]
        tensors = []
        for t in graph.tensors:
            nbytes = _stored_bytes(model.buffers[t.buffer]) if t.buffer < len(model.buffers) else 0
            q = t.quantization
            scales = tuple(float(s) for s in q.scale) if q is not None and q.scale is not None else ()
            zps = tuple(int(z) for z in q.zeroPoint) if q is not None and q.zeroPoint is not None else ()
            tensors.append(
                Tensor(
                    name=t.name.decode() if isinstance(t.name, bytes) else str(t.name),
                    dtype=dtype_names.get(t.type, str(t.type)),
                    shape=tuple(int(d) for d in (t.shape if t.shape is not None else ())),
                    constant=nbytes > 0,
                    nbytes=nbytes,
                    scales=scales,
                    zero_points=zps,
                    quantized_dimension=int(q.quantizedDimension) if q is not None else 0,
                )
            )
        ops = []
        for op in graph.operators:
            code = model.operatorCodes[op.opcodeIndex]
            builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
            name = op_names.get(builtin, str(builtin))
            if name == "CUSTOM" and code.customCode:
                name = f"CUSTOM:{code.customCode.decode()}"
            ops.append(Op(name, tuple(int(i) for i in op.inputs), tuple(int(i) for i in op.outputs)))
        return Flatbuffer(
            len(buf),
            tuple(tensors),
            tuple(ops),
            tuple(int(i) for i in graph.inputs),
            tuple(int(i) for i in graph.outputs),
            sum(1 for b in model.buffers if _at_offset(b)),
        )
    except TfqError:
        raise
    except Exception as e:  # noqa: BLE001 - a truncated flatbuffer fails anywhere inside the parser
        raise TfqError(f"{label} is a damaged TFLite flatbuffer ({type(e).__name__})") from None
