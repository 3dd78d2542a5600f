"""tfq.core.stages: a stage runs again only when its key or its recorded outputs changed, or when forced;
what it ran and skipped is recorded and printed."""

from __future__ import annotations

import json

from tfq.core import stages


def _write(path, text):
    def fn():
        path.write_text(text)
        return text

    return fn


def _run(folder, key, out, text, *, force=False, planned=("one",)):
    runner = stages.Stages(folder, "run", force, list(planned))
    runner.run("one", key, lambda: [out], _write(out, text), "writing", lambda r: f"wrote {r}")
    return runner


def test_a_stage_is_skipped_while_its_key_and_outputs_are_current(tmp_path, capsys):
    out = tmp_path / "one.txt"
    first = _run(tmp_path, "k1", out, "a")
    assert first.ran == ["one"] and out.read_text() == "a"
    said = capsys.readouterr().out
    assert "[run] one: writing (stage 1 of 1, 0 s in)" in said and "[run] one: done in" in said
    recorded = json.loads((tmp_path / stages.STATE_FILE).read_text())["one"]
    assert recorded["key"] == "k1" and recorded["outputs"] == stages.digests([out])

    again = _run(tmp_path, "k1", out, "b")
    assert again.skipped == ["one"] and again.ran == [] and out.read_text() == "a"
    assert "[run] one: current, skipped (took" in capsys.readouterr().out
    assert again.produced == {str(out.resolve()): stages.digests([out])[f"{tmp_path.name}/one.txt"]}


def test_a_new_key_a_replaced_or_missing_output_or_force_runs_it_again(tmp_path, capsys):
    out = tmp_path / "one.txt"
    _run(tmp_path, "k1", out, "a")
    assert _run(tmp_path, "k2", out, "b").ran == ["one"] and out.read_text() == "b"  # a setting changed
    out.write_text("made by hand")
    capsys.readouterr()
    assert _run(tmp_path, "k2", out, "c").ran == ["one"] and out.read_text() == "c"
    assert "its files changed since it wrote them" in capsys.readouterr().out
    out.unlink()
    assert _run(tmp_path, "k2", out, "d").ran == ["one"] and out.read_text() == "d"
    assert _run(tmp_path, "k2", out, "e", force=True).ran == ["one"] and out.read_text() == "e"
    assert _run(tmp_path, "k2", out, "f").skipped == ["one"]  # forcing recorded the same key


def test_the_progress_line_estimates_from_recorded_times_once_every_stage_has_one(tmp_path, capsys):
    out = tmp_path / "one.txt"
    _run(tmp_path, "k1", out, "a", planned=("one", "two"))
    assert "(stage 1 of 2, 0 s in)" in capsys.readouterr().out  # "two" has no recorded time yet
    state = json.loads((tmp_path / stages.STATE_FILE).read_text())
    state["one"]["seconds"], state["two"] = 100.0, {"seconds": 200.0}
    (tmp_path / stages.STATE_FILE).write_text(json.dumps(state))
    _run(tmp_path, "k2", out, "b", planned=("one", "two"))
    assert "(stage 1 of 2, 0 s in; about 5.0 min left by the recorded times)" in capsys.readouterr().out


def test_adopted_outputs_count_as_current_until_the_key_changes(tmp_path):
    out = tmp_path / "one.txt"
    out.write_text("trained outside")
    runner = stages.Stages(tmp_path, "run", False)
    runner.adopt("one", "k1", 12.0, [out])
    runner.run("one", "k1", lambda: [out], _write(out, "x"), "writing", str)
    assert runner.skipped == ["one"] and out.read_text() == "trained outside"
    runner.run("one", "k2", lambda: [out], _write(out, "x"), "writing", str)
    assert runner.ran == ["one"] and out.read_text() == "x"


def test_keys_ignore_where_files_live(tmp_path):
    import dataclasses

    @dataclasses.dataclass
    class Config:
        epochs: int
        artifacts: str
        data_root: str

    here, there = Config(2, "a", "/data"), Config(2, "b", "/elsewhere")
    assert stages.settings(here) == stages.settings(there) == {"epochs": 2}
    assert stages.key(stages.settings(here)) == stages.key(stages.settings(there))
    assert stages.key(stages.settings(Config(3, "a", "/data"))) != stages.key(stages.settings(here))
