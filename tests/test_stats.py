"""Paired bootstrap and randomisation test on synthetic data with a known truth."""

from __future__ import annotations

import numpy as np
import pytest

from rag_app.ir.stats import compare, paired_bootstrap, randomization_test


def test_bootstrap_ci_covers_the_true_difference():
    # 200 draws of 150 queries each: the 95% CI should cover the true shift about 95% of the time
    rng = np.random.default_rng(1)
    true_shift = 0.05
    covered = 0
    trials = 200
    for t in range(trials):
        base = rng.uniform(0.2, 0.8, size=150)
        cand = base + true_shift + rng.normal(0.0, 0.15, size=150)
        res = paired_bootstrap(base, cand, n_resamples=1000, seed=t)
        assert res.ci_low <= res.mean_diff <= res.ci_high
        covered += res.ci_low <= true_shift <= res.ci_high
    assert 0.88 <= covered / trials <= 0.99


def test_bootstrap_identical_and_reproducible():
    a = [0.1, 0.5, 0.9, 0.3]
    res = paired_bootstrap(a, a)
    assert (res.mean_diff, res.ci_low, res.ci_high) == (0.0, 0.0, 0.0)
    b = [0.2, 0.4, 1.0, 0.6]
    assert paired_bootstrap(a, b, seed=3) == paired_bootstrap(a, b, seed=3)
    assert res.n == 4


def test_randomization_p_value_uniform_under_null():
    rng = np.random.default_rng(2)
    p_values = []
    for t in range(300):
        a = rng.uniform(0, 1, size=60)
        b = a + rng.normal(0.0, 0.2, size=60)  # symmetric noise: no real difference
        p_values.append(randomization_test(a, b, n_permutations=500, seed=t))
    p = np.array(p_values)
    # roughly uniform: about 5% below 0.05, about half below 0.5
    assert 0.01 <= np.mean(p < 0.05) <= 0.10
    assert 0.40 <= np.mean(p < 0.5) <= 0.60
    assert np.all((p > 0) & (p <= 1))


def test_randomization_p_value_small_under_real_shift():
    rng = np.random.default_rng(3)
    a = rng.uniform(0, 1, size=100)
    b = a + 0.1 + rng.normal(0.0, 0.1, size=100)
    p = randomization_test(a, b, n_permutations=2000)
    assert p == pytest.approx(1 / 2001)
    assert randomization_test(a, a) == 1.0


def test_input_validation():
    with pytest.raises(ValueError, match="paired"):
        paired_bootstrap([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="empty"):
        randomization_test([], [])
    with pytest.raises(ValueError, match="NaN"):
        paired_bootstrap([float("nan")], [1.0])


def test_compare_aligns_by_query_id_and_counts_wins():
    a = {"q1": 0.5, "q2": 0.2, "q3": 0.9}
    b = {"q3": 0.9, "q1": 0.7, "q2": 0.1}
    cmp = compare(a, b, n_resamples=500, n_permutations=500)
    assert (cmp.wins, cmp.losses, cmp.ties) == (1, 1, 1)
    assert cmp.delta == pytest.approx((0.2 - 0.1) / 3)
    assert cmp.mean_b - cmp.mean_a == pytest.approx(cmp.delta)
    with pytest.raises(ValueError, match="different queries"):
        compare(a, {"q1": 0.1})
