"""tfq.export: the C array compiles with the system compiler and holds the file's bytes and the
manifest's constants; the Android bundle; bad input."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from tests.conftest import error_lines
from tfq import export
from tfq.runtimes import flatbuffer

PROGRAM = r"""
#include <stdint.h>
#include <stdio.h>
#include "{stem}.h"

int main(int argc, char **argv) {{
  FILE *f = fopen(argv[1], "wb");
  fwrite(tfq_{ident}_model, 1, tfq_{ident}_model_len, f);
  fclose(f);
  printf("{{\"aligned\": %d, \"len\": %u, \"input_shape\": [", (int)((uintptr_t)tfq_{ident}_model % 16 == 0),
         tfq_{ident}_model_len);
  for (int i = 0; i < TFQ_{macro}_INPUT_DIMS; ++i) printf(i ? ", %d" : "%d", tfq_{ident}_input_shape[i]);
  printf("], \"output_shape\": [");
  for (int i = 0; i < TFQ_{macro}_OUTPUT_DIMS; ++i) printf(i ? ", %d" : "%d", tfq_{ident}_output_shape[i]);
  printf("], \"input_scale\": %.9g, \"input_zero_point\": %d, \"output_scale\": %.9g, \"output_zero_point\": %d, "
         "\"pixel_scale\": %.9g, \"input_type\": \"%s\", \"labels\": [",
         TFQ_{macro}_INPUT_SCALE, TFQ_{macro}_INPUT_ZERO_POINT, TFQ_{macro}_OUTPUT_SCALE,
         TFQ_{macro}_OUTPUT_ZERO_POINT, TFQ_{macro}_PIXEL_SCALE, TFQ_{macro}_INPUT_TYPE);
  for (int i = 0; i < TFQ_{macro}_NUM_CLASSES; ++i) printf(i ? ", \"%s\"" : "\"%s\"", tfq_{ident}_labels[i]);
  printf("]}}\n");
  return 0;
}}
"""


@pytest.mark.skipif(shutil.which("cc") is None, reason="no system C compiler")
def test_the_c_array_compiles_and_holds_the_file_and_its_constants(converted, tmp_path):
    run, _ = converted
    m = export.export(
        export.ExportConfig(dataset="mnist", model="cnn", mode="int8", format="c", artifacts=str(run.parent))
    )
    folder = run / "export" / "int8_c"
    assert sorted(p.name for p in folder.iterdir()) == ["export.json", "int8.c", "int8.h"]
    assert sorted(export.files("int8", "c")) == ["export.json", "int8.c", "int8.h"]
    (tmp_path / "main.c").write_text(PROGRAM.format(stem="int8", ident="int8", macro="INT8"))
    build = subprocess.run(
        [
            "cc",
            "-std=c11",
            "-Wall",
            "-Werror",
            f"-I{folder}",
            str(tmp_path / "main.c"),
            str(folder / "int8.c"),
            "-o",
            str(tmp_path / "prog"),
        ],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr
    ran = subprocess.run([str(tmp_path / "prog"), str(tmp_path / "bytes.tflite")], capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    got = json.loads(ran.stdout)
    assert (tmp_path / "bytes.tflite").read_bytes() == (run / "int8.tflite").read_bytes()
    assert got["aligned"] == 1 and got["len"] == m["size_bytes"] == (run / "int8.tflite").stat().st_size
    io = flatbuffer.read(run / "int8.tflite").io()
    assert got["input_shape"] == io["inputs"][0]["shape"] == m["input"]["shape"] == [1, 28, 28, 1]
    assert got["output_shape"] == m["output"]["shape"] == [1, 10]
    assert got["input_scale"] == pytest.approx(m["input"]["scale"], rel=1e-7)
    assert got["input_zero_point"] == m["input"]["zero_point"] == io["inputs"][0]["zero_point"]
    assert got["output_scale"] == pytest.approx(m["output"]["scale"], rel=1e-7)
    assert got["output_zero_point"] == m["output"]["zero_point"]
    assert got["pixel_scale"] == pytest.approx(1 / 255) and got["input_type"] == "int8"
    assert got["labels"] == list("0123456789")


@pytest.mark.skipif(shutil.which("c++") is None, reason="no system C++ compiler")
def test_the_c_array_also_builds_as_cpp_as_tflite_micro_apps_do(converted, tmp_path):
    run, _ = converted
    export.export(export.ExportConfig(dataset="mnist", model="cnn", mode="int8", format="c", artifacts=str(run.parent)))
    folder = run / "export" / "int8_c"
    shutil.copy(folder / "int8.c", tmp_path / "int8.cc")
    (tmp_path / "main.cc").write_text('#include "int8.h"\nint main() { return tfq_int8_model_len > 0 ? 0 : 1; }\n')
    build = subprocess.run(
        [
            "c++",
            "-std=c++17",
            "-Wall",
            "-Werror",
            f"-I{folder}",
            str(tmp_path / "main.cc"),
            str(tmp_path / "int8.cc"),
            "-o",
            str(tmp_path / "prog"),
        ],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr
    assert subprocess.run([str(tmp_path / "prog")]).returncode == 0


def test_the_android_bundle_has_the_model_labels_and_normalization(converted):
    run, _ = converted
    export.export(
        export.ExportConfig(dataset="mnist", model="cnn", mode="int8", format="android", artifacts=str(run.parent))
    )
    folder = run / "export" / "int8_android"
    assert sorted(p.name for p in folder.iterdir()) == sorted(export.files("int8", "android"))  # what the stage keys
    assert (folder / "int8.tflite").read_bytes() == (run / "int8.tflite").read_bytes()
    assert (folder / "labels.txt").read_text().splitlines() == list("0123456789")
    info = json.loads((folder / "model.json").read_text())
    io = flatbuffer.read(run / "int8.tflite").io()["inputs"][0]
    assert info["input"]["scale"] == io["scale"] and info["input"]["zero_point"] == io["zero_point"]
    assert info["input"]["dtype"] == "int8" and info["model"] == "int8.tflite"


@pytest.mark.parametrize(
    "args, message",
    [
        (("--format=coreml",), "unknown format 'coreml'; choose one of: c, android"),
        (("--mode=int3",), "no "),
        (("--dataset=imagenet",), "unknown dataset 'imagenet'"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(run_cli, tmp_path, args, message):
    proc = run_cli("export", f"--artifacts={tmp_path}", *args, timeout=120)
    assert proc.returncode == 1 and message in error_lines(proc.stderr)[0], proc.stderr[-2000:]
    assert not list(tmp_path.rglob("*.*"))


def test_the_c_array_of_offset_weights_holds_them_inline_for_tflite_micro(converted):
    import hashlib

    run, _ = converted
    blob = (run / "aeq_a8w8.tflite").read_bytes()
    m = export.export(
        export.ExportConfig(dataset="mnist", model="cnn", mode="aeq_a8w8", format="c", artifacts=str(run.parent))
    )
    inline = flatbuffer.inline_buffers(blob)
    assert m["buffers_inlined"] == flatbuffer.read(blob).offset_buffers > 0
    assert m["array_sha256"] == hashlib.sha256(inline).hexdigest() and m["array_bytes"] == len(inline)
    assert f"tfq_aeq_a8w8_model_len = {len(inline)};" in (run / "export" / "aeq_a8w8_c" / "aeq_a8w8.c").read_text()


def test_the_c_sources_hold_every_byte_and_the_constants_an_app_needs(tiny):
    import re

    from tfq import data

    blob = tiny.blobs["int8"]
    info = export.describe(flatbuffer.read(blob), data.get("mnist"))
    assert info["input"]["dtype"] == "int8" and info["input"]["shape"] == [1, 28, 28, 1]
    assert info["labels"] == list(data.get("mnist").labels) and info["size_bytes"] == len(blob)
    header, source = export.c_sources(blob, info, "int8-v2")
    array = source.split("tfq_int8_v2_model[] = {")[1].split("};")[0]
    assert bytes(int(h, 16) for h in re.findall(r"0x([0-9a-f]{2})", array)) == blob
    assert f"tfq_int8_v2_model_len = {len(blob)};" in source and "TFQ_ALIGNED(16)" in source
    assert f"#define TFQ_INT8_V2_INPUT_ZERO_POINT {info['input']['zero_point']}\n" in header
    assert "#define TFQ_INT8_V2_NUM_CLASSES 10\n" in header and '"int8"' in header
    assert float(re.search(r"TFQ_INT8_V2_INPUT_SCALE (\S+)f", header)[1]) == pytest.approx(info["input"]["scale"])
