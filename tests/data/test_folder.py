"""tfq.data.folder: a user's own images in tfds' ImageFolder layout (`--dataset=folder:PATH`), read at the
run's size and channels, with one-line errors for folders that do not fit the layout."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import error_lines
from tfq import data
from tfq.core import artifacts, cli
from tfq.core.artifacts import TfqError

CLASSES = ("circle", "square", "stripes")


def write_shapes(root: Path, per_class: dict[str, int], seed: int = 0) -> Path:
    """Three classes of drawn shapes, as a user's folder holds them: PNG and JPEG, mostly 40x36 with
    every fourth image 48x48, every seventh grayscale."""
    from PIL import ImageDraw

    rng = np.random.default_rng(seed)
    for split, n in per_class.items():
        for c in CLASSES:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                size = (40, 36) if i % 4 else (48, 48)
                im = Image.new("RGB", size, tuple(int(v) for v in rng.integers(0, 80, 3)))
                draw, (x, y) = ImageDraw.Draw(im), rng.integers(4, 12, 2)
                ink = tuple(int(v) for v in rng.integers(150, 255, 3))
                if c == "circle":
                    draw.ellipse([x, y, x + 20, y + 20], fill=ink)
                elif c == "square":
                    draw.rectangle([x, y, x + 20, y + 20], fill=ink)
                else:
                    for k in range(0, size[0], 6):
                        draw.line([k, 0, k, size[1]], fill=ink, width=2)
                im = im.convert("L") if i % 7 == 0 else im
                im.save(root / split / c / f"{i}.{'png' if i % 2 else 'jpg'}")
    return root


def test_a_folder_is_read_at_its_most_common_size_with_the_class_folders_as_labels(tmp_path):
    root = write_shapes(tmp_path / "my shapes", {"train": 20, "test": 4})
    name = f"folder:{root}"
    spec = data.get(name)
    assert spec.labels == CLASSES and spec.shape == (36, 40, 3) and spec.name == "my-shapes"
    assert artifacts.run_dir("a", name, "cnn") == Path("a/my-shapes_cnn")
    splits = data.load(name, cache=tmp_path / "cache")
    assert splits.source.kind == "folder" and str(root) in splits.source.description
    x, y = data.to_numpy(splits.test)
    assert x.shape == (12, 36, 40, 3) and x.dtype == np.uint8 and sorted(np.bincount(y)) == [4, 4, 4]
    # every split in a seeded order, not class by class: the first images of a slice hold more than one class
    assert len(set(y[:4].tolist())) > 1
    _, first = data.to_numpy(data.load(name, cache=tmp_path / "cache", max_eval=3).test)
    assert first.tolist() == y[:3].tolist()
    # no validation folder: the last tenth of a seeded order of train, which holds more than one class
    _, val_y = data.to_numpy(splits.val)
    assert len(val_y) == 6 and len(set(val_y.tolist())) > 1
    # the image itself, resized: a 48x48 grayscale file becomes 36x40 with its gray in all three channels
    one = np.asarray(Image.open(root / "test/circle/0.jpg").convert("RGB").resize((40, 36), Image.BILINEAR))
    assert sum(np.array_equal(image, one) for image in x) == 1
    gray = data.load(name, cache=tmp_path / "cache", shape=(24, 24, 1))
    gx, _ = data.to_numpy(gray.test)
    assert gx.shape == (12, 24, 24, 1) and data.get(name, (24, 24)).shape == (24, 24, 3)


def test_a_validation_folder_is_used_as_it_is_and_a_changed_folder_is_read_again(tmp_path):
    root = write_shapes(tmp_path / "s", {"train": 8, "validation": 2, "test": 2})
    splits = data.load(f"folder:{root}", cache=tmp_path / "cache")
    _, val_y = data.to_numpy(splits.val)
    _, train_y = data.to_numpy(splits.train)
    assert sorted(val_y.tolist()) == [0, 0, 1, 1, 2, 2] and len(train_y) == 24
    before = data.source_key(f"folder:{root}")
    Image.new("RGB", (40, 36), (255, 0, 0)).save(root / "train" / "circle" / "extra.png")
    assert data.source_key(f"folder:{root}") != before
    _, train_y = data.to_numpy(data.load(f"folder:{root}", cache=tmp_path / "cache").train)
    assert len(train_y) == 25


def test_folders_that_do_not_fit_the_layout_are_one_line_errors(tmp_path):
    good = write_shapes(tmp_path / "good", {"train": 2, "test": 1})

    def variant(name: str, change) -> str:
        root = tmp_path / name
        shutil.copytree(good, root)
        change(root)
        return f"folder:{root}"

    cases = [
        (f"folder:{tmp_path / 'nowhere'}", "is not a folder"),
        (variant("no_test", lambda r: shutil.rmtree(r / "test")), "no " + str(tmp_path / "no_test" / "test") + "/"),
        (variant("empty_class", lambda r: [p.unlink() for p in (r / "train" / "square").iterdir()]), "holds no images"),
        (variant("new_class", lambda r: shutil.copytree(r / "test" / "circle", r / "test" / "oval")), "oval"),
        (
            variant("one_class", lambda r: [shutil.rmtree(r / s / c) for s in ("train", "test") for c in CLASSES[1:]]),
            "has 1 class folder",
        ),
    ]
    for name, message in cases:
        with pytest.raises(TfqError) as e:
            data.get(name)
        assert message in str(e.value) and "\n" not in str(e.value), str(e.value)
    with pytest.raises(TfqError, match=r"--image_size is for an image folder or a tfds dataset: mnist"):
        data.get("mnist", (32, 32))
    with pytest.raises(TfqError, match=r"--image_size=32,32,2: expected HEIGHT,WIDTH"):
        data.get(f"folder:{good}", (32, 32, 2))


def test_an_image_that_does_not_decode_stops_the_run_in_one_line_before_anything_is_written(tmp_path, run_cli, cache):
    root = write_shapes(tmp_path / "s", {"train": 6, "test": 2})
    (root / "test" / "square" / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    proc = run_cli("train", f"--dataset=folder:{root}", "--model=mlp", f"--artifacts={tmp_path / 'a'}")
    assert proc.returncode == 1 and error_lines(proc.stderr) == [
        f"error: {root / 'test' / 'square' / 'broken.jpg'} does not decode as an image "
        "(UnidentifiedImageError: cannot identify image file "
        f"'{root / 'test' / 'square' / 'broken.jpg'}')"
    ], proc.stderr[-2000:]
    assert not (tmp_path / "a").exists() or not any((tmp_path / "a").iterdir())  # not even an empty run folder
    assert not list(cache.glob("folders/s-*"))  # no decoded copy of a folder that did not decode
    proc = run_cli("pipeline", f"--datasets=folder:{root}", "--models=mlp", f"--artifacts={tmp_path / 'p'}")
    assert proc.returncode == 1 and "broken.jpg does not decode as an image" in error_lines(proc.stderr)[0]
    assert not any((tmp_path / "p").iterdir())  # the pipeline's run folder is removed again, empty


def test_a_folder_run_trains_and_records_its_shape_and_labels_for_the_stages_after_it(tmp_path, run_cli):
    root = write_shapes(tmp_path / "shapes", {"train": 30, "test": 10})
    common = (f"--dataset=folder:{root}", "--model=cnn", f"--artifacts={tmp_path / 'a'}")
    trained = run_cli("train", *common, "--epochs=2", "--image_size=32,32")
    assert trained.returncode == 0, trained.stderr[-2000:]
    made = json.loads((tmp_path / "a" / "shapes_cnn" / artifacts.TRAIN_JSON).read_text())
    assert made["image_shape"] == [32, 32, 3] and made["labels"] == list(CLASSES)
    assert made["data_source"]["kind"] == "folder"
    # a later stage reads the folder at the recorded size without being told; told another, it refuses
    converted = run_cli("convert", *common, "--mode=int8", "--num_calibration=20")
    assert converted.returncode == 0, converted.stderr[-2000:]
    assert json.loads((tmp_path / "a" / "shapes_cnn" / "int8.json").read_text())["file"] == "int8.tflite"
    wrong = run_cli("evaluate", *common, "--mode=int8", "--image_size=36,40")
    assert wrong.returncode == 1 and error_lines(wrong.stderr) == [
        "error: --image_size=36,40: shapes_cnn's model takes 32x32x3 images (recorded in its train.json)"
    ]
    # another folder of the same name would land in the same run folder: refused, naming both
    other = write_shapes(tmp_path / "elsewhere" / "shapes", {"train": 2, "test": 1})
    with pytest.raises(TfqError, match=f"holds a model made on folder:{root}, not folder:{other}"):
        data.shape_of(cli.Run(dataset=f"folder:{other}", model="cnn", artifacts=str(tmp_path / "a")))
    shipped = run_cli("export", *common, "--mode=int8", "--format=android")
    assert shipped.returncode == 0, shipped.stderr[-2000:]
    bundle = tmp_path / "a" / "shapes_cnn" / "export" / "int8_android"
    assert (bundle / "labels.txt").read_text().split() == list(CLASSES)
