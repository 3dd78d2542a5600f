"""Datasets through tensorflow-datasets, offline: one table, one pixel scaling, the splits (where the files
come from and how they are read: `tfq.data.sources`).

Raw official files live under a data root (`--data_root` or `TFQ_DATA_ROOT`), one folder per
dataset (`<root>/mnist/*.gz`); tfds reads them as `manual_dir`, builds the real dataset and checks
its own checksums. Each dataset gets its own tfds data and download folder under the cache
(`--cache_dir` or `TFQ_CACHE_DIR`), because tfds extracts manual files to
`downloads/extracted/GZIP.<file name>` and MNIST and Fashion-MNIST share file names: one shared
download folder silently serves the first dataset's images for the second.

CIFAR-10 has a second source: a JPEG copy (`<root>/cifar10_jpeg/*.tar.gz`, quality 75, lossy) read
with `tfds.folder_dataset.ImageFolder`. Every result made from it says so through `sources.Source`.

USPS (`<root>/usps/zip.{train,test}.gz`, 16x16 postal digits) comes through tfq's own small tfds
builder in two framings, both 28x28 so the MNIST models take them: `usps` is brought to MNIST's
frame (the digit's ink box scaled to fit 20x20 keeping its aspect, placed so its centre of mass
sits at the centre of 28x28, as MNIST was made) and `usps_resized` is the plain 16->28 resize, the
digit filling the whole frame: another shift on top of the change of writers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import numpy as np

from tfq.core import artifacts, cli
from tfq.core.artifacts import TfqError
from tfq.core.backend import tf
from tfq.data import folder, sources
from tfq.data.sources import CACHE_DIR_ENV, DATA_ROOT_ENV, OFFLINE_ENV  # noqa: F401  (the package's settings)

VALIDATION_FRACTION = 0.1  # carved from the end of the training split; test is for final numbers


_IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


_USPS_FILES = ("zip.train.gz", "zip.test.gz")


# tfds registers no checksums for a builder of tfq's own: the ESL files' sizes and sha256 here
_USPS_SUMS = (
    ("zip.train.gz", 1829071, "66ebf231ab51f2cf6ac1a892d0f98ccffee1079d7a5db638c1f11f366046ca16"),
    ("zip.test.gz", 439208, "8dacc3c6e136af6c3488de9e5113a7daf140c8c2f1f0b61c54ee02f03f1a962f"),
)


@dataclasses.dataclass(frozen=True)
class Dataset:
    """What tfq needs to know of one dataset."""

    name: str
    tfds_name: str
    shape: tuple[int, int, int]
    labels: tuple[str, ...]
    raw_files: tuple[str, ...]  # what tfds downloads, looked for in <root>/<name>/
    transpose: bool = False  # EMNIST is stored transposed; flip it back so digits stand upright
    augment: tuple[str, ...] = ()  # training-time augmentation: "flip", "crop"
    jpeg_folder: str | None = None  # <root>/<jpeg_folder>/*.tar.gz: a lossy JPEG copy
    online_only: bool = False  # no offline copy exists here
    raw_folder: str | None = None  # <root>/<raw_folder>/ holds raw_files (default: the name)
    checksums: tuple[tuple[str, int, str], ...] = ()  # (file, size, sha256) where tfds registers none
    own_builder: str | None = None  # tfq's module holding the tfds builder; its code names the build folder
    folder: str | None = None  # a user's images, `folder:PATH` (tfq.data.folder)

    @property
    def num_classes(self) -> int:
        return len(self.labels)


DATASETS: dict[str, Dataset] = {
    d.name: d
    for d in (
        Dataset("mnist", "mnist", (28, 28, 1), tuple("0123456789"), _IDX_FILES),
        Dataset(
            "fashion_mnist",
            "fashion_mnist",
            (28, 28, 1),
            ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
            _IDX_FILES,
            augment=("flip",),
        ),
        Dataset(
            "emnist_digits",
            "emnist/digits",
            (28, 28, 1),
            tuple("0123456789"),
            ("gzip.zip",),
            transpose=True,
            online_only=True,
        ),
        Dataset(
            "usps",
            "tfq_usps/mnist_frame",
            (28, 28, 1),
            tuple("0123456789"),
            _USPS_FILES,
            checksums=_USPS_SUMS,
            own_builder="usps",
        ),
        Dataset(
            "usps_resized",
            "tfq_usps/resized",
            (28, 28, 1),
            tuple("0123456789"),
            _USPS_FILES,
            raw_folder="usps",
            checksums=_USPS_SUMS,
            own_builder="usps",
        ),
        Dataset(
            "cifar10",
            "cifar10",
            (32, 32, 3),
            ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
            ("cifar-10-binary.tar.gz",),
            augment=("flip", "crop"),
            jpeg_folder="cifar10_jpeg",
        ),
    )
}


def split_run(name: str) -> tuple[str, str]:
    """(dataset, model) of a run folder's name `<dataset>_<model>`: the longest dataset name it starts
    with (dataset and model names may both hold '_': fashion_mnist_my_net)."""
    dataset = max((d for d in DATASETS if name.startswith(d + "_")), key=len, default=name.partition("_")[0])
    return dataset, name[len(dataset) + 1 :]


def get(name: str, shape: tuple[int, ...] | None = None) -> Dataset:
    """The dataset `name` names: one of the table's, or a user's image folder (`folder:PATH`, resized to
    `shape`, by default its images' most common size)."""
    if folder.is_folder(name):
        lst = folder.listing(name)
        return Dataset(artifacts.dataset_label(name), "", _full_shape(shape, lst), lst.classes, (), folder=name)
    if name.startswith(TFDS_PREFIX):
        return _tfds_spec(name, shape)
    if shape is not None and name in DATASETS:
        raise TfqError(f"--image_size is for an image folder or a tfds dataset: {name} has {DATASETS[name].shape}")
    try:
        return DATASETS[name]
    except KeyError:
        raise TfqError(
            f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}, folder:PATH (your own images) or "
            "tfds:NAME"
        ) from None


TFDS_PREFIX = "tfds:"


def _tfds_spec(name: str, shape) -> Dataset:
    """Any tfds image-classification dataset, `tfds:NAME` (tfds' catalogue name, with its config if it
    has one), from what tfds' code says of it: nothing is downloaded or read here."""
    import tensorflow_datasets as tfds

    tfds_name = name[len(TFDS_PREFIX) :]
    try:
        info = tfds.builder(tfds_name).info
    except Exception as e:  # noqa: BLE001 - tfds raises many types for a name it does not know
        raise TfqError(f"--dataset={name}: tfds does not know {tfds_name!r} ({str(e).splitlines()[0][:160]})") from None
    keys = tuple(info.supervised_keys or ("image", "label"))[:2]
    image, label = (info.features[k] if isinstance(k, str) and k in info.features else None for k in keys)
    if not isinstance(image, tfds.features.Image) or not isinstance(label, tfds.features.ClassLabel):
        raise TfqError(f"--dataset={name}: not an image-classification dataset (its supervised keys are {keys})")
    own = tuple(image.shape)
    if shape is None and None in own:
        raise TfqError(f"--dataset={name}: its images vary in size {own}; give --image_size=HEIGHT,WIDTH")
    if shape is not None:
        shape = tuple(int(v) for v in shape)
        shape = shape if len(shape) == 3 else (*shape, own[2] or 3)
    return Dataset(artifacts.dataset_label(name), tfds_name, shape or own, tuple(label.names), (), online_only=True)


def _full_shape(shape, lst) -> tuple[int, int, int]:
    """HEIGHT,WIDTH[,CHANNELS] made whole from the folder's own images."""
    if shape is None:
        return folder.default_shape(lst)
    shape = tuple(int(v) for v in shape)
    if len(shape) not in (2, 3) or min(shape) < 1 or (len(shape) == 3 and shape[2] not in (1, 3)):
        raise TfqError(
            f"--image_size={','.join(map(str, shape))}: expected HEIGHT,WIDTH or HEIGHT,WIDTH,CHANNELS (1 or 3)"
        )
    return shape if len(shape) == 3 else (*shape, folder.default_shape(lst)[2])


def shape_of(cfg) -> tuple[int, int, int] | None:
    """The image shape a stage's run reads a folder dataset at: --image_size, else the one recorded when
    the run's model was trained or imported, else None (the images' own). Tfq's datasets: None."""
    if not resizable(cfg.dataset):
        return tuple(cfg.image_size) if cfg.image_size else None  # `get` refuses it, naming the dataset
    run = artifacts.run_dir(cfg.artifacts, cfg.dataset, cfg.model)
    made = artifacts.read_json(run / artifacts.TRAIN_JSON, default={})
    recorded = made.get("image_shape")
    asked = f"{folder.PREFIX}{folder.path_of(cfg.dataset)}" if folder.is_folder(cfg.dataset) else cfg.dataset
    if made.get("dataset_read", asked) != asked:
        raise TfqError(
            f"{run} holds a model made on {made['dataset_read']}, not {asked}; "
            "give this one another --artifacts (or --run_name)"
        )
    if cfg.image_size and recorded and tuple(get(cfg.dataset, cfg.image_size).shape) != tuple(recorded):
        raise TfqError(
            f"--image_size={','.join(map(str, cfg.image_size))}: {run.name}'s model takes "
            f"{'x'.join(map(str, recorded))} images (recorded in its {artifacts.TRAIN_JSON})"
        )
    return tuple(cfg.image_size or recorded) if (cfg.image_size or recorded) else None


def resizable(name: str) -> bool:
    """An image folder or a tfds dataset: read at the run's image shape (`--image_size`), which its
    train.json records; tfq's own datasets keep theirs."""
    return folder.is_folder(name) or name.startswith(TFDS_PREFIX)


def recorded(spec: Dataset) -> dict:
    """What a run's train.json keeps of an image folder or tfds dataset: which one (a folder's absolute
    path), the shape later stages read it at, and its class names (tfq's own datasets: nothing)."""
    if not spec.folder and spec.raw_files:
        return {}
    which = f"{folder.PREFIX}{folder.path_of(spec.folder)}" if spec.folder else f"{TFDS_PREFIX}{spec.tfds_name}"
    return {"dataset_read": which, "image_shape": list(spec.shape), "labels": list(spec.labels)}


def spec_of(cfg) -> Dataset:
    """The dataset of a stage's config (a `cli.Run`), at its run's image shape."""
    return get(cfg.dataset, shape_of(cfg))


def load_of(cfg, **kw) -> Splits:
    """`load` for a stage's config: its dataset, data root, cache and run's image shape."""
    return load(cfg.dataset, root=cfg.data_root, cache=cfg.cache_dir, shape=shape_of(cfg), **kw)


def data_root(flag_value: str | None = None) -> Path | None:
    value = flag_value or os.environ.get(DATA_ROOT_ENV)
    return Path(value).expanduser() if value else None


def cache_dir(flag_value: str | None = None) -> Path:
    value = flag_value or os.environ.get(CACHE_DIR_ENV) or "~/.cache/tfq"
    return Path(value).expanduser()


def source_key(name: str, root: str | os.PathLike | None = None, cache: str | os.PathLike | None = None) -> str:
    """Which source `load` would read, decided by the loader's own `decide` without building
    anything: "official" (tfds-built, local official files or tfds' download: tfds checks their
    checksums), the JPEG copy with its archive's name and size, or an image folder with the digest of
    its listing. The pipeline keys its stages on it."""
    if folder.is_folder(name):
        lst = folder.listing(name)
        return f"folder {lst.root} {lst.digest}"
    loader = sources.Loader(get(name), data_root(root), cache_dir(cache))
    return f"jpeg {loader.jpeg_identity()}" if loader.decide() == "jpeg" else "official"


def check_available(
    name: str, root: str | os.PathLike | None = None, cache: str | os.PathLike | None = None, shape=None
) -> None:
    """Fail now, in one line, if `load(name)` would fail for want of data (offline, no local copy; for
    an image folder, an image that does not decode at `shape`: it is decoded into the cache here)."""
    if folder.is_folder(name):
        folder.arrays(folder.listing(name), get(name, shape).shape, cache_dir(cache))
        return
    loader = sources.Loader(get(name), data_root(root), cache_dir(cache))
    why = loader.unavailable(loader.decide())
    if why:
        raise TfqError(why)


@dataclasses.dataclass
class Splits:
    """Train/validation/test splits of one dataset, uint8 images, plus where they came from."""

    spec: Dataset
    source: sources.Source
    train: tf.data.Dataset
    val: tf.data.Dataset
    test: tf.data.Dataset


def load(
    name: str,
    *,
    root: str | os.PathLike | None = None,
    cache: str | os.PathLike | None = None,
    max_train: int | None = None,
    max_eval: int | None = None,
    shape: tuple[int, ...] | None = None,
) -> Splits:
    """Load a dataset: the last `VALIDATION_FRACTION` of train is validation (an image folder's own
    validation split where it has one); test stays apart."""
    spec = get(name, shape)
    if spec.folder:
        source, split = _folder_source(spec, cache_dir(cache))
    else:
        loader = sources.Loader(spec, data_root(root), cache_dir(cache))
        source, split = loader.source(), loader.split
    full_train = split("train")
    if spec.folder and folder.listing(spec.folder).has("validation"):
        train, val = full_train, split("validation")
    else:
        n = int(full_train.cardinality())
        n_val = int(round(n * VALIDATION_FRACTION))
        train, val = full_train.take(n - n_val), full_train.skip(n - n_val)
    test = split("test")
    if max_train:
        train = train.take(max_train)
    if max_eval:
        val, test = val.take(max_eval), test.take(max_eval)
    return Splits(spec, source, train, val, test)


def _folder_source(spec: Dataset, cache: Path):
    """An image folder's Source and its splits, decoded once into the cache (tfq.data.folder)."""
    lst = folder.listing(spec.folder)
    arrays = folder.arrays(lst, spec.shape, cache)
    n = sum(len(y) for _, y in arrays.values())
    source = sources.Source(
        "folder",
        f"image folder {lst.root} ({n:,d} images, {len(lst.classes)} classes, listing {lst.digest}, "
        f"read at {'x'.join(map(str, spec.shape))})",
    )
    return source, lambda s: tf.data.Dataset.from_tensor_slices(arrays[s])


def scale(image: tf.Tensor, input_range: tuple[float, float] | None = None) -> tf.Tensor:
    """The one pixel scaling of tfq: uint8 [0, 255] -> float32 [LOW, HIGH], the range the model takes
    (`input_range`, default [0, 1]). Written so that [0, 1] gives x / 255 and [0, 255] gives x exactly."""
    lo, hi = cli.pixel_range(input_range)
    return tf.cast(image, tf.float32) * (hi - lo) / 255.0 + lo


def _augment(spec: Dataset):
    """Random flips/crops from a per-example stateless seed, so a seed replays exactly."""

    def fn(example, seeds):
        image, label = example
        if "flip" in spec.augment:
            image = tf.image.stateless_random_flip_left_right(image, seeds[0])
        if "crop" in spec.augment:
            padded = tf.pad(image, [[4, 4], [4, 4], [0, 0]], mode="REFLECT")
            image = tf.image.stateless_random_crop(padded, spec.shape, seeds[1])
        return image, label

    return fn


def batches(ds: tf.data.Dataset, batch_size: int, input_range=None) -> tf.data.Dataset:
    """Evaluation batches, in file order: cache -> scale -> batch -> prefetch."""
    return _scaled_batches(ds.cache(), batch_size, input_range)


def _scaled_batches(ds: tf.data.Dataset, batch_size: int, input_range=None) -> tf.data.Dataset:
    ds = ds.map(lambda x, y: (scale(x, input_range), y), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's shuffle and augmentation: a function of (seed, epoch) alone."""
    return int.from_bytes(hashlib.sha256(f"tfq/{seed}/{epoch}".encode()).digest()[:4], "little")


def training_epoch(
    cached: tf.data.Dataset, spec: Dataset, batch_size: int, *, seed: int, epoch: int, input_range=None
) -> tf.data.Dataset:
    """One epoch of training batches, shuffled and augmented from (seed, epoch) alone.

    `cached` is the training split after `.cache()`, built once per stage and shared by every
    epoch. Nothing depends on how often a pipeline was iterated before: a run resumed at epoch 2
    sees epoch 2's order and crops, and QAT and its float control see the same batches.
    """
    s = epoch_seed(seed, epoch)
    ds = cached.shuffle(60_000, seed=s, reshuffle_each_iteration=False)
    if spec.augment:
        seeds = tf.data.Dataset.random(seed=s).batch(2).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds)).map(_augment(spec), num_parallel_calls=tf.data.AUTOTUNE)
    return _scaled_batches(ds, batch_size, input_range)


def to_numpy(ds: tf.data.Dataset, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """All (uint8 images, labels) of a split as arrays, for the converters and the harness."""
    if limit:
        ds = ds.take(limit)
    xs, ys = [], []
    for x, y in ds.batch(4096).as_numpy_iterator():
        xs.append(x)
        ys.append(y)
    if not xs:
        raise TfqError("the split is empty")
    return np.concatenate(xs), np.concatenate(ys).astype(np.int64)


def calibration_samples(splits: Splits, n: int, seed: int = 0, input_range=None) -> np.ndarray:
    """`n` scaled training images, drawn by `seed` from the first max(10n, 1000) of the split.

    The draw uses numpy's generator, not a tf.data shuffle, so it does not depend on whatever
    TensorFlow global seed the process set before (a pipeline run and a lone `tfq.convert`
    calibrate on the same images).
    """
    pool, _ = to_numpy(splits.train, limit=max(n * 10, 1000))
    if n > len(pool):
        raise TfqError(
            f"asked for {n} calibration images, but the training split has {len(pool)} (lower --num_calibration)"
        )
    chosen = np.sort(np.random.default_rng(seed).choice(len(pool), size=n, replace=False))
    return scale(pool[chosen], input_range).numpy()
