"""tfq.stats: McNemar's exact test and the paired interval, against values worked by hand."""

import numpy as np
import pytest

from tfq import stats


def test_mcnemar_matches_the_binomial_worked_by_hand():
    # 1 vs 9 discordant: 2 * P(X <= 1 | n=10, 1/2) = 2 * 11/1024
    assert stats.mcnemar_p(1, 9) == pytest.approx(22 / 1024)
    assert stats.mcnemar_p(9, 1) == pytest.approx(22 / 1024)
    assert stats.mcnemar_p(5, 5) == 1.0 and stats.mcnemar_p(0, 0) == 1.0
    assert stats.mcnemar_p(0, 6) == pytest.approx(2 / 64)


def test_paired_counts_only_the_images_where_the_two_disagree():
    ref = np.array([1, 1, 1, 0, 0, 1, 1, 1, 1, 1], bool)
    other = np.array([1, 1, 0, 1, 1, 1, 1, 1, 1, 1], bool)
    r = stats.paired(ref, other)
    assert (r["only_reference_right"], r["only_other_right"], r["images"]) == (1, 2, 10)
    assert r["delta_pts"] == pytest.approx(10.0)
    lo, hi = r["ci95_pts"]
    assert lo < 0 < hi and not r["distinguishable"]


def test_a_large_consistent_difference_is_distinguishable():
    rng = np.random.default_rng(0)
    ref = rng.random(10_000) < 0.84
    other = ref.copy()
    other[np.flatnonzero(ref)[:120]] = False  # 120 images lost, none gained: -1.2 points
    r = stats.paired(ref, other)
    assert r["delta_pts"] == pytest.approx(-1.2) and r["distinguishable"] and r["ci95_pts"][1] < 0


def test_identical_models_show_no_difference_but_keep_an_honest_interval():
    same = np.ones(10_000, bool)
    r = stats.paired(same, same)
    assert r["delta_pts"] == 0 and r["p_value"] == 1.0
    lo, hi = r["ci95_pts"]  # no discordant image among 10,000: the rate is below ~3.7 in 10,000
    assert lo == -hi and 0.03 < hi < 0.04


@pytest.mark.parametrize("n", [5, 11, 30, 120])
def test_the_interval_excludes_zero_exactly_when_mcnemar_says_distinguishable(n):
    for c in range(n + 1):
        b = n - c
        lo, hi = stats.interval_pts(b, c, 10_000)
        assert lo <= 100 * (c - b) / 10_000 <= hi
        assert (lo > 0 or hi < 0) == (stats.mcnemar_p(b, c) < 0.05), (b, c)


def test_two_against_nine_is_not_distinguishable():
    """A Wald interval excluded zero here while the exact test (p = 0.065) did not."""
    lo, hi = stats.interval_pts(2, 9, 10_000)
    assert lo < 0 < hi and stats.mcnemar_p(2, 9) == pytest.approx(0.0654, abs=1e-4)


def test_mismatched_vectors_are_refused():
    with pytest.raises(ValueError):
        stats.paired(np.ones(3, bool), np.ones(4, bool))


def test_sign_flip_is_exact_for_few_differing_images():
    assert stats.sign_flip_p(np.array([0.0, 0.0, 0.0])) == 1.0
    assert stats.sign_flip_p(np.array([-1.0, -1.0, -1.0, -1.0] + [0.0] * 246)) == 0.125  # 2 of 16 patterns
    assert stats.sign_flip_p(np.array([1.0, -1.0])) == 1.0
    # past the exact limit: seeded random patterns, close to the normal approximation
    v = np.array([1.0] * 30 + [-1.0] * 10)
    p = stats.sign_flip_p(v, seed=0)
    assert p == stats.sign_flip_p(v, seed=0) and 0.001 < p < 0.006  # binomial: 2 P(X >= 30 | 40, 0.5) = 0.0022


def test_holm_adjusts_the_smallest_most_and_keeps_the_order():
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert stats.holm([0.5]) == [0.5]
    assert stats.holm([0.4, 0.6]) == pytest.approx([0.8, 0.8])


def test_paired_mean_reports_the_images_that_differ():
    r = stats.paired_mean(np.array([0.5, -0.5, 0.0, 0.0, 1.0]), seed=1)
    assert r["pts"] == pytest.approx(20.0) and r["images_differing"] == 3 and r["images"] == 5
    assert r["ci95_pts"][0] <= 20.0 <= r["ci95_pts"][1]
