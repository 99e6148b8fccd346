"""Smoke tests of the training-path and signal benchmarks on tiny runs: profile_step (sections add up; the previous and
the current training path give bit-identical losses for every family), signal (statistics on known numbers, a real
vector-env run of the test preset) and rl_throughput (both ratios on the test preset)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks import loss_weight_signal, profile_step, rl_throughput


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("lw-signal-cache"))


def test_profile_sections_add_up(tiny_digits):
    train, _ = tiny_digits
    trainer = profile_step.make_trainer("retinanet-tiny", train)
    trainer.step()
    ms = profile_step.time_sections(trainer, 2)
    assert set(profile_step.SECTIONS) <= set(ms)
    assert ms["total"] == pytest.approx(sum(ms[s] for s in profile_step.SECTIONS))
    assert all(ms[s] > 0 for s in ("data", "forward", "matching", "loss", "backward", "optimizer"))
    prof, ops = profile_step.profiler_sections(trainer, 1)
    assert prof["backward"] > 0 and prof["forward"] > 0 and len(ops) == profile_step.TOP_OPS
    # the instrumentation is gone afterwards
    assert "step" not in vars(trainer.optimizer) and "forward" not in vars(trainer.model.backbone)


@pytest.mark.parametrize("recipe", ["retinanet-tiny", "fcos-tiny", "fasterrcnn-tiny"])
def test_previous_and_current_path_are_bit_identical(recipe, tiny_digits, monkeypatch):
    monkeypatch.setattr(profile_step, "WARMUP", 1)
    train, _ = tiny_digits
    res = profile_step.compare_paths(recipe, train, iters=1, blocks=2)
    assert res["losses_identical"] and res["old_ms"] > 0 and res["new_ms"] > 0


def test_signal_statistics_on_known_numbers():
    rng = np.random.default_rng(0)
    seed_effect, noise = rng.normal(0, 0.03, 8), rng.normal(0, 0.01, 8)
    # a2 is 0.05 better than a3 on every seed (plus noise), a0 / a1 sit between
    runs = [{"seed": s, "AP": [0.42 + e, 0.41 + e, 0.45 + e + n, 0.40 + e], "AP50": [0.6, 0.4, 0.6, 0.6], "wall_s": 4.0}
            for s, (e, n) in enumerate(zip(seed_effect, noise))]
    row = loss_weight_signal.summarize(runs)
    assert (row["best"], row["worst"], row["n_seeds"]) == ("a2", "a3", 8)
    assert row["diff_mean"] == pytest.approx(0.05 + noise.mean())
    assert row["diff_sd"] == pytest.approx(noise.std(ddof=1))
    assert 0 < row["ci_low"] < row["diff_mean"] < row["ci_high"] and row["ci_excludes_0"]
    assert row["friedman_p"] < 0.01 and row["learning"] == 0.75
    assert row["seed_sd"] == pytest.approx(np.std(0.40 + seed_effect, ddof=1))
    assert row["wall_s_per_sub_episode"] == pytest.approx(1.0)
    # no effect at all: best - worst is still > 0 (picked after the fact), Friedman's test does not fall for it
    flat = [{**r, "AP": [0.4 + e + d for d in rng.normal(0, 0.01, 4)]} for r, e in zip(runs, seed_effect)]
    none = loss_weight_signal.summarize(flat)
    assert none["diff_mean"] > 0 and none["friedman_p"] > 0.05


def test_signal_runs_the_test_preset(cache, monkeypatch, tmp_path):
    monkeypatch.setitem(loss_weight_signal.CANDIDATES, "test", ("test", {"dataset_kwargs": {"cache_dir": cache}}))
    torch_threads = torch.get_num_threads()
    out = tmp_path / "signal.json"
    assert loss_weight_signal.main(["--candidates", "test", "--seeds", "0", "--workers", "1", "--out", str(out)]) == 0
    torch.set_num_threads(torch_threads)
    assert out.exists() and out.with_suffix(".summary.png").exists()
    import json

    runs = json.loads(out.read_text())["runs"]
    assert len(runs) == 1 and all(len(r["AP"]) == 4 for r in runs.values())
    # resumable: a second call finds the run done and trains nothing
    monkeypatch.setattr(loss_weight_signal, "run_one", lambda *a: pytest.fail("a finished run was trained again"))
    assert loss_weight_signal.main(["--candidates", "test", "--seeds", "0", "--workers", "1", "--out", str(out)]) == 0


def test_rl_throughput_on_the_test_preset(cache):
    kw = {"dataset_kwargs": {"cache_dir": cache}}
    res = rl_throughput.episodes_per_cpu_hour(1, 2, baseline="test", candidate="test", **kw)
    rows = res["rows"]
    assert rows["baseline"]["episodes"] == 1 and rows["candidate"]["episodes"] == 2
    assert rows["candidate"]["cpu_s"] > 0 and res["ratio"] >= 0
    steps = rl_throughput.steps_per_second(2, blocks=2, steps=1, preset="test", **kw)
    assert steps["native"]["env_steps_per_s"] > 0 and steps["ratio_wall"] > 0
