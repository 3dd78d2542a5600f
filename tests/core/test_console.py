"""tfq.core.console: library chatter written straight to the file descriptors stays out of a default run."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tfq.core import console
from tfq.core.artifacts import TfqError


@pytest.fixture
def not_verbose(monkeypatch):
    monkeypatch.delenv(console.VERBOSE_ENV, raising=False)
    monkeypatch.setattr("sys.argv", ["tfq"])


def test_what_cpp_writes_to_the_descriptors_is_kept_back(capfd, not_verbose):
    with console.quiet():
        os.write(1, b"fully_quantize: 0, inference_type: 6\n")
        os.write(2, b"E0000 failed call to cuInit\n")
    os.write(1, b"after the block\n")
    out, err = capfd.readouterr()
    assert out == "after the block\n" and err == ""


def test_python_prints_inside_the_block_are_kept_back_in_a_real_process():
    """tfds' 'Downloading and preparing' goes through sys.stdout; pytest's capture hides that path."""
    code = (
        "import sys; from tfq.core import console\n"
        "with console.quiet():\n    print('Downloading and preparing'); print('warn', file=sys.stderr)\n"
        "print('tfq line')"
    )
    env = {k: v for k, v in os.environ.items() if k != console.VERBOSE_ENV}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0 and proc.stdout == "tfq line\n" and proc.stderr == ""


def test_a_crash_replays_what_the_block_printed(capfd, not_verbose):
    with pytest.raises(RuntimeError):
        with console.quiet():
            os.write(2, b"the converter's real complaint\n")
            raise RuntimeError("boom")
    assert "the converter's real complaint" in capfd.readouterr().err


def test_a_users_error_stays_one_line(capfd, not_verbose):
    with pytest.raises(TfqError):
        with console.quiet():
            os.write(2, b"library noise\n")
            raise TfqError("bad input")
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize("env, argv", [("1", ["tfq"]), ("", ["tfq", "--verbosity=0"]), ("", ["tfq", "-v=1"])])
def test_verbose_brings_everything_back(capfd, monkeypatch, env, argv):
    monkeypatch.setenv(console.VERBOSE_ENV, env)
    monkeypatch.setattr("sys.argv", argv)
    assert console.verbose()
    with console.quiet():
        os.write(2, b"library log line\n")
    assert capfd.readouterr().err == "library log line\n"


def test_quiet_by_default(not_verbose, monkeypatch):
    assert not console.verbose()
    for argv in (["pytest", "-v"], ["tfq", "--verbosity=-1"], ["tfq", "-v", "-2"]):  # absl's default is -1
        monkeypatch.setattr("sys.argv", argv)
        assert not console.verbose(), argv


def test_a_progress_bar_is_drawn_only_on_a_terminal(monkeypatch):
    import fcntl
    import pty
    import select
    import struct
    import termios

    items = [1, 2, 3]
    assert console.progress(items, "files") is items  # pytest's capture is not a terminal: the loop is untouched
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))  # a new pty is 0 columns wide
    terminal = os.fdopen(slave, "w")
    monkeypatch.setattr(sys, "stderr", terminal)
    monkeypatch.setattr(console, "_TERMINAL", None)
    assert list(console.progress(items, "evaluating mnist_cnn")) == items
    console._TERMINAL.flush()
    drawn = os.read(master, 4096).decode() if select.select([master], [], [], 5)[0] else ""
    assert "evaluating mnist_cnn" in drawn and "0/3" in drawn  # drawn with its total, then cleared
    monkeypatch.setenv("TFQ_PROGRESS", "0")
    assert console.progress(items, "files") is items
    terminal.close()
    os.close(master)
