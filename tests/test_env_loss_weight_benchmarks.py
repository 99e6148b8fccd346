"""Smoke tests of the DetLossWeight benchmark scripts (overhead, RLO probability plot) on tiny runs (the ablation of
table 3 is ``detgym compare``: tests/test_compare.py)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import overhead, plot_rlo_probs


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("lw-bench-cache"))


def test_overhead_measure_runs(cache):
    res = overhead.measure("test", rounds=1, warmup=0, dataset_kwargs={"cache_dir": cache})
    assert res["alpha"] == 2 and res["rounds"] == 1
    # one env step and one plain block of alpha iterations each: the ratio is theirs
    assert res["ratio_interleaved"] == pytest.approx(res["env_step_s_mean"] / res["plain_block_s_mean"])
    # the env's own bookkeeping is a small part of a step, even at alpha = 2 on 32 px images
    assert 0 <= res["overhead_direct"] < 0.25


def test_plot_rlo_probs_from_agent_log(tmp_path):
    from detgym.agents import RLOAgent
    from detgym.envs.loss_weight.observation import build_observation

    def obs(now, prev):
        return build_observation(np.full(5, now), np.full(5, prev), np.ones(5), np.ones(5), 0.5, np.ones(5))

    agent = RLOAgent(seed=0, log_dir=tmp_path / "log")
    for episode in range(2):
        agent.predict(obs(1.0, 1.0), episode_start=True)
        for k in range(6):
            agent.predict(obs(1.0, 1.5 if k % 3 else 0.5))
    agent.close()
    decisions, probs, episode = plot_rlo_probs.read_probs(tmp_path / "log")
    assert episode == 1 and decisions.tolist() == list(range(1, 8))
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)
    np.testing.assert_allclose(probs[0], 0.25)
    out = plot_rlo_probs.plot(decisions, probs, tmp_path / "fig" / "p.png", alpha=20)
    assert out.exists() and out.stat().st_size > 1000
    with pytest.raises(FileNotFoundError, match="does not exist"):
        plot_rlo_probs.read_probs(tmp_path / "missing")
