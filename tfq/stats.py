"""Paired comparisons of two classifiers on the same images: is a difference real?

At 84% accuracy on 10,000 images one model's standard error is about 0.37 points, but two models
scored on the same images share most of that noise: only the images where they disagree carry
information. `paired` runs McNemar's exact test on those discordant images and gives a 95%
interval for the accuracy difference, so a report can say which differences are distinguishable
from zero. Plain numpy and math: no SciPy needed.
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


def paired(reference_correct: np.ndarray, other_correct: np.ndarray) -> dict:
    """`other` minus `reference` accuracy in points, its 95% interval, and McNemar's test."""
    ref = np.asarray(reference_correct, bool)
    other = np.asarray(other_correct, bool)
    if ref.shape != other.shape or ref.ndim != 1 or not len(ref):
        raise ValueError("paired() needs two equally long, non-empty 1-D correctness vectors")
    n = len(ref)
    only_ref, only_other = int((ref & ~other).sum()), int((~ref & other).sum())
    delta = (only_other - only_ref) / n
    se = math.sqrt(max(only_ref + only_other - (only_other - only_ref) ** 2 / n, 0.0)) / n
    p = mcnemar_p(only_ref, only_other)
    return {"delta_pts": 100 * delta,
            "ci95_pts": [100 * (delta - 1.96 * se), 100 * (delta + 1.96 * se)],
            "only_reference_right": only_ref, "only_other_right": only_other, "images": n,
            "p_value": p, "distinguishable": p < ALPHA}
