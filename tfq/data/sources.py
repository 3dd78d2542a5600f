"""Where a dataset's images come from, offline first: the official raw files under the data root, read by
tfds as `manual_dir` and checked against tfds' own checksums; CIFAR-10's JPEG copy through
`tfds.folder_dataset.ImageFolder`; or tfds' own download where its servers answer. `Loader` decides
which, names it (`Source`, recorded in every result made from it) and builds the splits; a dataset that
cannot be had is one clear error naming the files to put where.
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
from typing import TYPE_CHECKING

from tfq.core import artifacts, console
from tfq.core.artifacts import TfqError
from tfq.core.backend import tf

if TYPE_CHECKING:
    from tfq.data import Dataset

DATA_ROOT_ENV = "TFQ_DATA_ROOT"
OFFLINE_ENV = "TFQ_OFFLINE"  # set: never download, even where tfds' servers answer (the tests set it)
CACHE_DIR_ENV = "TFQ_CACHE_DIR"


@dataclasses.dataclass(frozen=True)
class Source:
    """Where a dataset's examples come from; recorded beside every result."""

    kind: str  # "tfds" or "jpeg"
    description: str
    lossy: bool = False

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


class Loader:
    """Resolves one dataset's source and hands out its splits as uint8 image/label datasets."""

    def __init__(self, spec: Dataset, root: Path | None, cache: Path):
        self.spec, self.root, self.cache = spec, root, cache
        # a builder of tfq's own builds into a folder named by its code: changed framing, new build
        self._tfds_dir = (
            cache / spec.name / (f"tfds-{_module_digest(spec.own_builder)}" if spec.own_builder else "tfds")
        )
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
        if self.spec.raw_files and not self._missing_raw():
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
            print(f"{self.spec.name}: building the tfds dataset from the files in {raw} (first use only)", flush=True)
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
        print(
            f"{self.spec.name}: no local files; tfds downloads it into {self.cache / self.spec.name} (first use only)",
            flush=True,
        )
        self._prepare(manual_dir=None)
        return Source("tfds", f"{version} (downloaded by tfds)")

    def unavailable(self, kind: str) -> str | None:
        """Why the source `decide` picked cannot be had ("missing", or "download" offline), else None."""
        if kind == "missing":
            return self._missing_message()
        if kind == "download":
            why = unreachable(list(self._url_infos()))
            if why is not None:
                return f"{self._missing_message()}; tfds cannot download it either ({why})"
        return None

    def _url_infos(self) -> dict:
        """tfds' registered download URLs with their sizes and sha256 checksums."""
        return dict(type(self._builder).url_infos or {})

    def _verify_raw(self, raw: Path) -> None:
        """Each raw file against the size and sha256 tfds registers for it (or tfq does, for its own
        builders), with one clear line instead of tfds' NonMatchingChecksumError traceback."""
        expected = [
            (info.filename or url.rsplit("/", 1)[-1], int(info.size), info.checksum, "tfds", f" ({url})")
            for url, info in self._url_infos().items()
        ]
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
                    f"with sha256 {want_digest[:16]}...; replace it with the official {name}{origin}"
                )

    def _prepare(self, manual_dir: Path | None) -> None:
        import tensorflow_datasets as tfds

        if not console.verbose():
            tfds.disable_progress_bar()
        config = tfds.download.DownloadConfig(manual_dir=str(manual_dir) if manual_dir else None)
        with console.quiet():
            self._builder.download_and_prepare(
                download_dir=str(self.cache / self.spec.name / "downloads"), download_config=config
            )

    def _missing_message(self) -> str:
        if not self.spec.raw_files:  # any tfds dataset (tfds:NAME): only tfds' own build or download
            return f"tfds dataset {self.spec.tfds_name!r} is not built in {self._tfds_dir} and is not available offline"
        folder = self.spec.raw_folder or self.spec.name
        where = self._raw_dir(folder) or f"<data root>/{folder}"
        missing = self._missing_raw() if self.root else list(self.spec.raw_files)
        msg = f"dataset {self.spec.name!r} is not available offline: put {', '.join(missing)} in {where}/"
        if self.spec.jpeg_folder:
            jpeg = self._raw_dir(self.spec.jpeg_folder) or "<data root>/" + self.spec.jpeg_folder
            msg += f" (or a JPEG copy *.tar.gz in {jpeg}/)"
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
            known = self._builder.info.splits  # empty under tfds' mock data
            if not self.spec.raw_files and known and split not in known:  # any tfds dataset
                raise TfqError(
                    f"tfds dataset {self.spec.tfds_name!r} has no {split} split (it has "
                    f"{', '.join(known)}); tfq needs train and test"
                )
            ds = self._builder.as_dataset(split=split, shuffle_files=False, as_supervised=True)
        if self.spec.transpose:
            ds = ds.map(lambda x, y: (tf.transpose(x, [1, 0, 2]), y))
        if not self.spec.raw_files and tuple(self._builder.info.features["image"].shape) != self.spec.shape:
            ds = ds.map(lambda x, y: (fit(x, self.spec.shape), y))  # tfds:NAME at the run's --image_size
        return ds


def fit(image: tf.Tensor, shape: tuple[int, int, int]) -> tf.Tensor:
    """A uint8 image at `shape`: channels converted (gray <-> RGB), then resized (bilinear, antialiased)."""
    have, want = image.shape[-1], shape[2]
    if have == 1 and want == 3:
        image = tf.image.grayscale_to_rgb(image)
    elif have == 3 and want == 1:
        image = tf.image.rgb_to_grayscale(image)
    resized = tf.image.resize(image, shape[:2], antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)


REACH_TIMEOUT_S = 3.0


def unreachable(urls: list[str], timeout: float = REACH_TIMEOUT_S) -> str | None:
    """None when a TCP connection to every download host opens within `timeout` seconds, else why
    not. Checked before tfds tries, whose own retries take minutes to give up offline."""
    import socket
    import threading
    from urllib.parse import urlsplit

    if os.environ.get(OFFLINE_ENV, "").strip() not in ("", "0"):
        return f"{OFFLINE_ENV} is set"
    hosts = dict.fromkeys(
        (u.hostname, u.port or (443 if u.scheme == "https" else 80)) for u in map(urlsplit, urls) if u.hostname
    )
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
