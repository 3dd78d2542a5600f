"""Datasets through tensorflow-datasets, offline: one table, one loader, one pixel scaling.

Raw official files live under a data root (`--data_root` or `TFQ_DATA_ROOT`), one folder per
dataset (`<root>/mnist/*.gz`); tfds reads them as `manual_dir`, builds the real dataset and checks
its own checksums. Each dataset gets its own tfds data and download folder under the cache
(`--cache_dir` or `TFQ_CACHE_DIR`), because tfds extracts manual files to
`downloads/extracted/GZIP.<file name>` and MNIST and Fashion-MNIST share file names: one shared
download folder silently serves the first dataset's images for the second.

CIFAR-10 has a second source: a JPEG copy (`<root>/cifar10_jpeg/*.tar.gz`, quality 75, lossy) read
with `tfds.folder_dataset.ImageFolder`. Every result made from it says so through `Source`.

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
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path

import numpy as np

from tfq.core import artifacts, console
from tfq.core.artifacts import TfqError
from tfq.core.backend import tf

DATA_ROOT_ENV = "TFQ_DATA_ROOT"
CACHE_DIR_ENV = "TFQ_CACHE_DIR"
OFFLINE_ENV = "TFQ_OFFLINE"  # set: never download, even where tfds' servers answer (the tests set it)
VALIDATION_FRACTION = 0.1  # carved from the end of the training split; test is for final numbers

_IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)

_USPS_FILES = ("zip.train.gz", "zip.test.gz")
# tfds registers no checksums for a builder of tfq's own: the ESL files' sizes and sha256 here
_USPS_SUMS = (("zip.train.gz", 1829071, "66ebf231ab51f2cf6ac1a892d0f98ccffee1079d7a5db638c1f11f366046ca16"),
              ("zip.test.gz", 439208, "8dacc3c6e136af6c3488de9e5113a7daf140c8c2f1f0b61c54ee02f03f1a962f"))


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
            ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
             "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
            _IDX_FILES,
            augment=("flip",),
        ),
        Dataset(
            "emnist_digits", "emnist/digits", (28, 28, 1), tuple("0123456789"), ("gzip.zip",),
            transpose=True, online_only=True,
        ),
        Dataset("usps", "tfq_usps/mnist_frame", (28, 28, 1), tuple("0123456789"), _USPS_FILES,
                checksums=_USPS_SUMS, own_builder="usps"),
        Dataset("usps_resized", "tfq_usps/resized", (28, 28, 1), tuple("0123456789"), _USPS_FILES,
                raw_folder="usps", checksums=_USPS_SUMS, own_builder="usps"),
        Dataset(
            "cifar10",
            "cifar10",
            (32, 32, 3),
            ("airplane", "automobile", "bird", "cat", "deer",
             "dog", "frog", "horse", "ship", "truck"),
            ("cifar-10-binary.tar.gz",),
            augment=("flip", "crop"),
            jpeg_folder="cifar10_jpeg",
        ),
    )
}


def get(name: str) -> Dataset:
    try:
        return DATASETS[name]
    except KeyError:
        raise TfqError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}") from None


@dataclasses.dataclass(frozen=True)
class Source:
    """Where a dataset's examples come from; recorded beside every result."""

    kind: str  # "tfds" or "jpeg"
    description: str
    lossy: bool = False

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def data_root(flag_value: str | None = None) -> Path | None:
    value = flag_value or os.environ.get(DATA_ROOT_ENV)
    return Path(value).expanduser() if value else None


def cache_dir(flag_value: str | None = None) -> Path:
    value = flag_value or os.environ.get(CACHE_DIR_ENV) or "~/.cache/tfq"
    return Path(value).expanduser()


class _Loader:
    """Resolves one dataset's source and hands out its splits as uint8 image/label datasets."""

    def __init__(self, spec: Dataset, root: Path | None, cache: Path):
        self.spec, self.root, self.cache = spec, root, cache
        # a builder of tfq's own builds into a folder named by its code: changed framing, new build
        self._tfds_dir = cache / spec.name / (f"tfds-{_module_digest(spec.own_builder)}" if spec.own_builder else "tfds")
        self._builder = None
        self._image_folder = None

    def _raw_dir(self, folder: str) -> Path | None:
        return self.root / folder if self.root else None

    def _missing_raw(self) -> list[str]:
        raw = self._raw_dir(self.spec.raw_folder or self.spec.name)
        return [f for f in self.spec.raw_files if raw is None or not (raw / f).is_file()]

    def _jpeg_archive(self) -> Path | None:
        folder = self._raw_dir(self.spec.jpeg_folder) if self.spec.jpeg_folder else None
        if folder and folder.is_dir():
            archives = sorted(folder.glob("*.tar.gz"))
            return archives[0] if archives else None
        return None

    def decide(self) -> str:
        """Which source `source()` will read, local first, without building or unpacking anything:
        "prepared" (a built tfds dataset), "official" (the files in the data root), "jpeg" (the
        JPEG copy, unpacked or not), "download" (no local files: tfds' own download) or "missing"."""
        import tensorflow_datasets as tfds

        from tfq.data import usps  # noqa: F401  (registers tfq's USPS builder with tfds)

        if self._builder is None:
            self._builder = tfds.builder(self.spec.tfds_name, data_dir=str(self._tfds_dir))
        if self._builder.is_prepared():
            return "prepared"
        if not self._missing_raw():
            return "official"
        if self.spec.jpeg_folder and (self._extracted.is_dir() or self._jpeg_archive()):
            return "jpeg"
        raw = self._raw_dir(self.spec.raw_folder or self.spec.name)
        return "missing" if raw is not None and any((raw / f).is_file() for f in self.spec.raw_files) else "download"

    @property
    def _extracted(self) -> Path:
        return self.cache / self.spec.name / "jpeg"

    def jpeg_identity(self) -> str:
        """The JPEG archive a copy is (or will be) unpacked from: name and size."""
        marker = self._extracted / _SOURCE_MARKER
        if marker.is_file():
            return marker.read_text().strip()
        archive = self._jpeg_archive()
        return f"{archive.name} {archive.stat().st_size} bytes" if archive else "an unpacked copy of unknown origin"

    def source(self) -> Source:
        """Pick the source (see `decide`) and make it ready: build, unpack or download; offline
        with nothing local, one error."""
        import tensorflow_datasets as tfds

        kind = self.decide()
        version = f"tfds {self.spec.tfds_name} {self._builder.version}"
        if kind == "prepared":
            return Source("tfds", f"{version} (official files)")
        if kind == "official":
            raw = self._raw_dir(self.spec.raw_folder or self.spec.name)
            self._verify_raw(raw)
            print(f"{self.spec.name}: building the tfds dataset from the files in {raw} (first use only)",
                  flush=True)
            try:
                self._prepare(manual_dir=raw)
            except (ValueError, OSError, EOFError) as e:  # a builder of tfq's own reading a file it cannot parse
                if not self.spec.own_builder:
                    raise
                raise TfqError(f"cannot build {self.spec.name} from {raw}: {str(e).splitlines()[0]}") from None
            return Source("tfds", f"{version} (official files)")
        if kind == "jpeg":
            if not self._extracted.is_dir():
                archive = self._jpeg_archive()
                print(f"{self.spec.name}: unpacking {archive} (first use only)", flush=True)
                _extract_atomically(archive, self._extracted)
            self._image_folder = tfds.folder_dataset.ImageFolder(str(self._extracted))
            got = tuple(self._image_folder.info.features["label"].names)
            if got != self.spec.labels:
                raise TfqError(f"{self._extracted}: class folders {got} are not {self.spec.labels}")
            return Source(
                "jpeg",
                f"{self.spec.name} JPEG copy {self.jpeg_identity()} "
                "(lossy re-encoding: accuracies are close to, not equal to, the official data)",
                lossy=True,
            )
        why = self.unavailable(kind)
        if why:
            raise TfqError(why)
        print(f"{self.spec.name}: no local files; tfds downloads it into {self.cache / self.spec.name} "
              "(first use only)", flush=True)
        self._prepare(manual_dir=None)
        return Source("tfds", f"{version} (downloaded by tfds)")

    def unavailable(self, kind: str) -> str | None:
        """Why the source `decide` picked cannot be had ("missing", or "download" offline), else None."""
        if kind == "missing":
            return self._missing_message()
        if kind == "download":
            unreachable = _unreachable(list(self._url_infos()))
            if unreachable is not None:
                return f"{self._missing_message()}; tfds cannot download it either ({unreachable})"
        return None

    def _url_infos(self) -> dict:
        """tfds' registered download URLs with their sizes and sha256 checksums."""
        return dict(type(self._builder).url_infos or {})

    def _verify_raw(self, raw: Path) -> None:
        """Each raw file against the size and sha256 tfds registers for it (or tfq does, for its own
        builders), with one clear line instead of tfds' NonMatchingChecksumError traceback."""
        expected = [(info.filename or url.rsplit("/", 1)[-1], int(info.size), info.checksum, "tfds", f" ({url})")
                    for url, info in self._url_infos().items()]
        expected += [(name, size, digest, "tfq", "") for name, size, digest in self.spec.checksums]
        for name, want_size, want_digest, who, origin in expected:
            path = raw / name
            if name not in self.spec.raw_files or not path.is_file():
                continue
            size = path.stat().st_size
            digest = artifacts.sha256(path) if size == want_size else None
            if size != want_size or digest != want_digest:
                got = f"{size:,d} bytes" + (f" with sha256 {digest[:16]}..." if digest else "")
                raise TfqError(
                    f"{path} is damaged or not the official file: {got}, but {who} expects {want_size:,d} bytes "
                    f"with sha256 {want_digest[:16]}...; replace it with the official {name}{origin}")

    def _prepare(self, manual_dir: Path | None) -> None:
        import tensorflow_datasets as tfds

        if not console.verbose():
            tfds.disable_progress_bar()
        config = tfds.download.DownloadConfig(manual_dir=str(manual_dir) if manual_dir else None)
        with console.quiet():
            self._builder.download_and_prepare(download_dir=str(self.cache / self.spec.name / "downloads"),
                                               download_config=config)

    def _missing_message(self) -> str:
        folder = self.spec.raw_folder or self.spec.name
        where = self._raw_dir(folder) or f"<data root>/{folder}"
        missing = self._missing_raw() if self.root else list(self.spec.raw_files)
        msg = f"dataset {self.spec.name!r} is not available offline: put {', '.join(missing)} in {where}/"
        if self.spec.jpeg_folder:
            msg += f" (or a JPEG copy *.tar.gz in {self._raw_dir(self.spec.jpeg_folder) or '<data root>/' + self.spec.jpeg_folder}/)"
        if self.root is None:
            msg += f"; set --data_root or {DATA_ROOT_ENV}"
        if self.spec.online_only:
            msg += "; no offline copy ships with tfq, so this needs a machine with internet"
        return msg

    def split(self, split: str) -> tf.data.Dataset:
        """`split` is "train" or "test": (uint8 HxWxC image, int64 label) pairs, file order."""
        if self._image_folder is not None:
            ds = self._image_folder.as_dataset(split=split, shuffle_files=False, as_supervised=True)
            ds = ds.map(lambda x, y: (tf.ensure_shape(x, self.spec.shape), y))
        else:
            ds = self._builder.as_dataset(split=split, shuffle_files=False, as_supervised=True)
        if self.spec.transpose:
            ds = ds.map(lambda x, y: (tf.transpose(x, [1, 0, 2]), y))
        return ds


REACH_TIMEOUT_S = 3.0


def _unreachable(urls: list[str], timeout: float = REACH_TIMEOUT_S) -> str | None:
    """None when a TCP connection to every download host opens within `timeout` seconds, else why
    not. Checked before tfds tries, whose own retries take minutes to give up offline."""
    import socket
    import threading
    from urllib.parse import urlsplit

    if os.environ.get(OFFLINE_ENV, "").strip() not in ("", "0"):
        return f"{OFFLINE_ENV} is set"
    hosts = dict.fromkeys((u.hostname, u.port or (443 if u.scheme == "https" else 80))
                          for u in map(urlsplit, urls) if u.hostname)
    if not hosts:
        return "tfds registers no download URL for it"
    for host, port in hosts:
        outcome: list[str] = []

        def connect(host=host, port=port, outcome=outcome):
            try:
                socket.create_connection((host, port), timeout=timeout).close()
                outcome.append("")
            except OSError as e:
                outcome.append(f"{host}:{port} is not reachable: {e.strerror or e}")

        worker = threading.Thread(target=connect, daemon=True)  # name lookups ignore the timeout
        worker.start()
        worker.join(timeout + 0.5)
        if not outcome:
            return f"{host}:{port} did not answer within {timeout:.0f} s"
        if outcome[0]:
            return outcome[0]
    return None


_SOURCE_MARKER = ".tfq-source"  # in an unpacked JPEG copy: the archive it came from


def _extract_atomically(archive: Path, dest: Path) -> None:
    """Unpack the JPEG archive into the cache; a crash leaves no half-filled folder behind."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".extract."))
    try:
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers() if m.isdir() or m.name.lower().endswith(".jpg")]
            tar.extractall(tmp, members=members, filter="data")
        (tmp / _SOURCE_MARKER).write_text(f"{archive.name} {archive.stat().st_size} bytes\n")
        try:
            os.replace(tmp, dest)
        except OSError:
            if not (dest / _SOURCE_MARKER).is_file():
                raise
            # another process unpacked the same archive first: its complete copy serves
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:  # a truncated .tar.gz raises EOFError
        raise TfqError(f"cannot unpack {archive}: {e}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _module_digest(module: str) -> str:
    return hashlib.sha256((Path(__file__).parent / f"{module}.py").read_bytes()).hexdigest()[:12]


def source_key(name: str, root: str | os.PathLike | None = None, cache: str | os.PathLike | None = None) -> str:
    """Which source `load` would read, decided by the loader's own `decide` without building
    anything: "official" (tfds-built, local official files or tfds' download: tfds checks their
    checksums) or the JPEG copy with its archive's name and size. The pipeline keys its stages on it."""
    loader = _Loader(get(name), data_root(root), cache_dir(cache))
    return f"jpeg {loader.jpeg_identity()}" if loader.decide() == "jpeg" else "official"


def check_available(name: str, root: str | os.PathLike | None = None, cache: str | os.PathLike | None = None) -> None:
    """Fail now, in one line, if `load(name)` would fail for want of data (offline, no local copy)."""
    loader = _Loader(get(name), data_root(root), cache_dir(cache))
    why = loader.unavailable(loader.decide())
    if why:
        raise TfqError(why)


@dataclasses.dataclass
class Splits:
    """Train/validation/test splits of one dataset, uint8 images, plus where they came from."""

    spec: Dataset
    source: Source
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
) -> Splits:
    """Load a dataset: the last `VALIDATION_FRACTION` of train is validation; test stays apart."""
    spec = get(name)
    loader = _Loader(spec, data_root(root), cache_dir(cache))
    source = loader.source()
    full_train = loader.split("train")
    n = int(full_train.cardinality())
    n_val = int(round(n * VALIDATION_FRACTION))
    train, val, test = full_train.take(n - n_val), full_train.skip(n - n_val), loader.split("test")
    if max_train:
        train = train.take(max_train)
    if max_eval:
        val, test = val.take(max_eval), test.take(max_eval)
    return Splits(spec, source, train, val, test)


def scale(image: tf.Tensor) -> tf.Tensor:
    """The one pixel scaling of tfq: uint8 [0, 255] -> float32 [0, 1]."""
    return tf.cast(image, tf.float32) / 255.0


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


def batches(ds: tf.data.Dataset, batch_size: int) -> tf.data.Dataset:
    """Evaluation batches, in file order: cache -> scale -> batch -> prefetch."""
    return _scaled_batches(ds.cache(), batch_size)


def _scaled_batches(ds: tf.data.Dataset, batch_size: int) -> tf.data.Dataset:
    ds = ds.map(lambda x, y: (scale(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's shuffle and augmentation: a function of (seed, epoch) alone."""
    return int.from_bytes(hashlib.sha256(f"tfq/{seed}/{epoch}".encode()).digest()[:4], "little")


def training_epoch(cached: tf.data.Dataset, spec: Dataset, batch_size: int, *, seed: int,
                   epoch: int) -> tf.data.Dataset:
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
    return _scaled_batches(ds, batch_size)


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


def calibration_samples(splits: Splits, n: int, seed: int = 0) -> np.ndarray:
    """`n` scaled training images, drawn by `seed` from the first max(10n, 1000) of the split.

    The draw uses numpy's generator, not a tf.data shuffle, so it does not depend on whatever
    TensorFlow global seed the process set before (a pipeline run and a lone `tfq.convert`
    calibrate on the same images).
    """
    pool, _ = to_numpy(splits.train, limit=max(n * 10, 1000))
    if n > len(pool):
        raise TfqError(f"asked for {n} calibration images, but the training split has {len(pool)}")
    chosen = np.sort(np.random.default_rng(seed).choice(len(pool), size=n, replace=False))
    return scale(pool[chosen]).numpy()
