"""benchmarks.al_curves: a finished (strategy, seed, cycle) is never run twice; the aggregate's numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import al_curves
from detgym import agents
from detgym.compare.store import read_runs


@pytest.fixture
def settings(tmp_path, digits_cache):
    return al_curves.Settings(preset="test", strategies=("random", "coreset"), seeds=(0,),
                              overrides={"dataset_kwargs": {"cache_dir": str(digits_cache)}}, workers=1,
                              out=str(tmp_path / "out"))


def _cycles(settings, strategy="random", seed=0):
    path = al_curves.Path(settings.out) / "runs" / f"{strategy}-seed{seed}.jsonl"
    return sorted(r["cycle"] for r in read_runs(path).records.values())


def test_interrupted_episode_resumes_at_its_cycle(settings, monkeypatch):
    calls = []
    real = agents.run_episode

    def counting(env, agent, **kw):
        calls.append(kw["options"].get("state") is not None)
        if len(calls) == 2 and not getattr(counting, "crashed", False):
            counting.crashed = True
            raise RuntimeError("killed in cycle 2")
        return real(env, agent, **kw)

    monkeypatch.setattr(agents, "run_episode", counting)
    with pytest.raises(RuntimeError, match="killed"):
        al_curves._evaluate(settings, "random", 0, "key", "")
    assert _cycles(settings) == [0, 1] and calls == [False, True]
    al_curves._evaluate(settings, "random", 0, "key", "")
    assert _cycles(settings) == [0, 1, 2] and calls == [False, True, True]  # cycle 1 was not run again
    assert "done" in al_curves._evaluate(settings, "random", 0, "key", "") and len(calls) == 3


def test_lines_lost_after_the_state_file_are_restored_without_running(settings, monkeypatch):
    al_curves._evaluate(settings, "coreset", 0, "key", "")
    path = al_curves.Path(settings.out) / "runs" / "coreset-seed0.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:1]) + lines[1][:10])  # the last lines lost, one cut mid-write
    monkeypatch.setattr(agents, "run_episode", lambda *a, **k: pytest.fail("a finished cycle ran again"))
    al_curves._evaluate(settings, "coreset", 0, "key", "")
    assert _cycles(settings, "coreset") == [0, 1, 2]


def test_aggregate_auc_and_paired_difference(settings):
    records = []
    for strategy, curve_by_seed in {"random": {0: [0.1, 0.2, 0.3], 1: [0.0, 0.2, 0.2]},
                                    "coreset": {0: [0.1, 0.3, 0.4], 1: [0.0, 0.2, 0.4]}}.items():
        for seed, maps in curve_by_seed.items():
            for c, m in enumerate(maps):
                records.append({"strategy": strategy, "seed": seed, "cycle": c, "labeled": 4 + 2 * c, "map": m,
                                "wall_s": 1.0})
    settings.seeds = (0, 1)
    config = type("Config", (), {"cycles": 2, "map_metric": "AP50"})()  # all aggregate reads of the preset
    summary = al_curves.aggregate(settings, config, records)
    # trapezoid over labeled images / range: (0.1 + 2*0.2 + 0.3) / 4 = 0.2 and (0 + 0.4 + 0.2) / 4 = 0.15
    assert summary["random"]["auc"] == pytest.approx(0.175)
    assert summary["coreset"]["auc"] == pytest.approx(np.mean([(0.1 + 0.6 + 0.4) / 4, (0.0 + 0.4 + 0.4) / 4]))
    assert summary["coreset"]["diff_to_random"] == pytest.approx(summary["coreset"]["auc"] - 0.175)
    assert summary["random"]["map_rises"] and summary["coreset"]["episode_s"] == 3.0
    out = al_curves.Path(settings.out)
    assert (out / "al_curves.png").stat().st_size > 0 and "diff_to_random" in (out / "auc.csv").read_text()
    assert json.loads((out / "summary.json").read_text())["coreset"]["seeds"] == [0, 1]
