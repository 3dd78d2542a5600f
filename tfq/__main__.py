"""`python -m tfq <stage> [flags]` and the `tfq` console script: the same as `python -m tfq.<stage>`."""

from __future__ import annotations

import ast
import runpy
import sys
from pathlib import Path

from tfq import STAGES


def _summary(stage: str) -> str:
    """The first line of a stage's docstring, read without importing it (TensorFlow takes seconds)."""
    here = Path(__file__).parent
    path = here / f"{stage}.py" if (here / f"{stage}.py").is_file() else here / stage / "__init__.py"  # a package
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    return doc.splitlines()[0] if doc else ""


def usage() -> str:
    width = max(map(len, STAGES))
    return "\n".join(
        [
            "usage: tfq <stage> [--flags] (tfq <stage> --help lists a stage's flags)",
            "",
            "stages:",
            *(f"  {s:<{width}}  {_summary(s)}" for s in STAGES),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
        print(usage())
        return 0 if len(argv) >= 2 else 2
    stage = argv[1]
    if stage not in STAGES:
        print(f"error: unknown stage {stage!r}; choose one of: {', '.join(STAGES)}", file=sys.stderr)
        return 2
    sys.argv = [f"tfq {stage}", *argv[2:]]
    runpy.run_module(f"tfq.{stage}", run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
