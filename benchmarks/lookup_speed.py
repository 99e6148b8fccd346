"""MGRAL's look-up table (papers 002/003, III-F, Table I: 4800 -> 3 min, 1600x) against the real retraining it
replaces, measured in one run, and the table's estimation error on held-out selections.

    python -m benchmarks.lookup_speed                          # DetSampleSelect-v1's preset (extends its table)
    python -m benchmarks.lookup_speed --preset digits          # DetSampleSelect-v0's
    python -m benchmarks.lookup_speed --preset test-pool --build-episodes 4 --heldout-episodes 2   # seconds

Top to bottom:

1. the table: ``build_episodes`` random-selection episodes of ``detgym build-table`` (resumable; the preset's
   default table file, so an AL-curve run's table is reused and extended);
2. held-out selections: ``heldout_episodes`` more random episodes from another seed stream, with real training;
   each cycle's env step is timed (fine-tune or retrain, val evaluation, next candidates: what a look-up step
   replaces) and its feature summary and measured mAP are kept (``OUT/heldout-<key>.jsonl``, one line per
   episode: resumable);
3. the look-up reward: build episodes replayed (same seeds and selections) in a ``reward_mode="lookup"`` env, whose
   every step the table answers; each step is timed the same way (the look-up estimate, reward and next
   observation). Speedup = median real step / median look-up step, both from this run;
4. the error: for every held-out selection, the table's estimate (the ``neighbours`` nearest records of its
   initial set and cycle, inverse-distance weighted, also where the env would refuse and train for real) against
   the measured mAP: MAE, and Spearman's rank correlation *within* (initial set, cycle), i.e. after removing each
   group's mean from both (the question an agent needs answered: which of two selections of the same size is
   better); the correlation across cycles is printed too (inflated by mAP growing with the labeled set), with
   the share of held-out selections the table would have answered. The records keep their selections, so the same
   measured selections are also keyed on every other ``table_summary`` (the mean reference embedding Φ_k of
   MGRAL, the labeled set's objects per class, its object / image / class-entropy counts) and estimated with every
   ``lookup_estimator`` (the paper's neighbours, a ridge fit to the cycle's records), their errors printed side
   by side: which key and estimate rank, also against the mean of the two measurements of step 5.
5. the ceiling: the held-out episodes run again with the same selections and fresh training seeds (the episode's
   ``state_dict`` with its ``cycle_seeds`` replaced, as ``benchmarks.al_headroom``'s noise streams;
   ``OUT/retest-<key>.jsonl``), and the within-cycle Spearman of those two real measurements: how well one real
   retraining ranks the selections of a cycle, the most any estimate checked against one can show
   (``--retest-episodes 0`` skips it).

The last line reads ``lookup speedup: <ratio>x, MAE <value>, spearman <value>``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import scipy.stats

from benchmarks.al_curves import _append_line
from detgym.compare.store import read_runs
from detgym.data.io import atomic_write_json


@dataclass
class Settings:
    preset: str = "digits-pool"
    #: preset fields changed for this run (3 cycles: the table's per-step cost and error are per cycle anyway)
    overrides: dict[str, Any] = field(default_factory=lambda: {"cycles": 3})
    #: run every episode from this one published initial set (``-1``: spread over all), so that every record of
    #: a cycle lands in the same (initial set, cycle) group: ``build_episodes`` records per group
    initial_set: int = 0
    build_episodes: int = 12
    heldout_episodes: int = 8
    #: seed stream of the held-out episodes (the table's build episodes use stream 0)
    heldout_seed: int = 1
    #: held-out episodes trained again with fresh training seeds (step 5: the test-retest ceiling)
    retest_episodes: int = 8
    #: build episodes replayed in the look-up env for the timing
    replay_episodes: int = 3
    threads: int = 1
    out: str = "runs/lookup_speed"


def _random_episode(env: Any, seed: int, initial_set: int, retest: bool = False) -> list[dict[str, Any]]:
    """One build-style episode (uniform random scores from ``seed``) with every step timed; ``retest``: the same
    episode (same candidates and selections) trained with fresh training seeds."""
    from detgym.envs.sample_select.build import RandomScores
    from detgym.rollout import run_episode

    options: dict[str, Any] = {"initial_set": initial_set}
    if retest:
        env.reset(seed=seed, options=options)
        state = env.state_dict()
        state["cycle_seeds"] = [int(x) for x in np.random.SeedSequence([seed, 1001]).generate_state(env.cycles)]
        options = {"state": state}
    rows: list[dict[str, Any]] = []
    run_episode(env, RandomScores(env.n_rows, seed), seed=None if retest else seed, options=options,
                callback=lambda step: rows.append({
                    "cycle": step.info["cycle"], "seconds": step.wall_s, "map": step.info["map"],
                    "source": step.info.get("reward_source"), "summary": env.selection_summary().tolist(),
                    "added": np.setdiff1d(env.labeled_indices, env.initial_sets[initial_set]).tolist()}))
    return rows


def _fmt(value: float | None) -> str:
    return "nan" if value is None else f"{value:.3f}"


def _centred(values: Sequence[float], groups: list[tuple[int, int]]) -> np.ndarray:
    """``values`` minus the mean of their (initial set, cycle) group: what a within-cycle ranking compares."""
    out = np.array(values, dtype=np.float64)
    for g in set(groups):
        idx = [i for i, x in enumerate(groups) if x == g]
        out[idx] -= out[idx].mean()
    return out


def _spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    """Spearman's rho, None where undefined (a constant column): JSON has no NaN."""
    rho = float(scipy.stats.spearmanr(x, y).statistic)
    return None if np.isnan(rho) else rho


def _errors(table: Any, heldout: list[tuple[int, dict[str, Any]]], neighbours: int,
            estimator: str = "neighbours") -> dict[str, Any]:
    """The table's estimates of the held-out selections against their measured mAP: MAE, Spearman within each
    (initial set, cycle) after removing its means, Spearman across cycles, and how many the table would answer."""
    est, measured, groups, answered = [], [], [], 0
    for k, c in heldout:
        summary = np.asarray(c["summary"])
        est.append(table.estimate(k, c["cycle"], summary, neighbours, refuse=False, estimator=estimator).value)
        answered += table.estimate(k, c["cycle"], summary, neighbours, estimator=estimator).value is not None
        measured.append(c["map"]), groups.append((k, c["cycle"]))
    est, measured = np.array(est, dtype=np.float64), np.array(measured)
    centred_measured = _centred(measured, groups)
    return {"mae": float(np.abs(est - measured).mean()),
            "spearman_within_cycle": _spearman(_centred(est, groups), centred_measured),
            "spearman_across_cycles": _spearman(est, measured),
            "answered_by_table": answered, "measured_map_mean": float(measured.mean()),
            "measured_map_std_within_cycle": float(centred_measured.std())}


def _errors_by_key(real: Any, table: Any, heldout: list[tuple[int, dict[str, Any]]],
                   mean_rows: list[tuple[int, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """:func:`_errors` of every (key, estimator), ``"<key> <estimator>"`` -> errors, the preset's first; the same
    measured selections keyed again where the records keep their selections. With ``mean_rows`` (the retested
    selections, measured twice) each also holds its within-cycle Spearman against the mean of the two."""
    from detgym.envs.sample_select.lookup import ESTIMATORS
    from detgym.envs.sample_select.presets import TABLE_SUMMARIES

    own = real.config.table_summary
    kinds = [own]
    if all("added" in c for _, c in heldout) and all(sel.size for sel in table.selections):
        kinds += [kind for kind in TABLE_SUMMARIES if kind != own]
    estimators = [real.config.lookup_estimator] + [e for e in ESTIMATORS if e != real.config.lookup_estimator]
    out: dict[str, dict[str, Any]] = {}
    for kind in kinds:
        keyed, rows, means = table, heldout, mean_rows
        if kind != own:
            keyed = table.rekeyed([real.summary_of(k, sel, kind) for k, sel in zip(table.set_ids, table.selections)])
            rows, means = ([(k, {**c, "summary": real.summary_of(k, np.asarray(c["added"]), kind)}) for k, c in r]
                           for r in (heldout, mean_rows))
        for estimator in estimators:
            e = _errors(keyed, rows, real.config.lookup_neighbours, estimator)
            if means:  # against the mean of two real retrainings: half the measurement noise of one
                e["spearman_within_cycle_vs_mean_of_two"] = _errors(
                    keyed, means, real.config.lookup_neighbours, estimator)["spearman_within_cycle"]
            out[f"{kind} {estimator}"] = e
    return out


def _episodes(real: Any, key: str, path: Path, settings: Settings, n: int, n_sets: int,
              retest: bool = False) -> dict[str, Any]:
    """The first ``n`` held-out episodes (``retest``: again, with fresh training seeds) as records of ``path``, the
    missing ones run and appended one at a time (an interrupted run resumes)."""
    from detgym.envs.sample_select.build import build_episode_seed

    done = read_runs(path).records
    for j in range(n):
        if f"{key}/{j}" not in done:
            rows = _random_episode(real, build_episode_seed(settings.heldout_seed, j), j % n_sets, retest)
            _append_line(path, {"key": f"{key}/{j}", "initial_set": j % n_sets, "cycles": rows})
            done = read_runs(path).records
    return done


def _retest(real: Any, key: str, path: Path, settings: Settings, heldout: dict[str, Any],
            n_sets: int) -> tuple[dict[str, Any], list[tuple[int, dict[str, Any]]]] | None:
    """Step 5: the first ``retest_episodes`` held-out episodes again with fresh training seeds (resumable): the
    within-cycle Spearman and retraining SD of the two measurements of each selection, and the retested selections
    with their mean of the two measurements (what the table's estimate is also checked against)."""
    n = min(settings.retest_episodes, settings.heldout_episodes)
    if n < 1:
        return None
    done = _episodes(real, key, path, settings, n, n_sets, retest=True)
    first, second, groups, mean_rows = [], [], [], []
    for j in range(n):
        a, b = heldout[f"{key}/{j}"], done[f"{key}/{j}"]
        for ca, cb in zip(a["cycles"], b["cycles"]):
            if ca["added"] != cb["added"]:
                raise RuntimeError(f"retest episode {j} cycle {ca['cycle']} selected other images than the held-out "
                                   "episode: the env's state does not reproduce its candidates")
            first.append(ca["map"]), second.append(cb["map"]), groups.append((a["initial_set"], ca["cycle"]))
            mean_rows.append((a["initial_set"], {**ca, "map": (ca["map"] + cb["map"]) / 2}))
    sd = float(np.std(np.subtract(first, second), ddof=1) / np.sqrt(2))
    return {"selections": len(groups), "spearman_within_cycle": _spearman(_centred(first, groups),
                                                                          _centred(second, groups)),
            "retraining_sd": sd}, mean_rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import torch

    from detgym.envs.sample_select import build_table
    from detgym.envs.sample_select.build import build_episode_seed
    from detgym.envs.sample_select.env import DetSampleSelectEnv

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = Settings()
    p.add_argument("--preset", default=defaults.preset)
    p.add_argument("--overrides", type=json.loads, default=defaults.overrides, help="preset fields as JSON")
    for name in ("initial_set", "build_episodes", "heldout_episodes", "heldout_seed", "retest_episodes",
                 "replay_episodes", "threads"):
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name))
    p.add_argument("--out", default=defaults.out)
    settings = Settings(**vars(p.parse_args(argv)))
    torch.set_num_threads(settings.threads)
    load_start = os.getloadavg()[0]
    overrides = dict(settings.overrides)
    if settings.initial_set >= 0:
        from detgym.envs.sample_select import PRESETS

        published = PRESETS.get_preset(settings.preset).merged(**overrides).initial_sets
        if not published:
            raise ValueError("--initial-set needs a preset with published initial_sets; use --initial-set -1")
        overrides["initial_sets"] = (tuple(published[settings.initial_set]),)

    # 1. the table
    real = DetSampleSelectEnv(settings.preset, **{**overrides, "reward_mode": "real"})
    key = real.config.table_key()
    out = Path(settings.out)
    atomic_write_json(out / f"settings-{key}.json", {**asdict(settings), "config": real.config.to_dict()})
    table = build_table(settings.preset, episodes=settings.build_episodes, **overrides)
    n_sets = len(real.initial_sets)

    # 2. held-out selections, real training timed
    done = _episodes(real, key, out / f"heldout-{key}.jsonl", settings, settings.heldout_episodes, n_sets)
    heldout = [(r["initial_set"], c) for j in range(settings.heldout_episodes) for r in [done[f"{key}/{j}"]]
               for c in r["cycles"]]
    retested = _retest(real, key, out / f"retest-{key}.jsonl", settings, done, n_sets)
    retest, mean_rows = retested if retested else (None, [])

    # 3. look-up steps: build episodes replayed on a copy of the table (a refusal must not change the real one)
    copy = out / f"table-copy-{key}.npz"
    shutil.copyfile(table.path, copy)
    lookup = DetSampleSelectEnv(settings.preset, **{**overrides, "reward_mode": "lookup", "table_path": str(copy)})
    replayed = [c for j in range(min(settings.replay_episodes, settings.build_episodes))
                for c in _random_episode(lookup, build_episode_seed(0, j), j % n_sets)]
    lookup.close()
    answered = [c["seconds"] for c in replayed if c["source"] == "estimated"]
    if not answered:
        raise ValueError(f"the table answered none of the {len(replayed)} replayed steps (too few records per initial "
                         "set and cycle to set its threshold): raise --build-episodes")
    t_lookup = np.median(answered)
    t_real = np.median([c["seconds"] for _, c in heldout])

    # 4. the estimate's error on held-out selections, for the preset's key and estimator and, on the same measured
    #    selections, every other key and estimator (the table's records keep their selections)
    errors = _errors_by_key(real, table, heldout, mean_rows)
    own = f"{real.config.table_summary} {real.config.lookup_estimator}"
    real.close()
    mine = errors[own]
    mae, rho_within, rho_all = mine["mae"], mine["spearman_within_cycle"], mine["spearman_across_cycles"]
    speedup = float(t_real / t_lookup)
    result = {
        "real_step_s": float(t_real), "lookup_step_s": float(t_lookup), "speedup": speedup,
        "table_summary": real.config.table_summary, "lookup_estimator": real.config.lookup_estimator, **mine,
        "by_key": errors,
        "heldout_selections": len(heldout),
        "estimated_replay_steps": sum(c["source"] == "estimated" for c in replayed), "replay_steps": len(replayed),
        "table_records": len(table), "records_per_set_cycle": sorted(set(table.counts().values())),
        "retest": retest, "load_average": [load_start, os.getloadavg()[0]], "settings": asdict(settings),
    }
    atomic_write_json(out / f"result-{key}.json", result)
    print(f"table {len(table)} records ({result['records_per_set_cycle']} per initial set and cycle); "
          f"{len(heldout)} held-out selections, {mine['answered_by_table']} within the table's threshold")
    print(f"real step (train + evaluate + next candidates) {t_real:.2f} s, look-up step {t_lookup * 1e3:.3f} ms "
          f"(median of {len(heldout)} and {result['estimated_replay_steps']}); load average {load_start:.1f}")
    print(f"held-out mAP {mine['measured_map_mean']:.4f} (std within a cycle "
          f"{mine['measured_map_std_within_cycle']:.4f}); spearman across cycles {_fmt(rho_all)}")
    for name, e in errors.items():
        kind, estimator = name.split()
        mark = " (the preset's)" if name == own else ""
        against_two = (f", against the mean of two retrainings {_fmt(e['spearman_within_cycle_vs_mean_of_two'])}"
                       if "spearman_within_cycle_vs_mean_of_two" in e else "")
        print(f"table keyed on {kind!r}, {estimator} estimate: MAE {e['mae']:.4f}, spearman within a cycle "
              f"{_fmt(e['spearman_within_cycle'])}{against_two}{mark}")
    if retest:
        print(f"ceiling: {retest['selections']} held-out selections trained again with fresh seeds: spearman within "
              f"a cycle {_fmt(retest['spearman_within_cycle'])} between the two real measurements, retraining SD "
              f"{retest['retraining_sd']:.4f} (std of the selections within a cycle "
              f"{mine['measured_map_std_within_cycle']:.4f})")
    print(f"lookup speedup: {speedup:.0f}x, MAE {mae:.4f}, spearman {_fmt(rho_within)}")
    return result


if __name__ == "__main__":
    main()
