"""The comparison's statistics: hand-computed values on tiny fixed cases, and rliable's numbers (computed once with
rliable and stored here, so the check needs no extra dependency)."""

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


# rliable's numbers for the cases below, computed once with rliable 1.2.0 (arch 7.2.0, numpy 2.4.6):
#   library.get_interval_estimates({"a": SCORES}, lambda s: np.array([metrics.aggregate_iqm(s)]), reps=50_000,
#                                  random_state=np.random.RandomState(0))      (and aggregate_mean the same way)
#   library.get_interval_estimates({"p": [X[:, None], Y[:, None]]}, metrics.probability_of_improvement,
#                                  reps=50_000, random_state=np.random.RandomState(0))
# (rliable resamples the runs of a task with arch's bootstrap; its intervals are Monte-Carlo, as ours are: at 50000
# and 20000 resamples the percentiles agree to about 0.01, and a probability of improvement moves in steps of 1/64)
SCORES = np.array([[0.637, 0.27, 0.041], [0.017, 0.813, 0.913], [0.607, 0.73, 0.544], [0.935, 0.816, 0.003],
                   [0.857, 0.034, 0.73], [0.176, 0.863, 0.541]])  # 6 runs x 3 tasks
X = np.array([0.912, 0.071, 0.418, 0.513, 0.35, 0.844, 0.205, 0.66])
Y = np.array([0.33, 0.655, 0.418, 0.03, 0.788, 0.129, 0.902, 0.47])  # a tie: X[2] == Y[2]
RLIABLE = {
    "iqm": (0.5863999999999999, 0.3275, 0.7575999999999999),
    "mean": (0.5292777777777778, 0.37327777777777776, 0.6777777777777777),
    "poi": (0.5546875, 0.25, 0.828125),
}


@pytest.mark.parametrize("name, statistic", [("iqm", stats.iqm), ("mean", stats.mean_of_task_means)])
def test_aggregates_and_stratified_intervals_are_rliables(name, statistic):
    value, low, high = RLIABLE[name]
    est = stats.interval_estimate([SCORES[:, k] for k in range(3)], statistic, n_resamples=20_000)
    assert est.value == pytest.approx(value, abs=1e-12)
    assert est.low == pytest.approx(low, abs=0.02) and est.high == pytest.approx(high, abs=0.02)


def test_probability_of_improvement_is_rliables_and_paired_by_default():
    value, low, high = RLIABLE["poi"]
    est = stats.probability_of_improvement_estimate(X, Y, paired=False, n_resamples=20_000)
    assert est.value == pytest.approx(value, abs=1e-12)
    assert est.low == pytest.approx(low, abs=0.02) and est.high == pytest.approx(high, abs=0.02)
    # runs paired by seed resampled together: this pair's scores are anti-correlated, so the interval is wider
    paired = stats.probability_of_improvement_estimate(X, Y, n_resamples=20_000)
    assert paired.value == est.value and paired.low < est.low - 0.03 and paired.high > est.high + 0.03
