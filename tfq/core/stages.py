"""The stage runner: a stage runs again only when its key (every setting, input digest, library
version and tfq's code that decide its outputs) or its outputs changed since it last ran, as the
run folder's pipeline.json records them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tfq.core import artifacts, cli
from tfq.core.artifacts import NotPossible

STATE_FILE = "pipeline.json"


def key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def hashes(paths) -> dict[Path, str]:
    return {Path(p): artifacts.sha256(p) for p in sorted(paths)}


def named(digests_by_path: dict[Path, str]) -> dict:
    """The form keys and pipeline.json hold: `<folder>/<file>` -> sha256."""
    return {f"{p.parent.name}/{p.name}": h for p, h in digests_by_path.items()}


def digests(paths) -> dict:
    return named(hashes(paths))


class Stages:
    """Runs the stages of one folder, skipping those whose key and outputs are current."""

    def __init__(self, folder: Path, label: str, force: bool, planned: list[str] | None = None):
        self.folder, self.label, self.force = folder, label, force
        self.planned, self.started = planned or [], time.time()  # the stage names this chain will run, in order
        self.state_path = folder / STATE_FILE
        self.state = artifacts.read_json(self.state_path, default={})
        self.produced: dict[str, str] = {}  # every output path (current or made now) -> its sha256
        self.ran: list[str] = []
        self.skipped: list[str] = []

    def adopt(self, name: str, key: str, seconds: float, outputs) -> None:
        """Count outputs made outside the pipeline (e.g. by `python -m tfq.train`) as current."""
        if name not in self.state:
            self.state[name] = {"key": key, "seconds": round(seconds, 1), "adopted": True, "outputs": digests(outputs)}

    def run(self, name: str, key: str, outputs, fn, what: str, headline) -> None:
        """`outputs` is a callable: the files must exist after `fn`, and still exist to skip.
        Prints what the stage does, then its time and `headline(fn's result)`."""
        label = f"[{self.label}] {name}"
        recorded = self.state.get(name, {})
        if not self.force and recorded.get("key") == key and recorded.get("not_possible"):
            print(f"{label}: not possible on this run (recorded): {recorded['not_possible']}", flush=True)
            self.skipped.append(name)
            return
        if not self.force and recorded.get("key") == key and all(p.is_file() for p in outputs()):
            found = hashes(outputs())
            if recorded.get("outputs") == named(found):
                print(f"{label}: current, skipped (took {recorded.get('seconds', 0):.1f} s when it ran)", flush=True)
                self._produced(found)
                self.skipped.append(name)
                return
            print(
                f"{label}: its files changed since it wrote them (made or replaced outside the pipeline); "
                "running it again",
                flush=True,
            )
        print(f"{label}: {what}{self._progress(name)}", flush=True)
        started = time.time()
        try:
            result = fn()
        except NotPossible as e:  # the rest of the chain goes on; the report lists it
            self.state[name] = {"key": key, "not_possible": str(e), "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
            artifacts.write_json(self.state_path, self.state)
            self.skipped.append(name)
            print(f"{label}: not possible on this run: {e}", flush=True)
            return
        seconds = time.time() - started
        found = hashes(outputs())
        self.state[name] = {
            "key": key,
            "seconds": round(seconds, 1),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "outputs": named(found),
        }
        artifacts.write_json(self.state_path, self.state)
        self._produced(found)
        self.ran.append(name)
        print(f"{label}: done in {seconds:.1f} s; {headline(result)}", flush=True)

    def _progress(self, name: str) -> str:
        """ " (stage k of n, m s in; about t left by the recorded times)": the estimate only where every
        stage still to run has a time recorded in this folder from an earlier run."""
        if name not in self.planned:
            return ""
        k = self.planned.index(name)
        left = [self.state.get(n, {}).get("seconds") for n in self.planned[k:]]
        estimate = (
            f"; about {_duration(sum(left))} left by the recorded times" if all(t is not None for t in left) else ""
        )
        return f" (stage {k + 1} of {len(self.planned)}, {_duration(time.time() - self.started)} in{estimate})"

    def _produced(self, found: dict[Path, str]) -> None:
        self.produced.update({str(p.resolve()): h for p, h in found.items()})


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


# where files live does not change results (an imported model's digest is in the keys of what reads it)
_PLACES = ("artifacts", "data_root", "cache_dir", "model_file", "float_tflite", "run_name")


def settings(config) -> dict:
    """A stage config's settings as its key holds them; the pixel range only where it is not [0, 1]."""
    out = {k: v for k, v in dataclasses.asdict(config).items() if k not in _PLACES}
    if "input_range" in out and cli.pixel_range(out["input_range"]) == cli.UNIT_RANGE:
        del out["input_range"]
    if out.get("image_size", 0) is None:
        del out["image_size"]
    return out


@dataclasses.dataclass(frozen=True)
class Stage:
    """One row of the pipeline's table: its config from the chain (one dataset x model's run: settings,
    folder, data source), the files whose digests its key holds beside that config's settings, the
    files it writes, its plain function, and what it prints before and after."""

    name: str
    config: Callable[[Any], Any]
    reads: Callable[[Any, Any], list[Path]]
    writes: Callable[[Any, Any], list[Path]]
    function: Callable[[Any, Any], Any]
    what: Callable[[Any, Any], str]
    headline: Callable[[Any], str]
    enabled: Callable[[Any], bool] = lambda cfg: True  # from the pipeline's settings
    key_also: Callable[[Any, Any], Any] = lambda chain, c: None  # more inputs than files (other datasets)
    before: Callable[[Any, Any], None] | None = None  # tidying before the key is read

    def key(self, chain, c) -> str:
        """Its inputs' digests, its config's settings (where files live aside), the chain's data source
        and environment, and anything else `key_also` names."""
        return key(digests(self.reads(chain, c)), settings(c), chain.source, self.key_also(chain, c))
