"""benchmarks.al_headroom: units replay exactly, an interrupted run resumes, the ratio's statistics."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import al_headroom
from detgym.compare.store import read_runs


@pytest.fixture
def argv(tmp_path, digits_cache, monkeypatch):
    monkeypatch.setitem(al_headroom.POOLS, "test", ("test", {"dataset_kwargs": {"cache_dir": str(digits_cache)}}))
    return ["--pools", "test", "--seeds", "0", "--best-of", "2", "--noise-repeats", "1", "--out", str(tmp_path)]


def test_units_resume_and_replays_match(argv, tmp_path, monkeypatch):
    real = al_headroom._run_unit
    calls = []

    def crash_on_oracle(env, seed, unit, done, key):
        calls.append(unit)
        if unit == "oracle_balance" and calls.count(unit) == 1:
            raise RuntimeError("killed")
        return real(env, seed, unit, done, key)

    monkeypatch.setattr(al_headroom, "_run_unit", crash_on_oracle)
    with pytest.raises(RuntimeError, match="killed"):
        al_headroom.main(argv)
    assert calls == ["random", "noise-1", "oracle_balance"]
    summary = al_headroom.main(argv)[0]
    assert calls[3:] == ["oracle_balance", "best_of_2", "best_of_2-1"]  # finished units were not run again
    units = {r["unit"]: r for r in read_runs(tmp_path / "units.jsonl").records.values()}
    assert len(units) == 5 and summary["seeds"] == [0]
    # a replay with the episode's own training seeds would give its rewards; other seeds give other rewards
    assert units["noise-1"]["selected"] == units["random"]["selected"]
    assert np.asarray(units["best_of_2"]["trial_rewards"]).shape == (2, 2)
    assert summary["noise_sd"] == pytest.approx(np.std([units["random"]["final"], units["noise-1"]["final"]], ddof=1))
    assert summary["oracle_balance_gain"] == pytest.approx(units["oracle_balance"]["final"] - units["random"]["final"])
    assert summary["best_of_k_gain"] == pytest.approx(units["best_of_2-1"]["final"] - units["noise-1"]["final"])
    assert al_headroom.main(argv)[0]["rows"] == summary["rows"] and len(calls) == 6


def test_replaying_the_random_units_actions_reproduces_it(argv, tmp_path):
    al_headroom.main(argv[:4] + ["--best-of", "0", "--noise-repeats", "1", "--out", str(tmp_path)])
    units = {r["unit"]: r for r in read_runs(tmp_path / "units.jsonl").records.values()}
    env = al_headroom._make_env("test")
    again = al_headroom._play(env, al_headroom._start(env, 0, None), al_headroom._replay(units["random"]["actions"]))
    assert again["rewards"] == units["random"]["rewards"] and again["selected"] == units["random"]["selected"]
    env.close()


def test_ratio_and_its_interval():
    diffs, var = np.array([0.3, 0.5, 0.4, 0.6, 0.2]), np.full(5, 0.01)
    value, low, high = al_headroom._ratio(diffs, var)
    assert value == pytest.approx(4.0) and low < value < high
    assert al_headroom._ratio(diffs[:1], var[:1])[1:] == (None, None)
