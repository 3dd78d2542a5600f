"""Ship a flatbuffer to an app: `python -m tfq.export --dataset=mnist --model=cnn --mode=int8 --format=c`.

Formats (`FORMATS`):
- c: `<run>/export/<mode>_c/<stem>.h` and `<stem>.c`: the flatbuffer as a 16-byte aligned `const`
  byte array and its length, the input and output shapes with their scale and zero point, the
  label names and the pixel scaling, ready to compile into a TFLite Micro app
  (`tflite::GetModel(tfq_<stem>_model)`). C11, so it builds with `cc` and with a C++ compiler.
  A file with weights at `Buffer.offset` (ai-edge-quantizer's) gets them moved inline first
  (`flatbuffer.inline_buffers`): TFLite Micro loads the offset layout but computes wrong classes.
- android: `<run>/export/<mode>_android/`: the `.tflite`, `labels.txt` (one label per line, in
  output order) and `model.json` (input shape, dtype, scale, zero point and the pixel scaling;
  output dtype, scale, zero point). TFLite metadata is not embedded: its writer
  (`tflite-support` 0.4.4, the last) needs protobuf<4 and does not resolve beside TensorFlow 2.21.

An app turns a pixel p (0..255) into the model's float input `x = p * pixel_scale + pixel_offset`
(the run's input range: 1/255 and 0 for [0, 1], 1 and 0 for a model that takes 0..255), then for an
integer input `q = round(x / scale) + zero_point`; scores come back as `(q - zero_point) * scale`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil

import numpy as np
from absl import flags

from tfq import data, models
from tfq.core import artifacts, cli
from tfq.core.artifacts import TfqError
from tfq.runtimes import flatbuffer

FORMATS = ("c", "android")
ALIGNMENT = 16  # TFLite Micro reads tensors in place from the array: keep it aligned


def files(mode: str, fmt: str) -> list[str]:
    """The files an export of `mode`.tflite in format `fmt` writes into its folder."""
    shipped = [f"{mode}.h", f"{mode}.c"] if fmt == "c" else [f"{mode}.tflite", "labels.txt", "model.json"]
    return [*shipped, "export.json"]


@dataclasses.dataclass
class ExportConfig(cli.Run):
    mode: str = cli.setting("int8", "Which flatbuffer of the run folder: its file stem (int8, qat_int8, ...).")
    format: str = cli.setting("c", f"One of {', '.join(FORMATS)}.")


def pixel_scaling(input_range) -> tuple[float, float]:
    """(pixel_scale, pixel_offset) of `tfq.data.scale` for the run's input range."""
    lo, hi = cli.pixel_range(input_range)
    return (hi - lo) / 255.0, lo


def describe(fb: flatbuffer.Flatbuffer, spec: data.Dataset, input_range=None) -> dict:
    """What an app needs to feed the model and read its answer, from the flatbuffer itself."""
    pixel_scale, pixel_offset = pixel_scaling(input_range)
    io = fb.io()
    inp, out = io["inputs"][0], io["outputs"][0]
    return {
        "input": {
            "shape": inp["shape"],
            "dtype": inp["dtype"],
            "scale": inp["scale"],
            "zero_point": inp["zero_point"],
            "pixel_scale": pixel_scale,
            "pixel_offset": pixel_offset,
            "input_range": list(cli.pixel_range(input_range)),
            "pixels": "uint8 0..255, rows x columns x channels, as the training images",
        },
        "output": {
            "shape": out["shape"],
            "dtype": out["dtype"],
            "scale": out["scale"],
            "zero_point": out["zero_point"],
            "meaning": "class scores (softmax), in label order",
        },
        "labels": list(spec.labels),
        "size_bytes": fb.size_bytes,
    }


def _identifier(text: str) -> str:
    return re.sub(r"\W", "_", text).strip("_").lower()


def _c_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _c_float(v) -> str:
    """A C float literal: `1.0f`, never `1f` (which C does not take)."""
    if v is None:
        return "0.0f"
    text = f"{float(v):.9g}"
    return text + ("f" if any(c in text for c in ".e") else ".0f")


def c_sources(blob: bytes, info: dict, stem: str) -> tuple[str, str]:
    """The header and the source of a C array for `blob`, with `info` (from `describe`) as constants."""
    name, macro = f"tfq_{_identifier(stem)}", _identifier(stem).upper()
    i, o = info["input"], info["output"]
    header = f"""/* {stem}: a TFLite flatbuffer for TFLite Micro, written by tfq.export. {len(blob):,d} bytes.
 * Input: pixels 0..255 times TFQ_{macro}_PIXEL_SCALE plus TFQ_{macro}_PIXEL_OFFSET, then (integer inputs)
 * divided by the input scale, rounded and offset by the input zero point.
 * Output: (q - zero point) * scale = class scores. */
#ifndef TFQ_{macro}_H_
#define TFQ_{macro}_H_

#ifdef __cplusplus
extern "C" {{
#endif

#define TFQ_{macro}_ALIGNMENT {ALIGNMENT}
#define TFQ_{macro}_INPUT_DIMS {len(i["shape"])}
#define TFQ_{macro}_OUTPUT_DIMS {len(o["shape"])}
#define TFQ_{macro}_NUM_CLASSES {len(info["labels"])}
#define TFQ_{macro}_INPUT_SCALE {_c_float(i["scale"])}
#define TFQ_{macro}_INPUT_ZERO_POINT {int(i["zero_point"] or 0)}
#define TFQ_{macro}_OUTPUT_SCALE {_c_float(o["scale"])}
#define TFQ_{macro}_OUTPUT_ZERO_POINT {int(o["zero_point"] or 0)}
#define TFQ_{macro}_PIXEL_SCALE {_c_float(i["pixel_scale"])}
#define TFQ_{macro}_PIXEL_OFFSET {_c_float(i["pixel_offset"])}
#define TFQ_{macro}_INPUT_TYPE "{i["dtype"]}"
#define TFQ_{macro}_OUTPUT_TYPE "{o["dtype"]}"

extern const unsigned char {name}_model[];
extern const unsigned int {name}_model_len;
extern const int {name}_input_shape[TFQ_{macro}_INPUT_DIMS];
extern const int {name}_output_shape[TFQ_{macro}_OUTPUT_DIMS];
extern const char *const {name}_labels[TFQ_{macro}_NUM_CLASSES];

#ifdef __cplusplus
}}
#endif

#endif /* TFQ_{macro}_H_ */
"""
    rows = [", ".join(f"0x{b:02x}" for b in blob[k : k + 12]) for k in range(0, len(blob), 12)]
    source = (
        f'#include "{stem}.h"\n\n'
        "#ifdef __cplusplus\n#define TFQ_ALIGNED(n) alignas(n)\n#else\n#define TFQ_ALIGNED(n) _Alignas(n)\n#endif\n\n"
        f"TFQ_ALIGNED({ALIGNMENT}) const unsigned char {name}_model[] = {{\n  " + ",\n  ".join(rows) + "\n};\n"
        f"const unsigned int {name}_model_len = {len(blob)};\n"
        f"const int {name}_input_shape[TFQ_{macro}_INPUT_DIMS] = {{{', '.join(map(str, i['shape']))}}};\n"
        f"const int {name}_output_shape[TFQ_{macro}_OUTPUT_DIMS] = {{{', '.join(map(str, o['shape']))}}};\n"
        f"const char *const {name}_labels[TFQ_{macro}_NUM_CLASSES] = {{"
        + ", ".join(_c_string(label) for label in info["labels"])
        + "};\n"
    )
    return header, source


def export(cfg: ExportConfig) -> dict:
    """Write the chosen format's files for one of a run's flatbuffers; returns the manifest."""
    data.get(cfg.dataset, cfg.image_size)  # a known dataset; its run's shape once the run (or an import) is there
    if cfg.format not in FORMATS:
        raise TfqError(f"unknown format {cfg.format!r}; choose one of: {', '.join(FORMATS)}")
    run = models.run_of(cfg)
    spec = data.spec_of(cfg)
    pixels = models.input_range(run, cfg.input_range)
    path = run / f"{cfg.mode}.tflite"
    if not path.is_file():
        raise TfqError(
            f"no {path}; make it with: python -m tfq.convert --dataset={cfg.dataset} "
            f"--model={cfg.model} --mode={cfg.mode} (or the pipeline)"
        )
    blob = path.read_bytes()
    fb = flatbuffer.read(blob, label=str(path))
    info = describe(fb, spec, pixels)
    if len(info["labels"]) != int(np.prod(info["output"]["shape"][1:])):
        raise TfqError(f"{path} outputs {info['output']['shape']} scores for {len(info['labels'])} labels")
    folder = artifacts.check_writable(run / "export") / f"{cfg.mode}_{cfg.format}"
    manifest = {
        "format": cfg.format,
        "mode": cfg.mode,
        "dataset": cfg.dataset,
        "model": cfg.model,
        "tflite": str(path),
        "tflite_sha256": artifacts.sha256(path),
        **info,
    }
    # the folder is written aside, then swapped in whole: an app never picks up half an export
    staging = folder.with_name(f"{artifacts.TEMP_PREFIX}{folder.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        if cfg.format == "c":
            if fb.offset_buffers:  # TFLite Micro misreads weights stored past the flatbuffer (tfq.micro)
                blob = flatbuffer.inline_buffers(blob)
                manifest["buffers_inlined"] = fb.offset_buffers
            manifest["array_sha256"] = hashlib.sha256(blob).hexdigest()
            manifest["array_bytes"] = len(blob)
            header, source = c_sources(blob, info, cfg.mode)
            (staging / f"{cfg.mode}.h").write_text(header)
            (staging / f"{cfg.mode}.c").write_text(source)
        else:
            shutil.copyfile(path, staging / path.name)
            (staging / "labels.txt").write_text("\n".join(info["labels"]) + "\n")
            artifacts.write_json(staging / "model.json", {"model": path.name, **info})
        manifest["files"] = files(cfg.mode, cfg.format)
        artifacts.write_json(staging / "export.json", manifest)
        old = folder.with_name(f"{artifacts.TEMP_PREFIX}{folder.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if folder.exists():
            folder.rename(old)
        staging.rename(folder)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    manifest["folder"] = str(folder)
    return manifest


FLAGS = flags.FLAGS


def _define_flags() -> None:
    cli.define_flags(ExportConfig)


def main(argv):
    del argv
    m = export(cli.config_from_flags(ExportConfig))
    print(
        f"{m['folder']}: {', '.join(m['files'])} ({m['size_bytes']:,d}-byte model, input "
        f"{m['input']['dtype']} {m['input']['shape']}, output {m['output']['dtype']} {m['output']['shape']})"
    )
    print(json.dumps({"input": m["input"], "output": {k: m["output"][k] for k in ("dtype", "scale", "zero_point")}}))


if __name__ == "__main__":
    cli.run(main, _define_flags)
