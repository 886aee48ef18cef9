"""Retrieval metrics against independent oracles (run from models/: `/usr/bin/python3 -m pytest
../test/python/test_metrics.py -q`). The oracle enumerates every placement of the relevant items
inside each tie group (all orders inside a group give each placement equally often) and averages
plain AP@k / P@k over them, so larger groups than test_model.py's permutations are exact, including
a group straddling the cut-off k, k beyond the database, and queries with no relevant item."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from medhash_model import metrics
from medhash_model.report import wilcoxon_p


def plain(seq: list[int], k: int, R: int) -> tuple[float, float]:
    hits, s = 0, 0.0
    for i, r in enumerate(seq[:k]):
        if r:
            hits += 1
            s += hits / (i + 1)
    return (s / min(R, k) if R else 0.0), hits / k


def oracle(dist: np.ndarray, rel: np.ndarray, k: int) -> tuple[float, float]:
    R = int(rel.sum())
    groups = []
    for d in np.unique(dist):
        n, r = int((dist == d).sum()), int(rel[dist == d].sum())
        groups.append([[int(i in pos) for i in range(n)] for pos in itertools.combinations(range(n), r)])
    vals = [plain([x for g in combo for x in g], k, R) for combo in itertools.product(*groups)]
    return float(np.mean([v[0] for v in vals])), float(np.mean([v[1] for v in vals]))


@pytest.mark.parametrize("seed", range(6))
def test_tie_aware_metrics_equal_placement_oracle(seed):
    gen = np.random.RandomState(100 + seed)
    for _ in range(40):
        n = gen.randint(1, 15)
        dist = gen.randint(0, gen.randint(1, 4), n) + gen.randint(0, 3)
        rel = gen.rand(n) < gen.rand()
        for k in (1, 2, 5, 10, 20):       # 20 > n: fewer db items than k
            ap, p = oracle(dist, rel, k)
            assert metrics.tie_aware_ap_at_k(dist, rel, k) == pytest.approx(ap, abs=1e-12)
            assert metrics.tie_aware_precision_at_k(dist, rel, k) == pytest.approx(p, abs=1e-12)


def test_group_straddling_the_cut_and_all_equal_distances():
    gen = np.random.RandomState(7)
    for _ in range(30):
        n0, n1 = gen.randint(0, 5), gen.randint(3, 14)   # the group at distance 1 straddles k
        dist = np.r_[np.zeros(n0, int), np.ones(n1, int), np.full(3, 2)]
        rel = gen.rand(len(dist)) < 0.5
        k = n0 + gen.randint(1, n1)
        ap, p = oracle(dist, rel, k)
        assert metrics.tie_aware_ap_at_k(dist, rel, k) == pytest.approx(ap, abs=1e-12)
        assert metrics.tie_aware_precision_at_k(dist, rel, k) == pytest.approx(p, abs=1e-12)
    # all tied: the expectation does not depend on where the relevant items sit
    rel = np.array([1, 1, 0, 0, 0, 1, 0, 0, 0, 0], bool)
    for k in (1, 4, 10, 100):
        ap, p = oracle(np.zeros(10, int), rel, k)
        assert metrics.tie_aware_ap_at_k(np.zeros(10, int), rel, k) == pytest.approx(ap, abs=1e-12)
        assert metrics.tie_aware_ap_at_k(np.zeros(10, int), rel[::-1].copy(), k) == pytest.approx(ap, abs=1e-12)
        assert metrics.tie_aware_precision_at_k(np.zeros(10, int), rel, k) == pytest.approx(p, abs=1e-12)


def test_conventions_no_relevant_item_and_empty_radius():
    """The definitions the tables use: AP@k / min(R, k), 0 for a query with no relevant db item;
    P@k divides by k even when the database is smaller; P (r<=2) is 0 for a query with nothing
    within radius 2 (and R (r<=2) 0 when it has no relevant item)."""
    dist = np.array([0, 1, 1, 3])
    assert metrics.tie_aware_ap_at_k(dist, np.zeros(4, bool), 100) == 0.0
    assert metrics.tie_aware_precision_at_k(dist, np.zeros(4, bool), 10) == 0.0
    assert metrics.tie_aware_precision_at_k(dist, np.ones(4, bool), 10) == pytest.approx(0.4)
    assert metrics.tie_aware_ap_at_k(np.array([0, 1, 2]), np.array([False, True, True]), 1) == 0.0
    assert metrics.ap_at_k_ranked(np.arange(3), np.array([False, True, True]), 2) == pytest.approx(0.5 / 2)
    # codes: query 0 has db items at distances 0 and 8, query 1 at 8 and 0 with no item of its label
    q = np.array([[1] * 8, [-1] * 8], float)
    db = np.array([[1] * 8, [-1] * 8], float)
    res = metrics.evaluate(q, np.array([0, 2]), db, np.array([0, 1]))
    assert res["precision_r2"] == pytest.approx((1.0 + 0.0) / 2)
    assert res["recall_r2"] == pytest.approx((1.0 + 0.0) / 2)
    half = np.array([[1, 1, 1, 1, -1, -1, -1, -1]], float)              # distance 4 from both
    res = metrics.evaluate(half, np.array([0]), db, np.array([0, 1]))
    assert res["precision_r2"] == 0.0 and res["recall_r2"] == 0.0   # nothing within radius 2


def test_wilcoxon_is_paired_two_sided_and_drops_zero_differences():
    """Against a hand computation: signed ranks of the non-zero differences (mid-ranks for ties),
    normal approximation with the tie correction, two-sided."""
    from math import erfc, sqrt
    from scipy.stats import rankdata
    gen = np.random.RandomState(0)
    a = np.round(gen.rand(300), 2)
    b = a.copy()
    moved = gen.rand(300) < 0.6
    b[moved] = np.clip(a[moved] + np.round(gen.normal(0.01, 0.05, moved.sum()), 2), 0, 1)
    d = a - b
    d = d[d != 0]
    n, r = len(d), rankdata(np.abs(d))
    _, c = np.unique(np.abs(d), return_counts=True)
    var = n * (n + 1) * (2 * n + 1) / 24 - (c ** 3 - c).sum() / 48
    z = (r[d > 0].sum() - n * (n + 1) / 4) / sqrt(var)
    assert wilcoxon_p(a, b) == pytest.approx(erfc(abs(z) / sqrt(2)), rel=1e-9)
    assert wilcoxon_p(b, a) == pytest.approx(wilcoxon_p(a, b), rel=1e-12)   # two-sided
    assert wilcoxon_p(a, a.copy()) == 1.0
