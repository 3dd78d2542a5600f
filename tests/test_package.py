"""tfq's shape: the stages a user runs at the top, the machinery in subpackages below them, every
import pointing down, no module too long to read."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import tfq
from tests.conftest import error_lines

PACKAGE = Path(tfq.__file__).parent
STAGES = tfq.STAGES  # in the order they run: a stage may use an earlier stage's functions, never a later one's
# The machinery, lowest first: a subpackage imports only those before it (and itself).
LAYERS = ("core", "data", "runtimes", "models", "quant", "reporting", "scale")
MAX_LINES = 500


def _unit(path: Path) -> str:
    """A top-level module's stage name, or a subpackage's name."""
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imported_units(path: Path) -> set[str]:
    """The tfq stages and subpackages a module imports, at module level or inside functions."""
    units = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "tfq":
            parts = node.module.split(".")
            if len(parts) > 1:
                units.add(parts[1])
            else:  # `from tfq import train`: a module; `from tfq import STAGES`: a name of the package itself
                units |= {
                    a.name for a in node.names if (PACKAGE / f"{a.name}.py").is_file() or (PACKAGE / a.name).is_dir()
                }
        elif isinstance(node, ast.Import):
            units |= {a.name.split(".")[1] for a in node.names if a.name.startswith("tfq.")}
    return units


def _modules():
    return sorted(PACKAGE.rglob("*.py"))


def test_the_top_level_holds_the_stages_and_nothing_else():
    """Each stage is a module, or a package (`python -m` runs its __main__) when one module would be too long."""
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    packaged = {f for f in folders if (PACKAGE / f / "__main__.py").is_file()}
    assert ({p.stem for p in PACKAGE.glob("*.py")} - {"__init__", "__main__"}) | packaged == set(STAGES)
    assert folders - packaged == set(LAYERS)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_every_import_points_down(path):
    unit = _unit(path)
    bad = []
    for used in _imported_units(path) - {unit}:
        if unit in STAGES and used in STAGES:
            if STAGES.index(used) > STAGES.index(unit):
                bad.append(f"stage {unit} imports the later stage {used}")
        elif unit in LAYERS and used in STAGES:
            bad.append(f"{unit}/ imports the stage {used}")
        elif unit in LAYERS and used in LAYERS and LAYERS.index(used) > LAYERS.index(unit):
            bad.append(f"{unit}/ imports {used}/, which sits above it")
        elif used not in STAGES and used not in LAYERS:
            bad.append(f"imports tfq.{used}, which is neither a stage nor a subpackage")
    assert not bad, f"{path.relative_to(PACKAGE)}: " + "; ".join(bad)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_is_over_500_lines(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(PACKAGE)} has {lines} lines"


def test_tfq_with_no_stage_lists_every_stage_and_an_unknown_one_is_one_error():
    listed = subprocess.run([sys.executable, "-m", "tfq"], capture_output=True, text=True, timeout=120)
    assert listed.returncode == 2
    assert [line.split()[0] for line in listed.stdout.splitlines() if line.startswith("  ")] == list(STAGES)
    unknown = subprocess.run([sys.executable, "-m", "tfq", "trian"], capture_output=True, text=True, timeout=120)
    assert unknown.returncode == 2 and unknown.stderr.splitlines() == [
        f"error: unknown stage 'trian'; choose one of: {', '.join(STAGES)}"
    ]


@pytest.mark.parametrize(
    "command",
    [[sys.executable, "-m", "tfq"], [str(Path(sys.executable).parent / "tfq")]],
    ids=["python -m tfq", "tfq script"],
)
def test_python_dash_m_tfq_and_the_tfq_script_run_a_stage_as_its_module_does(command, tmp_path):
    missing = tmp_path / "missing.tflite"
    proc = subprocess.run(
        [*command, "evaluate", f"--tflite={missing}", "--dataset=mnist"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 1 and error_lines(proc.stderr) == [f"error: {missing} does not exist"]
