"""A user-style image folder from the CIFAR-10 JPEG copy: four animal classes (cat, deer, dog, horse),
the first 2,500 training and 500 test images of each, in tfds' ImageFolder layout.

    python benchmarks/own_folder.py $TFQ_DATA_ROOT/cifar10_jpeg/cifar10-jpeg-q75.tar.gz OUT
"""

import sys
import tarfile
from pathlib import Path

CLASSES, PER_SPLIT = ("cat", "deer", "dog", "horse"), {"train": 2500, "test": 500}

archive, out = sys.argv[1], Path(sys.argv[2])
with tarfile.open(archive) as tar:
    members = sorted((m for m in tar.getmembers() if m.isfile() and m.name.endswith(".jpg")), key=lambda m: m.name)
    for split, n in PER_SPLIT.items():
        for c in CLASSES:
            chosen = [m for m in members if m.name.startswith(f"{split}/{c}/")][:n]
            (out / split / c).mkdir(parents=True, exist_ok=True)
            for m in chosen:
                (out / split / c / Path(m.name).name).write_bytes(tar.extractfile(m).read())
print(sum(1 for _ in out.rglob("*.jpg")), "images in", out)
