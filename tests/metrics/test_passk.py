"""pass@k against its definition: the chance that k samples drawn without replacement hold a correct one."""

from __future__ import annotations

import itertools
from fractions import Fraction

import pytest

from warmstart.metrics.passk import mean_pass_at_k, pass_at_k


def brute_force_pass_at_k(n: int, c: int, k: int) -> Fraction:
    """Enumerate every k-subset of n samples whose first c are correct; count those with a correct one."""
    subsets = list(itertools.combinations(range(n), k))
    hits = sum(any(i < c for i in subset) for subset in subsets)
    return Fraction(hits, len(subsets))


@pytest.mark.parametrize("n", range(1, 9))
def test_matches_brute_force_enumeration(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            expected = float(brute_force_pass_at_k(n, c, k))
            assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12), (n, c, k)


def test_pass_at_1_is_the_fraction_correct():
    for n, c in [(1, 0), (1, 1), (4, 1), (10, 3), (200, 57)]:
        assert pass_at_k(n, c, 1) == pytest.approx(c / n, abs=1e-12)


def test_edge_cases():
    assert pass_at_k(10, 0, 1) == 0.0
    assert pass_at_k(10, 0, 10) == 0.0
    assert pass_at_k(10, 10, 1) == 1.0
    assert pass_at_k(5, 5, 5) == 1.0
    # Fewer wrong samples than k: every draw of k must hold a correct one.
    assert pass_at_k(10, 8, 3) == 1.0
    assert pass_at_k(10, 7, 3) < 1.0


def test_large_n_stays_finite_and_monotone_in_c():
    # The product form must not overflow where binomials of n=10,000 would be astronomically large.
    values = [pass_at_k(10_000, c, 100) for c in (0, 1, 10, 100, 1000)]
    assert values == sorted(values)
    assert values[0] == 0.0 and 0.0 < values[1] < 0.02 and values[-1] > 0.9999
    # Exactly 1/100 for one correct sample: k/n.
    assert values[1] == pytest.approx(0.01, abs=1e-12)


@pytest.mark.parametrize(
    "n, c, k",
    [(5, 6, 1), (5, -1, 1), (5, 2, 0), (5, 2, 6), (0, 0, 1), (3, 1, -1)],
)
def test_invalid_inputs_raise_value_error(n, c, k):
    with pytest.raises(ValueError, match="pass@k"):
        pass_at_k(n, c, k)


def test_mean_pass_at_k_averages_over_tasks():
    counts = [(4, 0), (4, 1), (4, 4)]
    expected = (0.0 + float(brute_force_pass_at_k(4, 1, 2)) + 1.0) / 3
    assert mean_pass_at_k(counts, 2) == pytest.approx(expected, abs=1e-12)
