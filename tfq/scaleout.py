"""Whether two runs of the same study made the same results: `python -m tfq.scaleout --compare=A,B`.

A study run on Ray (`tfq.scale.executors`) or on another machine should make the same files as the
local run: flatbuffers, predictions and CSVs byte for byte, JSON value by value, leaving aside what
may differ (times, latencies, paths, versions).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from tfq.core import stages
from tfq.core.artifacts import TfqError

# What may differ between two runs of the same study: where, when and how fast.
# `code` is tfq's source digest; a Keras file's digest changes with its save date (compared apart).
_VOLATILE = re.compile(
    r"\w*_s|time_s|(\w+_)?seconds|finished|started|latency(_\w+)?|\w+_ms(_\w+)?|"
    r"throughput(_\w+)?|images_per_s|speedup(_\w+)?|versions|artifacts|data_root|cache_dir|code"
)
_RESULT_FILES = (".json", ".tflite", ".npy", ".npz", ".csv", ".c", ".h", ".txt", ".keras")


def _result_files(run: Path) -> set[str]:
    """The run's result files; where pipeline.json records its stages' outputs, only those (files a
    benchmark added beside the study are not the study's)."""
    import json

    recorded = (
        {
            name
            for stage in json.loads((run / stages.STATE_FILE).read_text()).values()
            for name in stage.get("outputs", {})
        }
        if (run / stages.STATE_FILE).is_file()
        else set()
    )
    return {
        p.relative_to(run).as_posix()
        for p in run.rglob("*")
        if p.is_file()
        and p.suffix in _RESULT_FILES
        and "tensorboard" not in p.parts
        and p.name != stages.STATE_FILE
        and not p.name.startswith(".")
        and (not recorded or f"{p.parent.name}/{p.name}" in recorded)
    }


def _keras_contents(path: Path) -> dict[str, bytes]:
    """A .keras file without its metadata.json (which records when it was saved)."""
    import zipfile

    with zipfile.ZipFile(path) as z:
        return {i.filename: z.read(i) for i in z.infolist() if i.filename != "metadata.json"}


def differences(a: str | os.PathLike, b: str | os.PathLike) -> list[str]:
    """How two artifacts folders of the same study differ in results: every run folder's files by
    name; flatbuffers, predictions (.npy/.npz) and CSVs byte for byte; JSON value by value, leaving
    out times, latencies, paths and versions. Empty: the same results."""
    import json

    import numpy as np

    from tfq.core import artifacts

    a, b = Path(a), Path(b)
    out = []
    runs = sorted(p.parent.name for p in a.glob("*/pipeline.json") if p.parent.name != "report")
    if runs != sorted(p.parent.name for p in b.glob("*/pipeline.json") if p.parent.name != "report"):
        return [f"run folders differ: {runs} vs {sorted(p.parent.name for p in b.glob('*/pipeline.json'))}"]
    for run in runs:
        names, other = _result_files(a / run), _result_files(b / run)
        out += [f"{run}/{n}: only in {a if n in names else b}" for n in sorted(names ^ other)]
        # a Keras file's digest stands for its contents: equal contents, equal digests
        aliases = [{}, {}]
        for name in sorted(n for n in names & other if n.endswith(".keras")):
            pa, pb = a / run / name, b / run / name
            if _keras_contents(pa) != _keras_contents(pb):
                out.append(f"{run}/{name}: weights or architecture differ")
            aliases[0][artifacts.sha256(pa)] = aliases[1][artifacts.sha256(pb)] = f"<{name}>"
        for name in sorted(n for n in names & other if not n.endswith(".keras")):
            pa, pb = a / run / name, b / run / name
            if pa.suffix == ".json":
                out += [
                    f"{run}/{name}: {d}"
                    for d in _json_diff(json.loads(pa.read_text()), json.loads(pb.read_text()), aliases=aliases)
                ]
            elif pa.suffix == ".npz":
                with np.load(pa) as za, np.load(pb) as zb:
                    if sorted(za.files) != sorted(zb.files) or any(not np.array_equal(za[k], zb[k]) for k in za.files):
                        out.append(f"{run}/{name}: arrays differ")
            elif pa.read_bytes() != pb.read_bytes():
                out.append(f"{run}/{name}: bytes differ")
    return out


def _json_diff(x, y, where: str = "", *, aliases=({}, {})) -> list[str]:
    if isinstance(x, dict) and isinstance(y, dict):
        keys = [k for k in {*x, *y} if not _VOLATILE.fullmatch(str(k))]
        return [
            d
            for k in sorted(keys, key=str)
            for d in (
                _json_diff(x[k], y[k], f"{where}.{k}", aliases=aliases)
                if k in x and k in y
                else [f"{where}.{k}: only on one side"]
            )
        ]
    if isinstance(x, list) and isinstance(y, list):
        if len(x) != len(y):
            return [f"{where}: {len(x)} vs {len(y)} items"]
        return [d for i, (u, v) in enumerate(zip(x, y)) for d in _json_diff(u, v, f"{where}[{i}]", aliases=aliases)]
    if isinstance(x, str) and isinstance(y, str):
        if x.startswith("/") or y.startswith("/"):
            return []  # a path
        x, y = aliases[0].get(x, x), aliases[1].get(y, y)
    return [] if x == y else [f"{where}: {x!r} vs {y!r}"]


def main(argv):
    del argv
    from absl import flags

    a, b = flags.FLAGS.compare
    diffs = differences(a, b)
    for d in diffs:
        print(d)
    folders = [p.parent for p in Path(a).glob("*/pipeline.json") if p.parent.name != "report"]
    runs, files = len(folders), sum(len(_result_files(f)) for f in folders)
    if diffs:
        raise TfqError(f"{a} and {b} differ in {len(diffs)} place(s) (listed above)")
    print(f"same results: {files} files in {runs} run folders (times, latencies, paths and versions aside)")


if __name__ == "__main__":
    from absl import flags

    from tfq.core import cli

    flags.DEFINE_list(
        "compare", None, "Two artifacts folders of the same study (A,B): print how their results differ.", required=True
    )
    flags.register_validator("compare", lambda v: len(v) == 2, "--compare takes two folders: A,B")
    cli.run(main)
