"""What every `python -m tfq.X` shares: settings that are flags, the run they belong to, one-line errors.

A stage's config is a dataclass of `setting` fields (default and help text side by side) over `Run`;
`define_flags` makes its absl flags and `config_from_flags` reads them back. Each CLI is a thin `main`
over a plain function; `run(main, define_flags)` turns a `TfqError` or a bad flag (input a user can
fix) into one line on stderr and exit status 1, instead of a traceback, and hands a command line that
its stage passes on (`tfq.HANDED_OVER`) to the stage it belongs to.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

from absl import app, flags, logging

from tfq.core import console
from tfq.core.artifacts import TfqError


def setting(default, help: str, *, flag: str | None = None, choices=None):
    """A config field that is also a flag: its default and help text in one place, the flag named like
    the field (or `flag`), an enum where `choices` are given. `define_flags` makes the flags."""
    return dataclasses.field(default=default, metadata={"help": help, "flag": flag, "choices": choices})


UNIT_RANGE = (0.0, 1.0)  # the pixel range tfq's own models take, and every run made before the setting


def pixel_range(value) -> tuple[float, float]:
    """An `input_range` setting or record as a (LOW, HIGH) tuple; unset: [0, 1]."""
    return tuple(value or UNIT_RANGE)


def same_setting(cls, name: str):
    """Another config's `setting` `name` (default and help), for a config that is not a subclass."""
    field = cls.__dataclass_fields__[name]
    return dataclasses.field(default=field.default, metadata=field.metadata)


@dataclasses.dataclass
class Run:
    """What every stage's config holds first: which run (dataset x model) and where its files live."""

    dataset: str = setting(
        "mnist",
        "mnist, fashion_mnist, emnist_digits, cifar10, folder:PATH (your own images) or tfds:NAME (any tfds "
        "image-classification dataset; online the first time).",
    )
    model: str = setting("cnn", "mlp, cnn, resnet8 (MLPerf Tiny's) or mobilenet (depthwise-separable).")
    artifacts: str = setting("artifacts", "Root of the run folders <dataset>_<model>/.")
    data_root: str | None = setting(
        None, "Folder of raw dataset files, one subfolder per dataset (default: $TFQ_DATA_ROOT)."
    )
    cache_dir: str | None = setting(None, "Where tfds builds datasets (default: $TFQ_CACHE_DIR or ~/.cache/tfq).")
    model_file: str | None = setting(
        None,
        "Study this tf_keras model (.keras, .h5 or SavedModel folder) instead of training one: it is copied "
        "into the run <dataset>_<file stem> (or <dataset>_<--run_name>) and tested there first.",
    )
    float_tflite: str | None = setting(
        None,
        "Study this float .tflite instead of a Keras model: the run <dataset>_<file stem> starts from it; "
        "ai-edge-quantizer's modes, evaluate, TFLite Micro, shifted sets, export and the report run on it.",
    )
    run_name: str | None = setting(
        None, "With --model_file or --float_tflite: the model's name in the run folder (default: file stem)."
    )
    input_range: tuple[float, ...] | None = setting(
        None,
        "LOW,HIGH: the float range the model takes for pixels 0..255 (default: the run's own, recorded when "
        "it was trained or imported; 0,1 for a new run; MLPerf Tiny's ResNet-8 takes 0,255).",
    )
    image_size: tuple[int, ...] | None = setting(
        None,
        "HEIGHT,WIDTH[,CHANNELS] an image folder (--dataset=folder:PATH) is resized to (default: the run's own, "
        "recorded when its model was trained or imported; a user's model's input; else the images' most common size).",
    )

    def __post_init__(self):
        if self.float_tflite:
            if self.model_file not in (None, self.float_tflite):
                raise TfqError(
                    f"--float_tflite={self.float_tflite} and --model_file={self.model_file}: one model per run"
                )
            if not self.float_tflite.endswith(".tflite"):
                raise TfqError(f"--float_tflite={self.float_tflite}: expected a .tflite file")
            self.model_file = self.float_tflite  # imported as a model file is, into a run of its own
        if self.run_name and not self.model_file:
            raise TfqError(f"--run_name={self.run_name} names an imported model: it needs --model_file")
        if self.model_file:
            name = self.run_name or Path(self.model_file.rstrip("/")).stem
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
                raise TfqError(f"run name {name!r}: use letters, digits, '_', '-' and '.' (or set --run_name)")
            self.model = name
        if self.image_size is not None:
            self.image_size = tuple(int(v) for v in self.image_size)
        if self.input_range is not None:
            self.input_range = tuple(float(v) for v in self.input_range)
            if len(self.input_range) != 2 or not self.input_range[0] < self.input_range[1]:
                raise TfqError(
                    f"--input_range={','.join(f'{v:g}' for v in self.input_range)}: expected LOW,HIGH with LOW < HIGH"
                )

    def run(self) -> dict:
        """These settings alone, to hand to another stage's config."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(Run)}


def define_flags(cls, fv: flags.FlagValues = flags.FLAGS) -> None:
    """One absl flag per `setting` field of the config dataclass `cls` (a flag already defined, e.g. by
    another config, is left as it is): its type from the field's, its default and help from the field."""
    for field in dataclasses.fields(cls):
        meta = field.metadata
        if "help" not in meta:
            continue
        name = meta["flag"] or field.name
        if name in fv:
            continue
        default, kind = field.default, str(field.type)
        if meta["choices"] is not None:
            flags.DEFINE_enum(name, default, list(meta["choices"]), meta["help"], flag_values=fv)
        elif kind.startswith("tuple"):
            flags.DEFINE_list(
                name, None if default is None else [str(v) for v in default], meta["help"], flag_values=fv
            )
        elif kind == "bool":
            flags.DEFINE_boolean(name, default, meta["help"], flag_values=fv)
        elif kind == "int":
            flags.DEFINE_integer(name, default, meta["help"], flag_values=fv)
        elif kind == "float":
            flags.DEFINE_float(name, default, meta["help"], flag_values=fv)
        else:
            flags.DEFINE_string(name, default, meta["help"], flag_values=fv)


def config_from_flags(cls, fv: flags.FlagValues = flags.FLAGS, **renames):
    """A config dataclass filled from the parsed flags of the same names (`field="flag"` renames).

    List flags become tuples of the type the field's default holds (`--cnn_widths=32,64` -> (32, 64)).
    """
    defaults, values = cls(), {}
    for field in dataclasses.fields(cls):
        name = renames.get(field.name) or field.metadata.get("flag") or field.name
        if name not in fv:
            continue
        value = fv[name].value
        if isinstance(value, list):
            default = getattr(defaults, field.name)
            declared = re.match(r"tuple\[(int|float|str)\b", str(field.type))  # for an empty default
            cast = (
                type(default[0])
                if isinstance(default, tuple) and default
                else {"int": int, "float": float}.get(declared.group(1), str)
                if declared
                else str
            )
            try:
                value = tuple(cast(v) for v in value)
            except ValueError:
                raise TfqError(
                    f"--{name}={','.join(value)}: expected a comma-separated list of {cast.__name__} values"
                ) from None
        values[field.name] = value
    return cls(**values)


def check_at_least(cfg, minimum, *names: str) -> None:
    """One TfqError naming every field of `cfg` (a flag of the same name) below `minimum`."""
    bad = [f"--{n}={getattr(cfg, n)}" for n in names if getattr(cfg, n) < minimum]
    if bad:
        raise TfqError(f"{', '.join(bad)}: must be at least {minimum}")


def handed_over() -> str | None:
    """The stage a command line belongs to when its stage hands it over (`tfq.HANDED_OVER`, e.g.
    `python -m tfq.convert --mode=mixed` is the mixed stage's), else None."""
    import tfq

    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    stage = spec.name.rpartition(".")[2] if spec else None
    args = sys.argv[1:]
    given = {*args, *(f"{a}={b}" for a, b in zip(args, args[1:]))}  # --mode=mixed and --mode mixed
    return next(
        (target for (source, flag), target in tfq.HANDED_OVER.items() if source == stage and flag in given), None
    )


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with a bad flag reported as one `error:` line and exit status 1."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        print(f"error: {e} (--helpfull lists the flags)", file=sys.stderr)
        sys.exit(1)


def run(main, define_flags=None) -> None:
    """absl's app.run over the stage's flags (`define_flags`), with TfqError reported as one line and exit
    status 1. A command line that its stage hands over to another (`handed_over`) runs that stage's own
    main instead, flags and all, before this stage defines any flag."""
    target = handed_over()
    if target:
        import runpy

        runpy.run_module(f"tfq.{target}", run_name="__main__", alter_sys=True)
        return
    if define_flags:
        define_flags()

    def wrapped(argv):
        if not console.verbose():
            # tfds and TensorFlow log every file they touch; --verbosity=0 brings that back.
            logging.set_verbosity(logging.ERROR)
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
        try:
            main(argv)
        except TfqError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(1)

    app.run(wrapped, flags_parser=_parse_flags)
