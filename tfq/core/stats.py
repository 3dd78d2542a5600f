"""Paired comparisons of two classifiers on the same images: is a difference real?

At 84% accuracy on 10,000 images one model's standard error is about 0.37 points, but two models
scored on the same images share most of that noise: only the images where they disagree carry
information. `paired` runs McNemar's exact test on those discordant images and gives a 95% score
interval for the accuracy difference (Tango's, see `interval_pts`) that holds its coverage whether
the two differ on five images or five hundred. The test and the interval are two procedures: the
report says which differences the test finds, and shows the interval beside each. Plain math: no
SciPy needed.
"""

from __future__ import annotations

import math

import numpy as np

ALPHA = 0.05


def mcnemar_p(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value: the discordant pairs against a fair coin."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    k = min(only_a, only_b)
    log_half = n * math.log(0.5)
    tail = sum(
        math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + log_half) for i in range(k + 1)
    )
    return min(1.0, 2.0 * tail)


Z95 = 1.959963984540054  # the standard normal's 97.5% point
CONTINUITY = 0.5  # on the discordant difference: see `interval_pts`


def _tango_score(b: np.ndarray, c: np.ndarray, n: int, delta: np.ndarray) -> np.ndarray:
    """Tango's score statistic for "other minus reference = `delta`" (shares of n), with the
    continuity correction; b: images only the reference gets right, c: only the other. The
    nuisance discordance rate is its maximum-likelihood value under that difference (a root of a
    quadratic), so the statistic does not condition on b + c."""
    w = (b + c) - delta * (2 * n - c + b)
    p_ref = (w + np.sqrt(np.maximum(w * w + 8 * n * b * delta * (1 - delta), 0.0))) / (4 * n)
    p_ref = np.clip(p_ref, np.maximum(0.0, -delta), (1 - delta) / 2)
    variance = n * (2 * p_ref + delta * (1 - delta))
    excess = c - b - n * delta
    excess = np.sign(excess) * np.maximum(np.abs(excess) - CONTINUITY, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(
            variance > 0,
            excess / np.sqrt(np.maximum(variance, 1e-300)),
            np.where(excess == 0, 0.0, np.sign(excess) * np.inf),
        )


def intervals(only_reference, only_other, images: int) -> tuple[np.ndarray, np.ndarray]:
    """`interval_pts` for arrays of discordant counts on the same number of images, as shares."""
    b, c = np.asarray(only_reference, np.float64), np.asarray(only_other, np.float64)
    if images < 1 or (b < 0).any() or (c < 0).any() or (b + c > images).any():
        raise ValueError(f"paired counts need 0 <= b, c and b + c <= images ({images})")
    estimate = (c - b) / images

    def solve(inside: np.ndarray, outside: np.ndarray) -> np.ndarray:  # where |score| crosses z
        for _ in range(64):
            mid = (inside + outside) / 2
            within = np.abs(_tango_score(b, c, images, mid)) <= Z95
            inside, outside = np.where(within, mid, inside), np.where(within, outside, mid)
        return inside

    return solve(estimate, np.full_like(estimate, -1.0)), solve(estimate, np.full_like(estimate, 1.0))


def interval_pts(only_reference: int, only_other: int, images: int) -> list[float]:
    """95% interval of `other` minus `reference` accuracy, in points, for two classifiers scored
    on the same `images`: the score interval for a difference of paired proportions (Tango 1998,
    Statistics in Medicine 17:891-908, "Equivalence test and confidence interval for the difference
    in proportions for the paired-sample design"; recommended by Fagerland, Lydersen & Laake 2014,
    Stat Med 33:2850-2875), with a continuity correction of 1/2 on b - c. It needs only the two
    discordant counts and `images` and, unlike an interval for the share of the b + c discordant
    images, does not hold b + c fixed. Without the correction its exact coverage dips to 93% at a
    handful of discordant images (4 of 10,000 one way); with it, it stays at or above 95% over the
    cases `benchmarks/coverage.py` enumerates. It is a different procedure from McNemar's exact
    test: the two usually, not always, agree on whether zero is excluded."""
    lo, hi = intervals([only_reference], [only_other], images)
    return [100 * float(lo[0]), 100 * float(hi[0])]


def exact_coverage(
    p_only_reference: float, p_only_other: float, images: int, interval=intervals, floor: float = 1e-12
) -> float:
    """The probability that `interval` covers the true difference p_only_other - p_only_reference
    when the four cells are drawn from a multinomial with these discordance rates: every (b, c)
    summed exactly, except cells rarer than `floor` (counted as misses, so this is a lower bound)."""

    def counts(p: float) -> np.ndarray:
        mean, sd = p * images, math.sqrt(p * images * (1 - p)) + 1
        return np.arange(max(0, int(mean - 9 * sd)), min(images, int(mean + 9 * sd) + 10) + 1)

    b, c = np.meshgrid(counts(p_only_reference), counts(p_only_other), indexing="ij")
    b, c = b.ravel(), c.ravel()
    b, c = b[b + c <= images], c[b + c <= images]
    log_p = np.array(
        [
            math.lgamma(images + 1) - math.lgamma(x + 1) - math.lgamma(y + 1) - math.lgamma(images - x - y + 1)
            for x, y in zip(b, c)
        ]
    )
    for k, p in ((b, p_only_reference), (c, p_only_other)):
        log_p = log_p + (k * math.log(p) if p > 0 else np.where(k > 0, -np.inf, 0.0))
    concordant = 1 - p_only_reference - p_only_other  # 0 when every image is discordant
    log_p = log_p + (
        (images - b - c) * math.log(concordant) if concordant > 0 else np.where(b + c < images, -np.inf, 0.0)
    )
    prob = np.exp(log_p)
    keep = prob > floor
    lo, hi = interval(b[keep], c[keep], images)
    truth = p_only_other - p_only_reference
    return float(prob[keep][(lo <= truth + 1e-12) & (truth <= hi + 1e-12)].sum())


def paired(reference_correct: np.ndarray, other_correct: np.ndarray) -> dict:
    """`other` minus `reference` accuracy in points, its 95% interval, and McNemar's test."""
    ref = np.asarray(reference_correct, bool)
    other = np.asarray(other_correct, bool)
    if ref.shape != other.shape or ref.ndim != 1 or not len(ref):
        raise ValueError("paired() needs two equally long, non-empty 1-D correctness vectors")
    n = len(ref)
    only_ref, only_other = int((ref & ~other).sum()), int((~ref & other).sum())
    p = mcnemar_p(only_ref, only_other)
    return {
        "delta_pts": 100 * (only_other - only_ref) / n,
        "ci95_pts": interval_pts(only_ref, only_other, n),
        "only_reference_right": only_ref,
        "only_other_right": only_other,
        "images": n,
        "p_value": p,
        "distinguishable": p < ALPHA,
    }


def restated(result):
    """A result read back with every paired comparison in it (a dict holding the two discordant
    counts and the image count, as `paired` writes) given its interval and McNemar p afresh from
    those counts: a report shows today's procedure on any saved stage result."""
    if isinstance(result, list):
        return [restated(v) for v in result]
    if not isinstance(result, dict):
        return result
    out = {k: restated(v) for k, v in result.items()}
    if {"only_reference_right", "only_other_right", "images"} <= out.keys():
        b, c, n = out["only_reference_right"], out["only_other_right"], out["images"]
        out["ci95_pts"] = interval_pts(b, c, n)
        if "delta_pts" in out:
            out["delta_pts"] = 100 * (c - b) / n
        if "p_value" in out or "distinguishable" in out:
            out["p_value"] = mcnemar_p(b, c)
        if "distinguishable" in out:
            out["distinguishable"] = out["p_value"] < ALPHA
    return out


def sign_flip_p(values: np.ndarray, seed: int = 0, draws: int = 20_000, exact_up_to: int = 16) -> float:
    """Two-sided p of "the mean of these per-image paired differences is zero": the sign-flip
    (permutation) test, exact over every sign pattern of the non-zero values when there are at
    most `exact_up_to` of them, else from `draws` seeded random patterns. With few images that
    differ it stays honest where a bootstrap interval is too narrow (4 of 4 one way: p = 0.125)."""
    v = np.asarray(values, np.float64)
    v = v[v != 0]
    if not len(v):
        return 1.0
    observed = abs(v.sum()) - 1e-12
    if len(v) <= exact_up_to:
        signs = ((np.arange(2 ** len(v))[:, None] >> np.arange(len(v))) & 1) * 2 - 1
        return float((np.abs(signs @ v) >= observed).mean())
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=(draws, len(v)))
    return float(((np.abs(signs @ v) >= observed).sum() + 1) / (draws + 1))


def bootstrap_ci(values: np.ndarray, seed: int = 0, draws: int = 2000) -> list[float]:
    """95% percentile interval of the mean of per-image `values`, resampling images."""
    v = np.asarray(values, np.float64)
    means = v[np.random.default_rng(seed).integers(0, len(v), size=(draws, len(v)))].mean(axis=1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def paired_mean(values: np.ndarray, seed: int = 0) -> dict:
    """Per-image paired differences (each image's own mean over sets, in [-1, 1]) in points: the
    mean, a 95% bootstrap interval over images, the sign-flip p and how many images differ at all."""
    v = np.asarray(values, np.float64)
    return {
        "pts": 100 * float(v.mean()),
        "ci95_pts": [100 * x for x in bootstrap_ci(v, seed)],
        "p_value": sign_flip_p(v, seed),
        "images_differing": int((v != 0).sum()),
        "images": int(len(v)),
    }


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the order given: a family of tests read together
    keeps its chance of any false finding under the level."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted, running = [0.0] * len(p_values), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def wilson_interval(correct: int, images: int, z: float = 1.959964) -> list[float]:
    """95% Wilson score interval for one accuracy (`correct` of `images`): holds its coverage near 0 and 1,
    where the plain normal interval does not."""
    if images <= 0:
        return [float("nan"), float("nan")]
    p = correct / images
    centre = (p + z * z / (2 * images)) / (1 + z * z / images)
    half = z * math.sqrt(p * (1 - p) / images + z * z / (4 * images * images)) / (1 + z * z / images)
    return [max(0.0, centre - half), min(1.0, centre + half)]
