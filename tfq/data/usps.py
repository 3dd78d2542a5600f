"""The USPS digits as a tfds dataset (`tfq_usps/mnist_frame`, `tfq_usps/resized`), built offline
from the two text files of *The Elements of Statistical Learning* (`zip.train.gz`, `zip.test.gz`:
one image a line, the label then 256 values in [-1, 1], 16x16 row by row, -1 background).

Importing this module registers the builder; `tfq.data` reads it like any other tfds dataset.
"""

from __future__ import annotations

import gzip

import numpy as np
import tensorflow_datasets as tfds

from tfq.core.backend import tf

SIDE = 16
MNIST_SIDE, MNIST_BOX = 28, 20  # MNIST: the digit scaled into a 20x20 box, centred by mass in 28x28
INK = 0.05  # pixels brighter than this share of full ink belong to the digit's box


def parse(path) -> tuple[np.ndarray, np.ndarray]:
    """(N x 16 x 16 float32 in [0, 1] with 1 for ink, N labels) from one gzipped text file."""
    rows = np.loadtxt(gzip.open(path, "rt"), dtype=np.float32, ndmin=2)
    if rows.shape[1] != 1 + SIDE * SIDE:
        raise ValueError(f"{path}: {rows.shape[1]} values a line, not {1 + SIDE * SIDE}")
    labels = rows[:, 0].astype(np.int64)
    return ((rows[:, 1:] + 1.0) / 2.0).clip(0, 1).reshape(-1, SIDE, SIDE), labels


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)[..., None]


def resized(image: np.ndarray) -> np.ndarray:
    """Plain 16x16 -> 28x28 resize: the digit fills the frame."""
    out = tf.image.resize(image[..., None], (MNIST_SIDE, MNIST_SIDE), method="bilinear", antialias=True)
    return _to_uint8(out.numpy()[..., 0])


def mnist_frame(image: np.ndarray) -> np.ndarray:
    """MNIST's own framing: the ink's bounding box scaled (aspect kept) so its longer side is 20
    pixels, then placed in 28x28 with its centre of mass at the centre, rounded to whole pixels."""
    rows, cols = np.nonzero(image > INK)
    if not len(rows):
        return resized(image)
    box = image[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    h, w = box.shape
    factor = MNIST_BOX / max(h, w)
    size = (max(1, round(h * factor)), max(1, round(w * factor)))
    digit = tf.image.resize(box[..., None], size, method="bilinear", antialias=True).numpy()[..., 0].clip(0, 1)
    mass = digit.sum()
    cy, cx = (np.indices(digit.shape) * digit).reshape(2, -1).sum(1) / mass
    top, left = int(round(MNIST_SIDE / 2 - cy)), int(round(MNIST_SIDE / 2 - cx))
    top = min(max(top, 0), MNIST_SIDE - size[0])
    left = min(max(left, 0), MNIST_SIDE - size[1])
    frame = np.zeros((MNIST_SIDE, MNIST_SIDE), np.float32)
    frame[top : top + size[0], left : left + size[1]] = digit
    return _to_uint8(frame)


FRAMINGS = {"mnist_frame": mnist_frame, "resized": resized}


class TfqUsps(tfds.core.GeneratorBasedBuilder):
    """USPS handwritten digits (7,291 train, 2,007 test), brought to 28x28."""

    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name="mnist_frame", description="ink box to 20x20, centre of mass at the centre"),
        tfds.core.BuilderConfig(name="resized", description="plain 16x16 -> 28x28 resize"),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Put zip.train.gz and zip.test.gz (ESL's USPS files) in the manual folder."

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(MNIST_SIDE, MNIST_SIDE, 1)),
                    "label": tfds.features.ClassLabel(num_classes=10),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        folder = dl_manager.manual_dir
        return {
            "train": self._generate_examples(folder / "zip.train.gz"),
            "test": self._generate_examples(folder / "zip.test.gz"),
        }

    def _generate_examples(self, path):
        frame = FRAMINGS[self.builder_config.name]
        images, labels = parse(path)
        for i, (image, label) in enumerate(zip(images, labels)):
            yield i, {"image": frame(image), "label": int(label)}
