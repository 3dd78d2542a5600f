"""tfq: train small Keras models, quantize them every way TFLite can, and measure the cost.

The stages a user runs are the modules at the top of the package (`python -m tfq.<stage>`, `python -m
tfq <stage>` or `tfq <stage>`); the machinery under them lives in subpackages: `core` (artifacts,
backend, console, flags, statistics), `data`, `runtimes` (LiteRT, TFLite Micro, the flatbuffer
reader), `models`, `quant` (modes, recipes, simulation, mixed-precision search), `reporting` and
`scale` (executors).
"""

from tfq.core import backend as _backend  # noqa: F401  (must run before anything imports TensorFlow)

# The stages, in the order they run: each may use an earlier stage's functions, never a later one's.
STAGES = (
    "train",
    "convert",
    "qat",
    "evaluate",
    "qat_scratch",
    "sweep",
    "sensitivity",
    "mixed",
    "micro",
    "generalize",
    "export",
    "scaleout",
    "report",
    "pipeline",
)
# A command line one stage hands to another, flags and all (`tfq.core.cli.run`): (stage, flag) -> stage.
HANDED_OVER = {("convert", "--mode=mixed"): "mixed"}
