"""tfq.data: real files through tfds offline, the JPEG copy, mock data for all four datasets."""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import tarfile
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from tests.conftest import error_lines
from tfq import data
from tfq.core import artifacts
from tfq.core.artifacts import TfqError
from tfq.core.backend import tf
from tfq.data import sources


def _idx_image_hashes(path) -> set[str]:
    with gzip.open(path) as f:
        raw = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28 * 28)
    return {hashlib.sha1(row.tobytes()).hexdigest() for row in raw}


def _hashes(images: np.ndarray) -> set[str]:
    return {hashlib.sha1(im.reshape(-1).tobytes()).hexdigest() for im in images}


def test_mnist_and_fashion_built_in_one_cache_are_different_datasets(data_root, cache):
    """The trap: tfds reuses downloads/extracted/GZIP.<name> across datasets with equal file names."""
    mnist_x, _ = data.to_numpy(data.load("mnist", root=data_root, cache=cache).test, limit=300)
    fashion_x, _ = data.to_numpy(data.load("fashion_mnist", root=data_root, cache=cache).test, limit=300)
    assert not np.array_equal(mnist_x, fashion_x)
    # Each dataset's images are exactly the images of its own raw file, not the other's.
    mnist_raw = _idx_image_hashes(data_root / "mnist" / "t10k-images-idx3-ubyte.gz")
    fashion_raw = _idx_image_hashes(data_root / "fashion_mnist" / "t10k-images-idx3-ubyte.gz")
    assert _hashes(mnist_x) <= mnist_raw and not _hashes(mnist_x) & fashion_raw
    assert _hashes(fashion_x) <= fashion_raw and not _hashes(fashion_x) & mnist_raw


def test_splits_carve_validation_from_train_and_keep_test_apart(data_root, cache):
    splits = data.load("mnist", root=data_root, cache=cache)
    assert splits.source.kind == "tfds" and not splits.source.lossy
    assert int(splits.train.cardinality()) == 54_000
    assert int(splits.val.cardinality()) == 6_000
    assert int(splits.test.cardinality()) == 10_000
    train_x, _ = data.to_numpy(splits.train.skip(53_000))
    val_x, val_y = data.to_numpy(splits.val)
    assert not _hashes(train_x) & _hashes(val_x)
    assert set(np.unique(val_y)) == set(range(10))


def test_batches_scale_pixels_to_unit_range_once(data_root, cache):
    splits = data.load("mnist", root=data_root, cache=cache, max_train=256)
    x, y = next(iter(data.training_epoch(splits.train.cache(), splits.spec, 64, seed=1, epoch=0)))
    assert x.dtype.name == "float32" and x.shape == (64, 28, 28, 1) and y.shape == (64,)
    assert 0.0 <= float(np.min(x)) and float(np.max(x)) == pytest.approx(1.0)
    assert float(data.scale(np.uint8(255))) == 1.0 and float(data.scale(np.uint8(0))) == 0.0


def test_augmentation_replays_with_the_same_seed(data_root, cache):
    splits = data.load("fashion_mnist", root=data_root, cache=cache, max_train=128)
    cached = splits.train.cache()

    def epoch(seed, e):
        return np.concatenate([x.numpy() for x, _ in data.training_epoch(cached, splits.spec, 64, seed=seed, epoch=e)])

    first = epoch(3, 0)
    assert np.array_equal(first, epoch(3, 0))  # a new pipeline for the same (seed, epoch): the same batches
    assert not np.array_equal(first, epoch(3, 1)) and not np.array_equal(first, epoch(4, 0))
    pipeline = data.training_epoch(cached, splits.spec, 64, seed=3, epoch=0)
    twice = [np.concatenate([x.numpy() for x, _ in pipeline]) for _ in range(2)]
    assert np.array_equal(twice[0], first) and np.array_equal(twice[1], first)  # no reshuffle on reuse


def test_calibration_samples_come_scaled_from_train_and_are_seeded(data_root, cache):
    splits = data.load("mnist", root=data_root, cache=cache)
    tf.random.set_seed(123)  # what a training stage earlier in the same process leaves behind
    a = data.calibration_samples(splits, 50, seed=0)
    tf.random.set_seed(7)
    b = data.calibration_samples(splits, 50, seed=0)
    assert a.shape == (50, 28, 28, 1) and a.dtype == np.float32
    assert a.min() >= 0.0 and a.max() <= 1.0
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, data.calibration_samples(splits, 50, seed=1))
    val_x, _ = data.to_numpy(splits.val)
    test_x, _ = data.to_numpy(splits.test)
    as_uint8 = np.round(a * 255).astype(np.uint8)
    assert not _hashes(as_uint8) & (_hashes(val_x) | _hashes(test_x))


def test_cifar10_reads_the_shared_jpeg_copy_and_says_it_is_lossy(data_root, cache):
    splits = data.load("cifar10", root=data_root, cache=cache, max_eval=200)
    assert splits.source.kind == "jpeg" and splits.source.lossy
    assert "lossy" in splits.source.description
    assert int(splits.train.cardinality()) == 45_000 and int(splits.val.cardinality()) == 200
    x, y = data.to_numpy(splits.test)
    assert x.shape == (200, 32, 32, 3) and x.dtype == np.uint8
    assert set(np.unique(y)) <= set(range(10)) and len(np.unique(y)) >= 8


def _jpeg(value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((32, 32, 3), value, np.uint8)).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def test_cifar10_labels_follow_cifar_order_from_folder_names(tmp_path):
    """Class folder airplane..truck -> label 0..9, checked through images that carry their label."""
    archive = tmp_path / "root" / "cifar10_jpeg" / "tiny.tar.gz"
    archive.parent.mkdir(parents=True)
    with tarfile.open(archive, "w:gz") as tar:
        for split in ("train", "test"):
            for label, name in enumerate(data.get("cifar10").labels):
                for i in range(2):
                    blob = _jpeg(label * 25)
                    info = tarfile.TarInfo(f"{split}/{name}/{i:04d}.jpg")
                    info.size = len(blob)
                    tar.addfile(info, io.BytesIO(blob))
    splits = data.load("cifar10", root=tmp_path / "root", cache=tmp_path / "cache")
    x, y = data.to_numpy(splits.test)
    assert len(y) == 20
    np.testing.assert_array_equal(np.round(x.mean(axis=(1, 2, 3)) / 25).astype(int), y)


def test_missing_data_offline_fails_fast_naming_files_and_folder(tmp_path, monkeypatch):
    monkeypatch.delenv(data.DATA_ROOT_ENV, raising=False)
    started = time.time()
    with pytest.raises(TfqError) as e:
        data.load("fashion_mnist", root=tmp_path / "empty", cache=tmp_path / "cache")
    assert time.time() - started < 10
    message = str(e.value)
    assert "train-images-idx3-ubyte.gz" in message and str(tmp_path / "empty" / "fashion_mnist") in message
    with pytest.raises(TfqError, match="internet"):
        data.load("emnist_digits", root=tmp_path / "empty", cache=tmp_path / "cache")
    with pytest.raises(TfqError, match="TFQ_DATA_ROOT"):
        data.load("cifar10", root=None, cache=tmp_path / "cache")


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(TfqError, match="mnist, fashion_mnist, emnist_digits, usps, usps_resized, cifar10"):
        data.get("imagenet")


def _recording_download(monkeypatch) -> list[dict]:
    """Replace tfds' download_and_prepare (inside mock_data) with a stand-in that records its call.

    Pass a MonkeyPatch that is undone before mock_data exits: undone after it, it would put back
    mock_data's own no-op download for the rest of the session, and a later real build would do
    nothing (found when USPS was first built late in a session)."""
    calls = []

    def fake(self, *, download_dir=None, download_config=None, **_):
        calls.append(
            {
                "dataset": self.name,
                "download_dir": download_dir,
                "manual_dir": download_config.manual_dir if download_config else None,
            }
        )

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", fake)
    return calls


def test_local_files_come_first_even_where_tfds_could_download(data_root, tmp_path, monkeypatch):
    def must_not_ask(urls):
        raise AssertionError("the network was consulted although the files are local")

    monkeypatch.setattr(sources, "unreachable", must_not_ask)
    with tfds.testing.mock_data(num_examples=10), pytest.MonkeyPatch.context() as inside:
        calls = _recording_download(inside)  # undone before mock_data restores tfds (see the helper)
        splits = data.load("mnist", root=data_root, cache=tmp_path / "cache")
    assert splits.source.description.endswith("(official files)")
    assert calls == [
        {
            "dataset": "mnist",
            "download_dir": str(tmp_path / "cache" / "mnist" / "downloads"),
            "manual_dir": str(data_root / "mnist"),
        }
    ]


def test_without_local_files_tfds_downloads_into_the_datasets_own_cache(tmp_path, monkeypatch):
    monkeypatch.delenv(data.DATA_ROOT_ENV, raising=False)
    asked = []
    monkeypatch.setattr(sources, "unreachable", lambda urls: asked.extend(urls))  # returns None: reachable
    with tfds.testing.mock_data(num_examples=10), pytest.MonkeyPatch.context() as inside:
        calls = _recording_download(inside)
        splits = data.load("fashion_mnist", root=None, cache=tmp_path / "cache")
    assert "downloaded by tfds" in splits.source.description
    assert calls == [
        {
            "dataset": "fashion_mnist",
            "manual_dir": None,
            "download_dir": str(tmp_path / "cache" / "fashion_mnist" / "downloads"),
        }
    ]
    assert asked and all("fashion-mnist" in u for u in asked)  # tfds' own registered URLs


def test_offline_without_local_files_fails_within_seconds_for_real(tmp_path, monkeypatch):
    monkeypatch.delenv(data.DATA_ROOT_ENV, raising=False)
    if sources.unreachable(list(tfds.builder("mnist").url_infos)) is None:
        pytest.skip("this machine reaches tfds' download server; the offline path cannot be shown here")
    started = time.time()
    with pytest.raises(TfqError, match="tfds cannot download it either .*not reachable|did not answer"):
        data.load("mnist", root=None, cache=tmp_path / "cache")
    assert time.time() - started < 15  # tfds' own retries take about 200 s to give up


def test_an_unanswered_connection_is_given_up_after_the_timeout(monkeypatch):
    import socket

    def hang(*args, **kwargs):
        time.sleep(30)

    monkeypatch.setattr(socket, "create_connection", hang)
    started = time.time()
    why = sources.unreachable(["https://example.invalid/x.gz"], timeout=0.5)
    assert "did not answer within" in why and time.time() - started < 3


def _truncated_copy(data_root, tmp_path, name="train-images-idx3-ubyte.gz", keep=100_000):
    root = tmp_path / "root"
    (root / "mnist").mkdir(parents=True)
    for f in data.get("mnist").raw_files:
        blob = (data_root / "mnist" / f).read_bytes()
        (root / "mnist" / f).write_bytes(blob[:keep] if f == name else blob)
    return root


def test_a_damaged_raw_file_is_named_with_its_size_and_what_tfds_expects(data_root, tmp_path):
    root = _truncated_copy(data_root, tmp_path)
    with pytest.raises(TfqError) as e:
        data.load("mnist", root=root, cache=tmp_path / "cache")
    message = str(e.value)
    assert str(root / "mnist" / "train-images-idx3-ubyte.gz") in message
    assert "100,000 bytes" in message and "9,912,422 bytes" in message and "440fcabf73cc546f" in message
    assert "replace it with the official" in message and "\n" not in message
    # same size, other bytes: the checksum catches it
    blob = bytearray((data_root / "mnist" / "train-labels-idx1-ubyte.gz").read_bytes())
    blob[-1] ^= 0xFF
    (root / "mnist" / "train-images-idx3-ubyte.gz").write_bytes(
        (data_root / "mnist" / "train-images-idx3-ubyte.gz").read_bytes()
    )
    (root / "mnist" / "train-labels-idx1-ubyte.gz").write_bytes(bytes(blob))
    with pytest.raises(TfqError, match=r"train-labels-idx1-ubyte.gz is damaged .* with sha256 "):
        data.load("mnist", root=root, cache=tmp_path / "cache")


def test_a_damaged_raw_file_is_one_line_from_the_cli(run_cli, data_root, tmp_path):
    root = _truncated_copy(data_root, tmp_path)
    proc = run_cli(
        "train", f"--data_root={root}", f"--cache_dir={tmp_path / 'c'}", f"--artifacts={tmp_path / 'a'}", timeout=120
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and "NonMatchingChecksum" not in proc.stderr
    assert [line for line in proc.stderr.splitlines() if line.strip()] == error_lines(proc.stderr)
    assert "train-images-idx3-ubyte.gz is damaged" in error_lines(proc.stderr)[0]
    assert not (tmp_path / "a" / "mnist_cnn" / "model.keras").exists()


@pytest.mark.parametrize("name", list(data.DATASETS))
def test_every_dataset_loads_through_tfds_mock_data(name, mock_root, tmp_path):
    spec = data.get(name)
    with tfds.testing.mock_data(num_examples=40):
        splits = data.load(name, root=mock_root, cache=tmp_path / "cache")
        x, y = next(iter(data.training_epoch(splits.train.cache(), spec, 8, seed=0, epoch=0)))
    assert x.shape == (8, *spec.shape) and y.shape == (8,)
    assert int(splits.train.cardinality()) + int(splits.val.cardinality()) == 40
    assert 0 <= int(np.min(y)) and int(np.max(y)) < spec.num_classes


def test_emnist_images_are_transposed_upright(mock_root, tmp_path):
    """tfds serves EMNIST transposed; tfq hands out each image transposed back."""
    with tfds.testing.mock_data(num_examples=5):
        ours, _ = data.to_numpy(data.load("emnist_digits", root=mock_root, cache=tmp_path / "c").test)
        raw = tfds.builder("emnist/digits", data_dir=str(tmp_path / "raw")).as_dataset(split="test", as_supervised=True)
        raw_x, _ = data.to_numpy(raw)
    assert ours.shape == raw_x.shape == (5, 28, 28, 1)
    assert not np.array_equal(ours, raw_x)
    np.testing.assert_array_equal(ours, np.transpose(raw_x, (0, 2, 1, 3)))


def test_the_source_key_says_official_files_or_the_jpeg_copy_without_building(data_root, tmp_path):
    assert data.source_key("mnist", data_root, tmp_path / "cache") == "official"
    key = data.source_key("cifar10", data_root, tmp_path / "cache")
    archive = next((data_root / "cifar10_jpeg").glob("*.tar.gz"))
    assert key == f"jpeg {archive.name} {archive.stat().st_size} bytes"
    assert not (tmp_path / "cache").exists()  # nothing built or unpacked to answer


USPS_TEST_COUNTS = [359, 264, 198, 166, 200, 160, 170, 147, 166, 177]  # the book's table


def _ink_box(image: np.ndarray, level: int = 13) -> tuple[int, int]:
    rows, cols = np.nonzero(image[..., 0] > level)
    return rows.max() - rows.min() + 1, cols.max() - cols.min() + 1


def _centre(image: np.ndarray) -> tuple[float, float]:
    m = image[..., 0].astype(np.float64)
    rows, cols = np.indices(m.shape)
    return (rows * m).sum() / m.sum(), (cols * m).sum() / m.sum()


def test_usps_comes_in_mnists_frame_and_plainly_resized(data_root, cache):
    framed, y = data.to_numpy(data.load("usps", root=data_root, cache=cache).test)
    resized, y2 = data.to_numpy(data.load("usps_resized", root=data_root, cache=cache).test)
    assert framed.shape == resized.shape == (2007, 28, 28, 1) and framed.dtype == np.uint8
    np.testing.assert_array_equal(y, y2)
    assert np.bincount(y).tolist() == USPS_TEST_COUNTS
    boxes = np.array([_ink_box(im) for im in framed])
    centres = np.array([_centre(im) for im in framed])
    # MNIST's frame: the longer side of the ink about 20 pixels, the centre of mass at the centre
    assert np.all(boxes.max(axis=1) <= 22) and np.median(boxes.max(axis=1)) >= 19
    assert np.all(np.abs(centres - 14) < 1.5) and np.abs(centres.mean(axis=0) - 14).max() < 0.1
    # the plain resize fills the frame: no 4-pixel margin
    assert np.median(np.array([_ink_box(im) for im in resized]).max(axis=1)) >= 26


def test_usps_text_lines_become_framed_digits(tmp_path):
    from tfq.data import usps

    glyph = -np.ones((16, 16))
    glyph[2:14, 6:9] = 1.0  # a tall "1", off to the left of centre
    path = tmp_path / "zip.test.gz"
    with gzip.open(path, "wt") as f:
        f.write("1 " + " ".join(f"{v:g}" for v in glyph.ravel()) + "\n")
    images, labels = usps.parse(path)
    assert labels.tolist() == [1] and images.min() == 0 and images.max() == 1
    framed = usps.mnist_frame(images[0])
    assert framed.shape == (28, 28, 1) and framed.max() == 255
    assert _ink_box(framed)[0] == 20  # the longer side scaled to 20 pixels
    assert np.allclose(_centre(framed), 14, atol=0.6)
    assert usps.resized(images[0]).shape == (28, 28, 1)
    with gzip.open(path, "wt") as f:
        f.write("1 0.5 0.5\n")
    with pytest.raises(ValueError, match="3 values a line, not 257"):
        usps.parse(path)


def test_usps_missing_offline_names_its_files_and_folder(tmp_path):
    for name in ("usps", "usps_resized"):
        with pytest.raises(TfqError, match=r"put zip.train.gz, zip.test.gz in .*/usps/"):
            data.load(name, root=tmp_path, cache=tmp_path / "cache")
    with pytest.raises(TfqError, match="'usps' is not available offline"):
        data.check_available("usps", tmp_path, tmp_path / "cache")


def test_a_damaged_usps_file_is_named_against_tfqs_own_checksum(data_root, tmp_path):
    raw = tmp_path / "root" / "usps"
    raw.mkdir(parents=True)
    (raw / "zip.train.gz").write_bytes((data_root / "usps" / "zip.train.gz").read_bytes())
    (raw / "zip.test.gz").write_bytes((data_root / "usps" / "zip.test.gz").read_bytes()[:-100])
    with pytest.raises(
        TfqError,
        match=r"zip.test.gz is damaged or not the official file: 439,108 bytes, but tfq "
        r"expects 439,208 bytes with sha256 8dacc3c6e136af6c",
    ):
        data.load("usps", root=tmp_path / "root", cache=tmp_path / "cache")


def test_usps_builds_into_a_folder_named_by_its_builders_code(data_root, tmp_path):
    from tfq.data import usps

    data.load("usps", root=data_root, cache=tmp_path / "cache")
    digest = hashlib.sha256(open(usps.__file__, "rb").read()).hexdigest()[:12]
    assert [p.name for p in (tmp_path / "cache" / "usps").iterdir() if p.name.startswith("tfds")] == [f"tfds-{digest}"]


def test_any_tfds_image_dataset_is_read_through_tfds_at_its_own_or_the_asked_size(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "unreachable", lambda urls: None)  # as if tfds' servers answered
    with tfds.testing.mock_data(num_examples=20), pytest.MonkeyPatch.context() as inside:
        calls = _recording_download(inside)
        spec = data.get("tfds:svhn_cropped")
        x, _ = data.to_numpy(data.load("tfds:svhn_cropped", cache=tmp_path / "cache").test)
        gray, _ = data.to_numpy(data.load("tfds:svhn_cropped", cache=tmp_path / "cache", shape=(24, 24, 1)).test)
        # tf_flowers' images vary in size: read only at a size asked for, each resized to it
        flowers = data.load("tfds:tf_flowers", cache=tmp_path / "cache", shape=(40, 48))
        fx, fy = next(iter(flowers.train.batch(8)))
    assert spec.shape == (32, 32, 3) and spec.labels == tuple("0123456789") and spec.name == "tfds-svhn-cropped"
    assert x.shape == (20, 32, 32, 3) and gray.shape == (20, 24, 24, 1) and gray.dtype == np.uint8
    assert fx.shape == (8, 40, 48, 3) and fx.dtype == tf.uint8 and len(data.get("tfds:tf_flowers", (9, 9)).labels) == 5
    assert calls[0]["dataset"] == "svhn_cropped" and calls[0]["manual_dir"] is None
    assert artifacts.run_dir("a", "tfds:svhn_cropped", "cnn").name == "tfds-svhn-cropped_cnn"


def test_a_tfds_dataset_that_cannot_be_had_is_one_line_naming_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TFQ_OFFLINE", "1")
    started = time.time()
    with pytest.raises(TfqError) as e:
        data.load("tfds:svhn_cropped", cache=tmp_path / "cache")
    assert time.time() - started < 15 and str(e.value) == (
        f"tfds dataset 'svhn_cropped' is not built in {tmp_path / 'cache' / 'tfds-svhn-cropped' / 'tfds'} and is "
        "not available offline; tfds cannot download it either (TFQ_OFFLINE is set)"
    )
    for name, message in [
        ("tfds:no_such_set", "--dataset=tfds:no_such_set: tfds does not know 'no_such_set'"),
        ("tfds:tf_flowers", "--dataset=tfds:tf_flowers: its images vary in size (None, None, 3); give --image_size"),
        ("tfds:glue/cola", "--dataset=tfds:glue/cola: not an image-classification dataset"),
    ]:
        with pytest.raises(TfqError, match=re.escape(message)):
            data.get(name)
