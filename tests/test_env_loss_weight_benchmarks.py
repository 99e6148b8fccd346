"""Smoke tests of the DetLossWeight benchmark scripts (overhead, ablation, RLO probability plot) on tiny runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks import ablation_loss_weight as ablation
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


def test_ablation_resumes_and_summarizes(tmp_path, cache, monkeypatch):
    monkeypatch.setenv("DETGYM_CACHE", cache)
    out = tmp_path / "abl.json"
    argv = ["--preset", "test", "--agents", "uniform", "avw", "--seeds", "0", "1", "--iterations", "8",
            "--out", str(out), "--bootstrap", "200"]
    assert ablation.main(argv) == 0
    runs = json.loads(out.read_text())["runs"]
    assert len(runs) == 4 and {r["agent"] for r in runs} == {"uniform", "avw"}
    assert all(r["steps"] == 3 and sum(r["action_counts"]) == 3 for r in runs)
    assert all(r["action_counts"] == [3, 0, 0, 0] for r in runs if r["agent"] == "avw")
    mtime = out.stat().st_mtime_ns
    assert ablation.main(argv) == 0  # everything is there: nothing re-run, file untouched
    assert out.stat().st_mtime_ns == mtime
    assert out.with_suffix(".summary.csv").exists() and out.with_suffix(".summary.png").exists()
    with pytest.raises(ValueError, match="unknown agent"):
        ablation.main(argv[:2] + ["--agents", "sac"])


def test_bootstrap_and_iqm():
    lo, hi = ablation.bootstrap_ci(np.array([1.0, 2.0, 3.0, 4.0]), n_boot=2000)
    assert 1.0 <= lo < 2.5 < hi <= 4.0
    assert np.isnan(ablation.bootstrap_ci(np.array([1.0]))[0])
    assert ablation.iqm(np.array([0.0, 1.0, 2.0, 100.0])) == pytest.approx(1.5)
    runs = [{"agent": a, "seed": s, "AP": ap, "AP50": ap, "return": 0.0, "diverged": False}
            for a, s, ap in [("uniform", 0, 0.1), ("uniform", 1, 0.2), ("avw", 0, 0.15), ("avw", 1, 0.3)]]
    rows = {r["agent"]: r for r in ablation.summarize(runs, ["uniform", "avw"], n_boot=500)}
    assert rows["avw"]["dAP_vs_uniform"] == pytest.approx(0.075)


def test_plot_rlo_probs_from_agent_log(tmp_path):
    from agents import RLOAgent
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
