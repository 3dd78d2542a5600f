"""Shifted test sets: deterministic corrupted copies of a test split, in the spirit of MNIST-C and
CIFAR-10-C, made by maintained libraries (no hand-written image filters).

28x28 sets (MNIST, Fashion-MNIST, EMNIST, USPS) use albumentations: noise, blur, rotation, shear,
translation, scale, brightness/contrast and elastic distortion, each at three severities with a
fixed magnitude (the sign or direction drawn at random), so a severity means one amount. CIFAR-10
uses imagecorruptions-imaug's fifteen common corruptions (noise, blur, weather, digital) at
severities 1, 3 and 5 of its five. Every set is the same seeded subset of the test split, so every
variant of a model sees the same images; sets are cached as .npz keyed by the table, the seed, the
library versions and the images' digest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from importlib import metadata
from pathlib import Path

import numpy as np

from tfq import data
from tfq.core import artifacts
from tfq.core.artifacts import TfqError

CLEAN = "clean"


@dataclasses.dataclass(frozen=True)
class Corruption:
    """One corruption: its family, the library that makes it, and its magnitude per severity."""

    name: str
    family: str
    library: str  # "albumentations" or "imagecorruptions"
    severities: tuple  # albumentations: the magnitude at severity 1, 2, 3; imagecorruptions: its own levels
    unit: str = ""


# 28x28 grayscale digits and clothes on a black background.
SMALL = (
    Corruption("gaussian_noise", "noise", "albumentations", (0.1, 0.2, 0.4), "std / 255"),
    Corruption("gaussian_blur", "blur", "albumentations", (0.8, 1.4, 2.0), "sigma px"),
    Corruption("rotation", "geometric", "albumentations", (15, 30, 45), "degrees, either way"),
    Corruption("shear", "geometric", "albumentations", (15, 30, 45), "degrees of x-shear, either way"),
    Corruption("translation", "geometric", "albumentations", (2, 4, 6), "px up, down, left or right"),
    Corruption("scale", "geometric", "albumentations", (0.8, 0.65, 0.5), "zoom factor"),
    Corruption(
        "brightness_contrast",
        "photometric",
        "albumentations",
        ((0.1, -0.3), (0.2, -0.5), (0.3, -0.7)),
        "(brightness, contrast) shares",
    ),
    Corruption("elastic", "elastic", "albumentations", (20, 35, 50), "alpha at sigma 4 px"),
)
_FAMILY = {
    "gaussian_noise": "noise",
    "shot_noise": "noise",
    "impulse_noise": "noise",
    "defocus_blur": "blur",
    "glass_blur": "blur",
    "motion_blur": "blur",
    "zoom_blur": "blur",
    "snow": "weather",
    "frost": "weather",
    "fog": "weather",
    "brightness": "weather",
    "contrast": "digital",
    "elastic_transform": "digital",
    "pixelate": "digital",
    "jpeg_compression": "digital",
}
# CIFAR-10-C's fifteen, in its order; severities 1, 3 and 5 of 5.
COLOUR = tuple(
    Corruption(name, family, "imagecorruptions", (1, 3, 5), "imagecorruptions severity")
    for name, family in _FAMILY.items()
)
ELASTIC_SIGMA = 4.0


def table(dataset) -> tuple[Corruption, ...]:
    """The corruptions for a dataset's images (`dataset`: its name, or their H x W x C shape, which for an
    image folder is its run's): colour images of 32x32 or more get CIFAR-10-C's (imagecorruptions takes
    nothing smaller), the rest the small ones."""
    h, w, c = data.get(dataset).shape if isinstance(dataset, str) else tuple(dataset)
    return COLOUR if c == 3 and min(h, w) >= 32 else SMALL


def set_names(dataset) -> list[str]:
    """ "clean", then "<corruption>/<severity level 1..3>" for every corruption of the dataset."""
    return [CLEAN] + [f"{c.name}/{level}" for c in table(dataset) for level in range(1, len(c.severities) + 1)]


def _either_way(make, magnitude):
    import albumentations as A

    return A.OneOf([make(magnitude), make(-magnitude)], p=1.0)


def albumentation(c: Corruption, level: int):
    """The albumentations transform of `c` at severity `level` (1-based)."""
    import albumentations as A

    m = c.severities[level - 1]
    if c.name == "gaussian_noise":
        return A.GaussNoise(std_range=(m, m), mean_range=(0.0, 0.0), p=1.0)
    if c.name == "gaussian_blur":
        return A.GaussianBlur(blur_limit=0, sigma_limit=(m, m), p=1.0)
    if c.name == "rotation":
        return _either_way(lambda a: A.Affine(rotate=(a, a), p=1.0), m)
    if c.name == "shear":
        return _either_way(lambda a: A.Affine(shear={"x": (a, a), "y": (0, 0)}, p=1.0), m)
    if c.name == "translation":
        moves = [{"x": (dx, dx), "y": (dy, dy)} for dx, dy in ((m, 0), (-m, 0), (0, m), (0, -m))]
        return A.OneOf([A.Affine(translate_px=move, p=1.0) for move in moves], p=1.0)
    if c.name == "scale":
        return A.Affine(scale=(m, m), p=1.0)
    if c.name == "brightness_contrast":
        b, k = m
        return A.RandomBrightnessContrast(brightness_limit=(b, b), contrast_limit=(k, k), p=1.0)
    if c.name == "elastic":
        return A.ElasticTransform(alpha=m, sigma=ELASTIC_SIGMA, p=1.0)
    raise TfqError(f"no albumentations transform for {c.name!r}")


def _seed(seed: int, name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"tfq-shift/{seed}/{name}".encode()).digest()[:4], "little")


def corrupt(images: np.ndarray, dataset: str, set_name: str, seed: int = 0) -> np.ndarray:
    """`images` (N x H x W x C uint8) under one named set (see `set_names`); the same arguments
    give the same bytes."""
    if set_name == CLEAN:
        return images.copy()
    name, _, level_s = set_name.partition("/")
    found = [c for c in table(images.shape[1:]) if c.name == name]
    if not found or not level_s.isdigit() or not 1 <= int(level_s) <= len(found[0].severities):
        raise TfqError(
            f"unknown shifted set {set_name!r} for {dataset}; choose from {', '.join(set_names(images.shape[1:]))}"
        )
    c, level, s = found[0], int(level_s), _seed(seed, set_name)
    if c.library == "albumentations":
        import albumentations as A

        transform = A.Compose([albumentation(c, level)], seed=s)
        return np.stack([transform(image=im)["image"].reshape(im.shape) for im in images])
    import inspect

    from imagecorruptions import corrupt as ic_corrupt
    from imagecorruptions import corruptions as ic

    # glass_blur and impulse_noise draw from a generator of their own (numba's, scikit-image's), fresh
    # and unseeded unless given `seed`; the rest draw from numpy's global generator
    own_seed = "seed" in inspect.signature(getattr(ic, c.name)).parameters
    out = np.empty_like(images)
    state = np.random.get_state()
    try:
        for i, im in enumerate(images):
            np.random.seed((s + i) % 2**32)
            extra = {"seed": (s + i) % 2**32} if own_seed else {}
            out[i] = np.asarray(
                ic_corrupt(im, corruption_name=c.name, severity=c.severities[level - 1], **extra), np.uint8
            )
    finally:
        np.random.set_state(state)
    return out


def subset(n_test: int, examples: int, seed: int) -> np.ndarray:
    """The sorted test indices every shifted set is made from: all when `examples` is 0 or more."""
    if not examples or examples >= n_test:
        return np.arange(n_test)
    return np.sort(np.random.default_rng(seed).choice(n_test, size=examples, replace=False))


def library_versions() -> dict:
    return {lib: metadata.version(lib) for lib in ("albumentations", "imagecorruptions-imaug")}


def describe(dataset) -> list[dict]:
    return [{**dataclasses.asdict(c), "levels": len(c.severities)} for c in table(dataset)]


# Everything that decides the bytes of a set, besides the table and the images: this module's code and
# the libraries under the transforms.
_KEY_LIBRARIES = (
    "albumentations",
    "albucore",
    "imagecorruptions-imaug",
    "opencv-python-headless",
    "scikit-image",
    "scipy",
    "numpy",
)


def cache_key(dataset: str, images: np.ndarray, seed: int) -> str:
    versions = {}
    for lib in _KEY_LIBRARIES:
        try:
            versions[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            versions[lib] = None
    return hashlib.sha256(
        json.dumps(
            [
                describe(images.shape[1:]),
                seed,
                versions,
                Path(__file__).read_text(),
                hashlib.sha256(images.tobytes()).hexdigest(),
                images.shape,
                str(images.dtype),
            ],
            default=str,
        ).encode()
    ).hexdigest()[:16]


def shifted_sets(dataset: str, images: np.ndarray, *, seed: int, cache: str | Path | None) -> dict[str, np.ndarray]:
    """Every set of `set_names(dataset)` made from `images`, through the cache when one is given."""
    key = cache_key(dataset, images, seed)
    path = Path(cache) / "shifted" / f"{artifacts.dataset_label(dataset)}-{key}.npz" if cache else None
    if path and path.is_file():
        with np.load(path) as z:
            return {name: z[name.replace("/", "@")] for name in set_names(images.shape[1:])}
    sets = {name: corrupt(images, dataset, name, seed) for name in set_names(images.shape[1:])}
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        with artifacts.atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **{name.replace("/", "@"): x for name, x in sets.items()})
    return sets
