"""The CIFAR-10 JPEG copy re-encoded once more at a lower JPEG quality, same member names and order, so
that training on it measures what one more JPEG generation costs (benchmarks/jpeg_cost.sh). Prints the
mean absolute pixel change it makes, for qualities given with --probe on the first 2,000 images.

    .venv/bin/python benchmarks/jpeg_recode.py IN.tar.gz OUT.tar.gz QUALITY [--probe=90,75,50,30]
"""

import io
import sys
import tarfile

import numpy as np
from PIL import Image

from tfq.core import artifacts


def recode(data: bytes, quality: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    with Image.open(io.BytesIO(data)) as im:
        before = np.asarray(im.convert("RGB"), np.int16)
    out = io.BytesIO()
    Image.fromarray(before.astype(np.uint8)).save(out, "JPEG", quality=quality)
    with Image.open(io.BytesIO(out.getvalue())) as im:
        after = np.asarray(im.convert("RGB"), np.int16)
    return out.getvalue(), before, after


def main(src: str, dst: str, quality: int, probe: list[int]) -> None:
    with tarfile.open(src) as tar:
        members = [(m, tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers()]
    jpegs = [d for m, d in members if d is not None and m.name.lower().endswith(".jpg")]
    for q in probe:
        err = np.mean([np.abs(b - a).mean() for _, b, a in (recode(d, q) for d in jpegs[:2000])])
        print(f"quality {q}: mean |pixel change| {err:.2f}/255 over the first 2,000 images")
    errors = []
    with artifacts.atomic_path(dst, ".tar.gz") as tmp, tarfile.open(tmp, "w:gz") as out:
        for m, d in members:
            if d is not None and m.name.lower().endswith(".jpg"):
                d, before, after = recode(d, quality)
                errors.append(np.abs(before - after).mean())
                m.size = len(d)
            out.addfile(m, io.BytesIO(d) if d is not None else None)
    print(f"{dst}: {len(errors):,d} images at quality {quality}, mean |pixel change| {np.mean(errors):.2f}/255")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--probe=")]
    probes = [a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--probe=")]
    main(args[0], args[1], int(args[2]), [int(q) for q in probes[0].split(",")] if probes else [])
