"""`python -m tfq.pipeline`: the pipeline's flags, from PipelineConfig, and its main."""

from __future__ import annotations

import dataclasses

from absl import flags

from tfq.core import cli
from tfq.core.artifacts import TfqError
from tfq.pipeline import pipeline
from tfq.pipeline.config import PipelineConfig, with_preset

FLAGS = flags.FLAGS


def _define_flags() -> None:
    cli.define_flags(PipelineConfig)
    FLAGS.set_default("preset", "first_look")  # the command line's default; PipelineConfig's own is full


def main(argv):
    del argv
    given = {name for name in dataclasses.asdict(PipelineConfig()) if name in FLAGS and FLAGS[name].present}
    if FLAGS.runs and given & {"datasets", "models"}:
        raise TfqError(f"--runs={','.join(FLAGS.runs)} names every run: it does not go with --datasets or --models")
    for flag in ("model_file", "float_tflite"):
        if FLAGS[flag].value and "models" in given:
            raise TfqError(f"--{flag}={FLAGS[flag].value} is the run's one model: it does not go with --models")
    pipeline(with_preset(cli.config_from_flags(PipelineConfig), given))


if __name__ == "__main__":
    cli.run(main, _define_flags)
