"""Coverage of the paired 95% interval: how often it holds the true accuracy difference.

Each case takes observed discordant counts b (only the reference right) and c (only the other
right) of n images as the truth, and draws the table again from that multinomial. Two columns
per interval: the exact coverage (every (b, c) summed, `stats.exact_coverage`) and a seeded
simulation of 20,000 tables. "Conditional" is tfq's interval before issue 23 (Clopper-Pearson
for the share of the b + c discordant images, mapped as if b + c were fixed); "score" is
`stats.interval_pts` (Tango's score interval with a continuity correction of 1/2).

    .venv/bin/python benchmarks/coverage.py          (seconds; no data needed)
"""

import numpy as np
from scipy import stats as sps

from tfq.core import stats

CASES = [  # (b, c, n, where it was seen)
    (11, 2, 10_000, "aeq_a8w4 vs float32, MNIST CNN"),
    (19, 1, 2_007, "qat_int8 on USPS"),
    (6, 0, 10_000, "a one-way handful"),
    (4, 0, 10_000, "the uncorrected score interval's worst case here"),
    (490, 207, 10_000, "a 2.8-point 4-bit loss"),
    (5, 5, 250, "no difference, 250 images"),
    (20, 20, 2_007, "no difference, 2,007 images"),
    (50, 50, 10_000, "no difference, 10,000 images"),
    (0, 0, 10_000, "identical predictions"),
]
DRAWS = 20_000


def conditional(b, c, n):
    """tfq's old interval: Clopper-Pearson for c / (b + c), mapped to (d / n)(2 share - 1)."""
    b, c = np.asarray(b, float), np.asarray(c, float)
    d = b + c
    with np.errstate(invalid="ignore", divide="ignore"):
        lo = np.where(c > 0, sps.beta.ppf(0.025, c, b + 1), 0.0)
        hi = np.where(b > 0, sps.beta.ppf(0.975, c + 1, b), 1.0)
    bound = 1 - 0.025 ** (1 / n)
    return (np.where(d > 0, d / n * (2 * lo - 1), -bound), np.where(d > 0, d / n * (2 * hi - 1), bound))


def uncorrected(b, c, n):
    """Tango's score interval without the continuity correction."""
    kept = stats.CONTINUITY
    stats.CONTINUITY = 0.0
    try:
        return stats.intervals(b, c, n)
    finally:
        stats.CONTINUITY = kept


def simulated(pb: float, pc: float, n: int, interval, seed: int = 0) -> float:
    draws = np.random.default_rng(seed).multinomial(n, [pb, pc, 1 - pb - pc], size=DRAWS)
    lo, hi = interval(draws[:, 0], draws[:, 1], n)
    truth = pc - pb
    return float(((lo <= truth + 1e-12) & (truth <= hi + 1e-12)).mean())


def main() -> None:
    print(
        "| b / c of n | case | conditional (old) | score, uncorrected | score, corrected (tfq) | "
        "tfq's interval at the observed counts |"
    )
    print("|---|---|---:|---:|---:|---|")
    for b, c, n, what in CASES:
        pb, pc = b / n, c / n
        cells = [
            f"{100 * stats.exact_coverage(pb, pc, n, f):.1f}% (sim {100 * simulated(pb, pc, n, f):.1f}%)"
            for f in (conditional, uncorrected, stats.intervals)
        ]
        lo, hi = stats.interval_pts(b, c, n)
        print(
            f"| {b} / {c} of {n:,d} | {what} | "
            + " | ".join(cells)
            + f" | {100 * (c - b) / n:+.2f} [{lo:+.2f}, {hi:+.2f}] |"
        )
    grid = [(b, c) for b in (1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 60, 100) for c in (0, 1, 2, 5, 20)]
    for name, f in (("uncorrected", uncorrected), ("corrected (tfq)", stats.intervals)):
        worst = min((stats.exact_coverage(b / 10_000, c / 10_000, 10_000, f), b, c) for b, c in grid)
        print(
            f"\nworst exact coverage of the score interval, {name}, over {len(grid)} truths b in 1..100, "
            f"c in 0..20 of 10,000: {100 * worst[0]:.1f}% at {worst[1]} / {worst[2]}"
        )


if __name__ == "__main__":
    main()
