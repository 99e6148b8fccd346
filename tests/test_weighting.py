"""detgym.envs.loss_weight.weighting against hand-worked numbers (eq. 2-5, 7, 9 of paper 000)."""

from __future__ import annotations

import numpy as np
import pytest

from detgym.envs.loss_weight.weighting import (
    N_ACTIONS,
    decrease_rate,
    interval_reward,
    interval_stats,
    rlo_update,
    scheme_weights,
)


# ---------------------------------------------------------------- eq. 2-3
def test_interval_stats_hand_worked():
    # level 0: 1, 3, 2 -> sum 6, mean 2, var ((1)^2 + 1^2 + 0) / 2 = 1
    # level 1: 4, 2, 0 -> sum 6, mean 2, var (4 + 0 + 4) / 2 = 4
    sums, var = interval_stats([[1.0, 4.0], [3.0, 2.0], [2.0, 0.0]])
    np.testing.assert_allclose(sums, [6.0, 6.0])
    np.testing.assert_allclose(var, [1.0, 4.0])
    assert sums.dtype == np.float64 and var.dtype == np.float64


def test_interval_stats_matches_numpy_unbiased():
    rng = np.random.default_rng(0)
    x = rng.random((7, 5))
    sums, var = interval_stats(x)
    np.testing.assert_allclose(sums, x.sum(0))
    np.testing.assert_allclose(var, x.var(0, ddof=1))


def test_interval_stats_alpha_one_has_zero_variance():
    sums, var = interval_stats([[0.5, 2.0, 3.0]])
    np.testing.assert_allclose(sums, [0.5, 2.0, 3.0])
    np.testing.assert_array_equal(var, [0.0, 0.0, 0.0])


@pytest.mark.parametrize("bad", [[1.0, 2.0], [[1.0, np.nan]], np.zeros((0, 3)), [[[1.0]]]])
def test_interval_stats_rejects_bad_input(bad):
    with pytest.raises(ValueError, match="losses"):
        interval_stats(bad)


# ---------------------------------------------------------------- eq. 4
def test_decrease_rate_hand_worked():
    r = decrease_rate([1.0, 4.0], [0.5, 5.0])
    np.testing.assert_allclose(r, [0.5 / 1.00001, -1.0 / 4.00001], rtol=1e-12)


def test_decrease_rate_first_interval_uses_var_prev_one():
    # Var_{i,0} = 1 (paper): a first-interval variance of 0.25 gives r = 0.75 / (1 + 1e-5)
    np.testing.assert_allclose(decrease_rate(1.0, [0.25]), [0.75 / 1.00001])


def test_decrease_rate_zero_variance_is_finite():
    np.testing.assert_allclose(decrease_rate([0.0], [0.0]), [0.0])


def test_decrease_rate_rejects_nan_and_bad_eps():
    with pytest.raises(ValueError, match="var_cur"):
        decrease_rate([1.0], [np.nan])
    with pytest.raises(ValueError, match="eps"):
        decrease_rate([1.0], [1.0], eps=0.0)


# ---------------------------------------------------------------- eq. 5
SUMS = [2.0, 6.0, 1.0, 1.0, 0.0]  # total 10
RATES = [0.1, 0.3, 0.3, -0.2, 0.0]


def test_scheme_a0_largest_rate_ties_to_lower_level():
    # r ties between levels 1 and 2 -> level 1 ranks first (lambda 1.5): 1 + 1.5 * 6/10; level 2: 1 + 1.0 * 1/10
    np.testing.assert_allclose(scheme_weights(0, SUMS, RATES), [1.0, 1.9, 1.1, 1.0, 1.0])


def test_scheme_a1_smallest_loss():
    # smallest: level 4 (sum 0, lambda 1.5 -> 1.0), then the 1.0-tie between levels 2 and 3 -> level 2 (1.1)
    np.testing.assert_allclose(scheme_weights(1, SUMS, RATES), [1.0, 1.0, 1.1, 1.0, 1.0])


def test_scheme_a2_largest_loss():
    # largest: level 1 (1 + 1.5 * 0.6 = 1.9), then level 0 (1 + 1.0 * 0.2 = 1.2)
    np.testing.assert_allclose(scheme_weights(2, SUMS, RATES), [1.2, 1.9, 1.0, 1.0, 1.0])


def test_scheme_a3_uniform():
    np.testing.assert_array_equal(scheme_weights(3, SUMS, RATES), np.ones(5))


def test_scheme_n_enhance_beyond_lambdas_reuses_last():
    # third-ranked level of a2 is level 2 (tie with 3), lambda falls back to 1.0 -> 1.1
    np.testing.assert_allclose(scheme_weights(2, SUMS, RATES, n_enhance=3), [1.2, 1.9, 1.1, 1.0, 1.0])
    np.testing.assert_allclose(scheme_weights(2, SUMS, RATES, n_enhance=1, lambdas=(2.0,)), [1, 2.2, 1, 1, 1])
    np.testing.assert_array_equal(scheme_weights(0, SUMS, RATES, n_enhance=0), np.ones(5))


def test_scheme_zero_total_loss_gives_ones():
    np.testing.assert_array_equal(scheme_weights(2, [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]), np.ones(3))


def test_scheme_accepts_numpy_integer_actions():
    np.testing.assert_allclose(scheme_weights(np.int64(2), SUMS, RATES), [1.2, 1.9, 1.0, 1.0, 1.0])
    np.testing.assert_allclose(scheme_weights(np.array(2), SUMS, RATES), [1.2, 1.9, 1.0, 1.0, 1.0])


@pytest.mark.parametrize("action", [-1, 4, 1.0, "a0", None, True])
def test_scheme_rejects_bad_action(action):
    with pytest.raises(ValueError, match=r"action must be an integer in 0\.\.3"):
        scheme_weights(action, SUMS, RATES)


def test_scheme_rejects_bad_shapes_and_values():
    with pytest.raises(ValueError, match="rates"):
        scheme_weights(0, SUMS, RATES[:3])
    with pytest.raises(ValueError, match="sums"):
        scheme_weights(0, [1.0, np.nan], [0.0, 0.0])
    with pytest.raises(ValueError, match="n_enhance"):
        scheme_weights(0, SUMS, RATES, n_enhance=6)
    with pytest.raises(ValueError, match="lambdas"):
        scheme_weights(0, SUMS, RATES, lambdas=(-1.0,))


# ---------------------------------------------------------------- eq. 7
def test_interval_reward_sign_of_total_drop():
    assert interval_reward([1.0, 2.0], [1.0, 1.5]) == 1.0
    assert interval_reward([1.0, 2.0], [2.0, 2.0]) == -1.0
    assert interval_reward([1.0, 2.0], [2.0, 1.0]) == 0.0
    # the total decides, not each level
    assert interval_reward([3.0, 0.0], [0.5, 2.0]) == 1.0


def test_interval_reward_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="sums_prev and sums_cur"):
        interval_reward([1.0, 2.0], [1.0])


# ---------------------------------------------------------------- eq. 9
def test_rlo_update_reward_positive():
    p = rlo_update([0.25] * 4, 1, 1.0)
    np.testing.assert_allclose(p, [0.25 * 0.74 / 0.75, 0.26, 0.25 * 0.74 / 0.75, 0.25 * 0.74 / 0.75])
    assert p.sum() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("reward", [-1.0, 0.0])
def test_rlo_update_non_positive_reward_punishes(reward):
    p = rlo_update([0.25] * 4, 2, reward)
    np.testing.assert_allclose(p, [0.25 * 0.76 / 0.75] * 2 + [0.24] + [0.25 * 0.76 / 0.75])


def test_rlo_update_clips_to_beta():
    # already at beta_max: the rescale factor is 1, nothing moves
    np.testing.assert_allclose(rlo_update([0.9, 0.05, 0.03, 0.02], 0, 1.0), [0.9, 0.05, 0.03, 0.02])
    # 0.15 - 0.1 = 0.05 is clipped up to 0.1, others * 0.9 / 0.85
    p = rlo_update([0.15, 0.35, 0.25, 0.25], 0, -1.0, gamma=0.1)
    np.testing.assert_allclose(p, [0.1, 0.35 * 0.9 / 0.85, 0.25 * 0.9 / 0.85, 0.25 * 0.9 / 0.85])
    assert p.sum() == pytest.approx(1.0)


def test_rlo_update_certain_action_shares_freed_mass():
    # p_k,old = 1 (AVW as "RLO with probability 1"): 1 + 0.01 is clipped to 0.9 and 0.1 is shared equally
    np.testing.assert_allclose(rlo_update([1.0, 0.0, 0.0, 0.0], 0, 1.0), [0.9, 0.1 / 3, 0.1 / 3, 0.1 / 3])


def test_rlo_update_does_not_modify_input_and_keeps_sum_over_many_steps():
    rng = np.random.default_rng(0)
    p0 = np.full(N_ACTIONS, 0.25)
    p = p0
    for _ in range(5000):
        p = rlo_update(p, int(rng.integers(4)), float(rng.choice([-1.0, 1.0])))
    np.testing.assert_array_equal(p0, [0.25] * 4)
    assert p.sum() == pytest.approx(1.0, abs=1e-9)
    assert np.all(p >= 0)


def test_rlo_update_rejects_bad_input():
    with pytest.raises(ValueError, match="probs"):
        rlo_update([0.5, 0.6], 0, 1.0)
    with pytest.raises(ValueError, match="action"):
        rlo_update([0.25] * 4, 4, 1.0)
    with pytest.raises(ValueError, match="beta"):
        rlo_update([0.25] * 4, 0, 1.0, beta=(0.9, 0.1))
    with pytest.raises(ValueError, match="gamma"):
        rlo_update([0.25] * 4, 0, 1.0, gamma=-0.1)
    with pytest.raises(ValueError, match="reward"):
        rlo_update([0.25] * 4, 0, float("nan"))
