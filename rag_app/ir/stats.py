"""Paired comparisons of two systems on the same queries.

A difference in mean nDCG between a baseline (``a``) and a candidate (``b``) means little
without an idea of how much it would move with another sample of queries. Both tests here are
*paired*: they resample or sign-flip the per-query differences ``d_i = b_i - a_i``, so the
large query-to-query variance that both systems share cancels out.

* ``paired_bootstrap``: percentile bootstrap CI of ``mean(d)``, resampling queries with
  replacement. Answers "how large is the improvement, give or take".
* ``randomization_test``: two-sided paired sign-flip (permutation) test of ``mean(d) == 0``.
  Under the null the labels a/b are exchangeable within a query, so each ``d_i`` is as likely to
  be ``-d_i``. Smucker et al. (CIKM 2007) recommend it over the t-test and sign test for IR.
* ``compare``: both, plus win/loss/tie counts, from two ``{query_id: score}`` dicts.

Everything is seeded (``numpy.random.default_rng(seed)``) and reproducible; the resampling is
vectorised in chunks so memory stays bounded (about ``_CHUNK_ELEMENTS`` floats at a time)
whatever the number of queries or resamples.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import ArrayLike

# Upper bound on the size of one (resamples x queries) block: 2**22 float64 = 32 MiB.
_CHUNK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class BootstrapResult:
    """Mean of ``b - a`` with its percentile-bootstrap confidence interval."""

    mean_diff: float
    ci_low: float
    ci_high: float
    n: int
    n_resamples: int
    confidence: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Comparison:
    """Baseline ``a`` vs candidate ``b`` on ``n`` shared queries.

    ``delta = mean(b - a)`` (``mean_b - mean_a`` up to rounding); ``[ci_low, ci_high]`` is its
    bootstrap CI; ``p_value`` is the two-sided randomisation test; ``wins`` counts queries where
    b beats a by more than the tie tolerance, ``losses`` where a beats b, ``ties`` the rest.
    """

    mean_a: float
    mean_b: float
    delta: float
    ci_low: float
    ci_high: float
    p_value: float
    n: int
    wins: int
    losses: int
    ties: int
    confidence: float = 0.95

    def significant(self, alpha: float = 0.05) -> bool:
        """True when ``p_value < alpha``."""
        return self.p_value < alpha

    def to_dict(self) -> dict:
        return asdict(self)


def _differences(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """``b - a`` as float64, after checking the inputs are paired, non-empty and finite."""
    arr_a = np.asarray(a, dtype=np.float64)
    arr_b = np.asarray(b, dtype=np.float64)
    if arr_a.ndim != 1 or arr_b.ndim != 1:
        raise ValueError("a and b must be one-dimensional sequences of per-query scores")
    if arr_a.shape != arr_b.shape:
        raise ValueError(
            f"a and b must be paired (same length): got {arr_a.size} and {arr_b.size} scores"
        )
    if arr_a.size == 0:
        raise ValueError("a and b are empty: need at least one query to compare")
    if not (np.all(np.isfinite(arr_a)) and np.all(np.isfinite(arr_b))):
        raise ValueError("a and b must not contain NaN or infinite scores")
    return arr_b - arr_a


def _chunks(total: int, n: int) -> list[int]:
    """Sizes of the resample blocks: each holds at most ``_CHUNK_ELEMENTS`` values."""
    per_chunk = max(1, _CHUNK_ELEMENTS // max(n, 1))
    sizes = [per_chunk] * (total // per_chunk)
    if total % per_chunk:
        sizes.append(total % per_chunk)
    return sizes


def paired_bootstrap(
    a: ArrayLike,
    b: ArrayLike,
    n_resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> BootstrapResult:
    """Percentile-bootstrap CI of ``mean(b - a)``, resampling queries with replacement.

    Each resample draws n query indices with replacement and takes the mean of the paired
    differences at those indices; the CI is the ``(1 - confidence) / 2`` and
    ``(1 + confidence) / 2`` quantiles of those means (numpy's default linear interpolation).
    Identical inputs give exactly ``[0, 0]``. Same inputs + same seed = same result.
    """
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    diff = _differences(a, b)
    n = diff.size
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples, dtype=np.float64)
    start = 0
    for size in _chunks(n_resamples, n):
        idx = rng.integers(0, n, size=(size, n))
        means[start : start + size] = diff[idx].mean(axis=1)
        start += size
    alpha = 1.0 - confidence
    low, high = np.quantile(means, [alpha / 2.0, 1.0 - alpha / 2.0])
    return BootstrapResult(
        mean_diff=float(diff.mean()),
        ci_low=float(low),
        ci_high=float(high),
        n=n,
        n_resamples=n_resamples,
        confidence=confidence,
    )


def randomization_test(
    a: ArrayLike,
    b: ArrayLike,
    n_permutations: int = 10_000,
    seed: int = 0,
) -> float:
    """Two-sided p-value of the paired sign-flip randomisation test on ``mean(b - a)``.

    Each permutation flips the sign of every difference with probability 1/2 and records
    ``|mean|``; the p-value is ``(count + 1) / (n_permutations + 1)`` where ``count`` is the
    number of permutations at least as extreme as the observed ``|mean(b - a)|``. The +1 counts
    the observed assignment itself, so p is never 0 (a Monte Carlo test cannot prove more than
    ``1 / (n_permutations + 1)``) and the test stays valid. Identical inputs give 1.0.
    """
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be >= 1, got {n_permutations}")
    diff = _differences(a, b)
    n = diff.size
    observed = abs(float(diff.mean()))
    # Sign-flipped means that equal the observed one in exact arithmetic can differ from it in
    # the last bits (different summation order); count them as "at least as extreme".
    tolerance = 1e-12 * max(1.0, float(np.abs(diff).max()))
    rng = np.random.default_rng(seed)
    count = 0
    for size in _chunks(n_permutations, n):
        signs = rng.integers(0, 2, size=(size, n), dtype=np.int8) * 2 - 1
        perm_means = np.abs((signs * diff).mean(axis=1))
        count += int(np.count_nonzero(perm_means >= observed - tolerance))
    return (count + 1) / (n_permutations + 1)


def compare(
    per_query_a: Mapping[str, float],
    per_query_b: Mapping[str, float],
    n_resamples: int = 10_000,
    n_permutations: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
    tie_tolerance: float = 0.0,
) -> Comparison:
    """Compare baseline ``a`` with candidate ``b`` from ``{query_id: score}`` dicts.

    The two dicts must cover exactly the same query ids (ValueError naming a few that differ
    otherwise): comparing means over different query sets is how spurious gains are made.
    Queries are aligned in sorted id order, so the result does not depend on dict insertion
    order. A query is a tie when ``|b - a| <= tie_tolerance``.
    """
    keys_a, keys_b = set(per_query_a), set(per_query_b)
    if keys_a != keys_b:
        only_a = sorted(keys_a - keys_b)
        only_b = sorted(keys_b - keys_a)
        raise ValueError(
            "per-query scores cover different queries: "
            f"{len(only_a)} only in a (e.g. {only_a[:5]}), "
            f"{len(only_b)} only in b (e.g. {only_b[:5]})"
        )
    if not keys_a:
        raise ValueError("no queries to compare")
    if tie_tolerance < 0:
        raise ValueError(f"tie_tolerance must be >= 0, got {tie_tolerance}")
    qids = sorted(keys_a)
    a = np.array([per_query_a[q] for q in qids], dtype=np.float64)
    b = np.array([per_query_b[q] for q in qids], dtype=np.float64)
    boot = paired_bootstrap(a, b, n_resamples=n_resamples, confidence=confidence, seed=seed)
    p_value = randomization_test(a, b, n_permutations=n_permutations, seed=seed)
    diff = b - a
    wins = int(np.count_nonzero(diff > tie_tolerance))
    losses = int(np.count_nonzero(diff < -tie_tolerance))
    return Comparison(
        mean_a=math.fsum(a) / a.size,
        mean_b=math.fsum(b) / b.size,
        delta=boot.mean_diff,
        ci_low=boot.ci_low,
        ci_high=boot.ci_high,
        p_value=p_value,
        n=len(qids),
        wins=wins,
        losses=losses,
        ties=len(qids) - wins - losses,
        confidence=confidence,
    )


__all__ = [
    "BootstrapResult",
    "Comparison",
    "compare",
    "paired_bootstrap",
    "randomization_test",
]
