"""A user's own images, `--dataset=folder:PATH`, in tfds' ImageFolder layout: `PATH/<split>/<class>/<image>`
with splits `train` and `test` and, if present, `validation`. Class names are the train split's folder
names, sorted. Every image is decoded once (PIL), converted to the run's channels, resized to the run's
height and width, and kept as one uint8 array file in the cache, keyed by the folder's listing (names,
sizes, times) and the shape: a changed folder or size is read again, and an image that does not decode
is one error naming it before anything trains.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np

from tfq.core import artifacts
from tfq.core.artifacts import TfqError

PREFIX = "folder:"
SPLITS = ("train", "validation", "test")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
_HEADER_SAMPLE = 1000  # images whose headers decide the default size and channels
ORDER_SEED = 0  # every split's order: classes mixed, so a first-N slice and the validation carve-out hold them all


def is_folder(name: str) -> bool:
    return name.startswith(PREFIX)


def path_of(name: str) -> Path:
    """The folder `--dataset=folder:PATH` names, made absolute."""
    return Path(name[len(PREFIX) :]).expanduser().resolve()


@dataclasses.dataclass(frozen=True)
class Listing:
    """What a folder holds: its classes and, per split, (label, file) pairs in sorted order."""

    root: Path
    classes: tuple[str, ...]
    files: dict  # split -> tuple of (label index, Path)
    digest: str  # of every file's relative name, size and modification time

    def has(self, split: str) -> bool:
        return split in self.files


def listing(name: str) -> Listing:
    """Read `folder:PATH`'s layout; each way it does not fit tfds' ImageFolder layout is one error."""
    root = path_of(name)
    if not root.is_dir():
        raise TfqError(f"--dataset={name}: {root} is not a folder")
    missing = [s for s in ("train", "test") if not (root / s).is_dir()]
    if missing:
        raise TfqError(
            f"--dataset={name}: no {' or '.join(f'{root / s}/' for s in missing)}; "
            "expected PATH/train/<class>/<image> and PATH/test/<class>/<image> (PATH/validation/ optional)"
        )
    per_split: dict[str, dict[str, list[Path]]] = {}
    for split in SPLITS:
        if not (root / split).is_dir():
            continue
        classes = sorted(p for p in (root / split).iterdir() if p.is_dir() and not p.name.startswith("."))
        if not classes:
            raise TfqError(f"--dataset={name}: {root / split}/ has no class folders")
        per_split[split] = {}
        for c in classes:
            images = sorted(
                p
                for p in c.rglob("*")
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")  # ._x.jpg
            )
            if not images:
                raise TfqError(f"--dataset={name}: class folder {c}/ holds no images ({', '.join(IMAGE_SUFFIXES)})")
            per_split[split][c.name] = images
    classes = tuple(per_split["train"])
    if len(classes) < 2:
        raise TfqError(f"--dataset={name}: {root / 'train'}/ has {len(classes)} class folder; a classifier needs 2")
    for split in ("validation", "test"):
        extra = sorted(set(per_split.get(split, {})) - set(classes))
        if extra:
            raise TfqError(
                f"--dataset={name}: {split} has class folders that train does not: {', '.join(extra)} "
                "(every class must have training images)"
            )
    files = {
        split: tuple((classes.index(c), p) for c, ps in by_class.items() for p in ps)
        for split, by_class in per_split.items()
    }
    h = hashlib.sha256()
    for pairs in files.values():
        for _, p in pairs:
            st = p.stat()
            h.update(f"{p.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return Listing(root, classes, files, h.hexdigest()[:16])


def default_shape(lst: Listing) -> tuple[int, int, int]:
    """The most common height x width among (a sample of) the training images, with 1 channel when all
    of them are grayscale, else 3."""
    from PIL import Image

    train = lst.files["train"]
    step = max(1, len(train) // _HEADER_SAMPLE)
    sizes, gray = collections.Counter(), True
    for _, p in train[::step]:
        try:
            with Image.open(p) as im:
                sizes[(im.height, im.width)] += 1
                gray = gray and im.mode in ("1", "L", "LA", "I", "I;16", "F")
        except Exception as e:  # noqa: BLE001 - PIL raises many types for a file that is not an image
            raise _not_an_image(p, e) from None
    (h, w), _ = sizes.most_common(1)[0]
    return h, w, 1 if gray else 3


def _not_an_image(path: Path, e: Exception) -> TfqError:
    return TfqError(f"{path} does not decode as an image ({type(e).__name__}: {str(e).splitlines()[0][:160]})")


def arrays(lst: Listing, shape: tuple[int, int, int], cache: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per split, (uint8 images N x H x W x C, int64 labels), decoded, converted and resized once and
    then read from the cache. Each split comes in a seeded order, not class by class, so that a slice
    of its first images (--max_eval_examples, TFLite Micro's first images, the calibration pool) and
    the train split's last tenth (the validation carve-out every dataset gets) hold every class."""
    import PIL

    h, w, c = shape
    code = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()  # how images are decoded and ordered
    parts = [str(lst.root), lst.digest, list(shape), ORDER_SEED, code, PIL.__version__]
    key = hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]
    path = cache / "folders" / f"{lst.root.name}-{key}.npz"
    if path.is_file():
        with np.load(path) as z:
            return {s: (z[f"{s}_x"], z[f"{s}_y"]) for s in lst.files}
    print(f"{lst.root}: decoding {sum(map(len, lst.files.values())):,d} images to {h}x{w}x{c} (first use only)")
    out = {}
    for split, pairs in lst.files.items():
        xs = np.empty((len(pairs), h, w, c), np.uint8)
        ys = np.array([y for y, _ in pairs], np.int64)
        for i, (_, p) in enumerate(pairs):
            xs[i] = _decode(p, shape)
        order = np.random.default_rng([ORDER_SEED, SPLITS.index(split)]).permutation(len(ys))
        out[split] = (xs[order], ys[order])
    path.parent.mkdir(parents=True, exist_ok=True)
    with artifacts.atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **{f"{s}_{k}": v for s, (x, y) in out.items() for k, v in (("x", x), ("y", y))})
    return out


def _decode(path: Path, shape: tuple[int, int, int]) -> np.ndarray:
    from PIL import Image

    h, w, c = shape
    try:
        with Image.open(path) as im:
            im = im.convert("L" if c == 1 else "RGB")
            if im.size != (w, h):
                im = im.resize((w, h), Image.BILINEAR)
            a = np.asarray(im, np.uint8)
    except Exception as e:  # noqa: BLE001 - PIL raises many types for a file that is not an image
        raise _not_an_image(path, e) from None
    return a.reshape(h, w, c)
