"""Paired comparisons of two classifiers on the same images: is a difference real?

At 84% accuracy on 10,000 images one model's standard error is about 0.37 points, but two models
scored on the same images share most of that noise: only the images where they disagree carry
information. `paired` runs McNemar's exact test on those discordant images and gives a 95%
interval for the accuracy difference built from the same exact binomial (so the interval excludes
zero when, and only when, the test says the difference is distinguishable, up to the equal-tailed
construction), letting a report say which differences are real. Plain math: no SciPy needed.
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
    tail = sum(math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + log_half)
               for i in range(k + 1))
    return min(1.0, 2.0 * tail)


def _binom_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed in log space."""
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 1.0 if k >= n else 0.0
    lp, lq = math.log(p), math.log1p(-p)
    return min(1.0, sum(math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp
                                 + (n - i) * lq) for i in range(k + 1)))


def _lower(k: int, n: int, alpha: float) -> float:
    lo, hi = 0.0, 1.0  # P(X >= k | p) rises with p: the lowest p where it reaches alpha/2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if 1.0 - _binom_cdf(k - 1, n, mid) < alpha / 2 else (lo, mid)
    return (lo + hi) / 2


def _upper(k: int, n: int, alpha: float) -> float:
    lo, hi = 0.0, 1.0  # P(X <= k | p) falls with p: the highest p where it is still alpha/2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _binom_cdf(k, n, mid) > alpha / 2 else (lo, mid)
    return (lo + hi) / 2


def interval_pts(only_reference: int, only_other: int, images: int) -> list[float]:
    """95% interval of `other` minus `reference` accuracy, in points, that agrees with the exact
    McNemar test: the Clopper-Pearson interval of the share of discordant images `other` gets
    right, mapped to the difference ((b + c) / n) * (2 share - 1). With no discordant image, the
    exact upper bound of the discordance rate on both sides (it cannot be shown to be zero)."""
    d = only_reference + only_other
    if d == 0:
        bound = 100 * (1.0 - (ALPHA / 2) ** (1.0 / images))
        return [-bound, bound]
    lo, hi = _lower(only_other, d, ALPHA) if only_other else 0.0, _upper(only_other, d, ALPHA) if only_other < d else 1.0
    scale = 100 * d / images
    return [scale * (2 * lo - 1), scale * (2 * hi - 1)]


def paired(reference_correct: np.ndarray, other_correct: np.ndarray) -> dict:
    """`other` minus `reference` accuracy in points, its 95% interval, and McNemar's test."""
    ref = np.asarray(reference_correct, bool)
    other = np.asarray(other_correct, bool)
    if ref.shape != other.shape or ref.ndim != 1 or not len(ref):
        raise ValueError("paired() needs two equally long, non-empty 1-D correctness vectors")
    n = len(ref)
    only_ref, only_other = int((ref & ~other).sum()), int((~ref & other).sum())
    p = mcnemar_p(only_ref, only_other)
    return {"delta_pts": 100 * (only_other - only_ref) / n, "ci95_pts": interval_pts(only_ref, only_other, n),
            "only_reference_right": only_ref, "only_other_right": only_other, "images": n,
            "p_value": p, "distinguishable": p < ALPHA}


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
    return {"pts": 100 * float(v.mean()), "ci95_pts": [100 * x for x in bootstrap_ci(v, seed)],
            "p_value": sign_flip_p(v, seed), "images_differing": int((v != 0).sum()), "images": int(len(v))}


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the order given: a family of tests read together
    keeps its chance of any false finding under the level."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted, running = [0.0] * len(p_values), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted
