"""The comparison's statistics: hand-computed values on tiny fixed cases, and rliable's numbers where installed."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from detgym.compare import stats


def test_iqm_is_the_mean_of_the_middle_half_over_all_tasks():
    assert stats.iqm(np.arange(1.0, 9.0)) == pytest.approx(4.5)  # (3 + 4 + 5 + 6) / 4
    # two tasks pooled: the middle four of the eight runs are 2, 3, 10, 11
    assert stats.iqm(np.array([0.0, 1, 2, 3]), np.array([10.0, 11, 12, 13])) == pytest.approx(6.5)
    assert stats.mean_of_task_means(np.array([0.0, 1.0]), np.array([10.0, 10.0, 10.0, 12.0])) == pytest.approx(5.5)


def test_probability_of_improvement_counts_wins_and_half_ties_over_all_pairs():
    # x=1 beats one y (0); x=2 ties twice (0.5 each) and beats 0; x=3 beats all three: (1 + 2 + 3) / 9
    assert stats.probability_of_improvement(np.array([1.0, 2, 3]), np.array([2.0, 2, 0])) == pytest.approx(6 / 9)
    assert stats.probability_of_improvement(np.array([1.0, 2]), np.array([1.0, 2])) == pytest.approx(0.5)
    assert stats.probability_of_improvement(np.array([5.0]), np.array([1.0])) == 1.0
    # vectorized over a leading batch axis, as scipy.stats.bootstrap calls it
    batch = stats.probability_of_improvement(np.array([[1.0, 2, 3], [0, 0, 0]]), np.array([[2.0, 2, 0], [1, 1, 1]]))
    np.testing.assert_allclose(batch, [6 / 9, 0.0])


def test_stratified_bootstrap_resamples_within_each_task():
    # Task A's mean is 0, 0.5 or 1 (probabilities 1/4, 1/2, 1/4); task B's is always 10. Resampled within tasks,
    # the mean of task means takes only the values 5, 5.25, 5.5, so the percentile interval is exactly [5, 5.5];
    # pooled resampling would reach 0 and 10.
    est = stats.interval_estimate([[0.0, 1.0], [10.0, 10.0]], stats.mean_of_task_means, n_resamples=4000)
    assert (est.value, est.low, est.high, est.n) == (5.25, 5.0, 5.5, 4)


def test_percentile_interval_matches_the_exhaustive_bootstrap():
    values = np.array([0.1, 0.4, 0.5, 0.9, 1.3])
    # every one of the 5^5 equally likely resamples, as the bootstrap's definition enumerates them
    means = np.array([np.mean(values[list(idx)]) for idx in itertools.product(range(5), repeat=5)])
    low, high = np.percentile(means, [2.5, 97.5])
    est = stats.interval_estimate([values], stats.mean_of_task_means, n_resamples=20_000)
    assert est.value == pytest.approx(values.mean())
    assert est.low == pytest.approx(low, abs=0.02) and est.high == pytest.approx(high, abs=0.02)


def test_paired_difference_and_its_interval():
    x, y = [0.5, 0.7, 0.9], [0.4, 0.7, 0.6]  # differences 0.1, 0.0, 0.3
    est = stats.paired_difference(x, y, n_resamples=4000)
    assert est.value == pytest.approx(0.4 / 3) and est.n == 3
    # each extreme resample (all 0.0 or all 0.3) has probability 1/27 > 2.5%: the interval's ends are exact
    assert est.low == pytest.approx(0.0) and est.high == pytest.approx(0.3)
    with pytest.raises(ValueError, match="paired by seed"):
        stats.paired_difference([1.0, 2.0], [1.0])


def test_fewer_than_two_runs_give_no_interval():
    est = stats.interval_estimate([[0.3]])
    assert est.value == pytest.approx(0.3) and np.isnan(est.low) and np.isnan(est.high)
    poi = stats.probability_of_improvement_estimate([0.4], [0.3])
    assert poi.value == 1.0 and np.isnan(poi.low)
    with pytest.raises(ValueError, match="non-empty"):
        stats.interval_estimate([[]])


def test_same_numbers_as_rliable():
    rliable = pytest.importorskip("rliable")
    pytest.importorskip("arch")
    from rliable import library, metrics

    rng = np.random.default_rng(0)
    scores = rng.random((6, 3))  # 6 runs x 3 tasks
    # Monte-Carlo intervals from two generators (rliable's arch loop is slow: 5000 resamples) agree to about 0.015
    reps, tol = 5_000, 0.04
    for ours, theirs in ((stats.iqm, metrics.aggregate_iqm), (stats.mean_of_task_means, metrics.aggregate_mean)):
        est = stats.interval_estimate([scores[:, k] for k in range(3)], ours, n_resamples=20_000)
        point, interval = library.get_interval_estimates({"a": scores}, lambda s: np.array([theirs(s)]), reps=reps)
        assert est.value == pytest.approx(float(point["a"][0]), abs=1e-12)
        assert est.low == pytest.approx(float(interval["a"][0, 0]), abs=tol)
        assert est.high == pytest.approx(float(interval["a"][1, 0]), abs=tol)
    x, y = rng.random((8, 1)), rng.random((8, 1))
    x[2] = y[2]  # a tie
    est = stats.probability_of_improvement_estimate(x[:, 0], y[:, 0], n_resamples=20_000)
    point, interval = library.get_interval_estimates({"p": [x, y]}, metrics.probability_of_improvement, reps=reps)
    assert est.value == pytest.approx(float(point["p"]), abs=1e-12)
    assert est.low == pytest.approx(float(np.ravel(interval["p"])[0]), abs=tol)
    assert est.high == pytest.approx(float(np.ravel(interval["p"])[1]), abs=tol)
    assert rliable is not None
