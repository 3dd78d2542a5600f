"""The LiteRT harness: run any classifier .tflite on images the way a device app would.

Inputs are scaled exactly as in training (`data.scale`), then quantized with the model's own
input scale and zero point when the model takes int8, uint8 or int16; outputs are dequantized
with the output's. The test set goes through in fixed-size batches (`resize_tensor_input`) when
the graph allows it, one image at a time otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from tfq import data, inspect
from tfq.artifacts import TfqError

_INT_TYPES = {np.dtype(np.int8), np.dtype(np.uint8), np.dtype(np.int16)}


def quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    """Float input -> the model's input dtype, with its scale and zero point."""
    dtype = np.dtype(detail["dtype"])
    if dtype not in _INT_TYPES:
        return x.astype(dtype, copy=False)
    scale, zero_point = detail["quantization"]
    if not scale:
        raise TfqError(f"input {detail['name']!r} is {dtype} but has no quantization scale")
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, detail: dict) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    if dtype not in _INT_TYPES:
        return q.astype(np.float32, copy=False)
    scale, zero_point = detail["quantization"]
    return (q.astype(np.float32) - zero_point) * scale


class Classifier:
    """One .tflite image classifier in a LiteRT interpreter."""

    def __init__(self, model: str | os.PathLike | bytes, *, threads: int = 1, batch_size: int = 256,
                 input_shape: tuple[int, ...] | None = None, num_classes: int | None = None):
        content = model if isinstance(model, (bytes, bytearray)) else _read(model)
        self.label = "model bytes" if isinstance(model, (bytes, bytearray)) else str(model)
        self.flatbuffer = inspect.read(content)
        self.content, self.threads = bytes(content), threads
        self.interpreter = self._interpreter()
        inputs, outputs = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise TfqError(f"{self.label} is not an image classifier: it has {len(inputs)} inputs "
                           f"and {len(outputs)} outputs (expected one image in, one score vector out)")
        self.input, self.output = inputs[0], outputs[0]
        shape = tuple(int(d) for d in self.input["shape"])
        if len(shape) != 4 or len(self.output["shape"]) != 2:
            raise TfqError(f"{self.label} is not an image classifier: input shape {list(shape)}, "
                           f"output shape {list(self.output['shape'])}")
        if input_shape is not None and shape[1:] != tuple(input_shape):
            raise TfqError(f"{self.label} takes images of shape {list(shape[1:])}, "
                           f"but the dataset's are {list(input_shape)}")
        if num_classes is not None and int(self.output["shape"][-1]) != num_classes:
            raise TfqError(f"{self.label} outputs {int(self.output['shape'][-1])} scores, "
                           f"but the dataset has {num_classes} classes")
        self.image_shape = shape[1:]
        self.batch_size = self._resize(batch_size)

    def _interpreter(self) -> Interpreter:
        try:
            interpreter = Interpreter(model_content=self.content, num_threads=self.threads)
            interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise TfqError(f"{self.label}: LiteRT cannot load it ({str(e).splitlines()[0][:200]})") from None
        return interpreter

    def _resize(self, batch_size: int) -> int:
        """Batch the graph if it allows it (dynamic batch dimension); otherwise stay at 1."""
        signature = self.input.get("shape_signature", self.input["shape"])
        if batch_size <= 1 or int(signature[0]) != -1:
            return int(self.input["shape"][0])
        try:
            self.interpreter.resize_tensor_input(self.input["index"], [batch_size, *self.image_shape])
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError):
            self.interpreter = self._interpreter()
            return int(self.input["shape"][0])
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        return batch_size

    def prepare(self, images: np.ndarray) -> np.ndarray:
        """uint8 images -> the model's input tensor values (scaled, then quantized if it is integer)."""
        return quantize(data.scale(images).numpy(), self.input)

    def invoke_prepared(self, x: np.ndarray) -> np.ndarray:
        """Raw outputs for already prepared inputs, in batches of `batch_size` (last one padded)."""
        b, n = self.batch_size, len(x)
        out = np.empty((n, int(self.output["shape"][-1])), np.dtype(self.output["dtype"]))
        set_input, invoke = self.interpreter.set_tensor, self.interpreter.invoke
        get_output, i_in, i_out = self.interpreter.get_tensor, self.input["index"], self.output["index"]
        for start in range(0, n, b):
            chunk = x[start:start + b]
            if len(chunk) < b:
                chunk = np.concatenate([chunk, np.zeros((b - len(chunk), *chunk.shape[1:]), chunk.dtype)])
            set_input(i_in, chunk)
            invoke()
            out[start:start + b] = get_output(i_out)[: n - start]
        return out

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Class scores (dequantized) for uint8 images."""
        return dequantize(self.invoke_prepared(self.prepare(images)), self.output)


def _read(path: str | os.PathLike) -> bytes:
    try:
        return Path(path).read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        raise TfqError(f"{path} does not exist") from None
