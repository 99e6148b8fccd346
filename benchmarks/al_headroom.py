"""Headroom of DetSampleSelect presets: does the choice of images matter more than the noise of retraining?

    python -m benchmarks.al_headroom                                   # screen the candidate pools (3 seeds)
    python -m benchmarks.al_headroom --pools digits-pool --seeds 0,1,2,3,4 --best-of 3   # confirm, with best-of-K
    python -m benchmarks.al_headroom --pools test --seeds 0 --best-of 2 --noise-repeats 1   # a smoke run: seconds

A benchmark of selection strategies is only worth running where some selection beats random selection by more
than the noise of retraining one selection (Munjal et al., CVPR 2022). Per pool (a preset plus overrides) and
seed (initial set ``seed mod K``, the same first candidates for every unit), top to bottom:

1. ``random``: an episode of uniformly random scores (the env labels the top ``b``): its rewards, selections and
   final val ``map_metric`` (AP50 on the digits presets);
2. ``noise-r``: the same selections trained again with fresh training seeds (stream ``r``; the episode's
   ``state_dict`` with its ``cycle_seeds`` replaced): the retraining seed SD of that fixed selection;
3. ``oracle_balance``: the label-aware heuristic oracle (:class:`detgym.agents.al_oracle.BalanceOracle`:
   cover the (class, size) cells of the labeled set evenly, add the most objects), with the random episode's
   training seeds;
4. ``best_of_K`` (``--best-of K``, K >= 2): at every cycle K random selections of the same candidates, each
   trained for real (``state_dict`` / ``reset(options={"state": ...})``: the reward distribution over random
   selections of one cycle), the best continued; its selections are then trained again on the noise streams
   (``best_of_K-r``), so the luck of the winning training does not count (the winner's curse): its gain is the
   mean of ``best_of_K-r - noise-r`` (same training seeds).

Per pool it prints the episode's wall and CPU seconds (one torch thread: the CPU time is the episode's cost on an
idle core), and the headroom ratio, oracle minus random final mAP over the retraining seed SD,
``mean_s(oracle_s - random_s) / sqrt(mean_s var_s)`` with a 95% bootstrap interval over seeds (SciPy, seeds
resampled with their differences and noise variances), for each oracle, and per cycle the spread (SD) of the
reward over the K random selections against the SD of one selection's reward over training seeds.

Every unit is one JSON line in ``OUT/units.jsonl`` (keyed by pool configuration, seed and unit): an interrupted
run resumes, a finished unit is never run again. ``OUT/summary.json`` and ``OUT/headroom.md`` hold the table.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import scipy.stats
from tqdm.auto import tqdm

from benchmarks.al_curves import _append_line
from detgym.compare.store import read_runs
from detgym.data.io import atomic_write_json

#: The long tail of the screened pools: digit k has probability proportional to 0.6^k (digit 9: 0.4%).
LONG_TAIL = tuple(float(x) for x in 0.6 ** np.arange(10) / (0.6 ** np.arange(10)).sum())

#: A milder tail: digit k proportional to 0.8^k (digit 9: 3%).
MILD_TAIL = tuple(float(x) for x in 0.8 ** np.arange(10) / (0.8 ** np.arange(10)).sum())

_DIGITS_64 = {"train_size": 360, "val_size": 120, "test_size": 0, "min_digit_height": 16.0, "max_digit_height": 56.0,
              "max_digits": 3}

#: Candidate pools: name -> (preset, preset fields over it). ``v0`` is today's default (DetSampleSelect-v0).
POOLS: dict[str, tuple[str, dict[str, Any]]] = {
    "v0": ("digits", {}),
    "tail": ("digits", {"dataset_kwargs": {**_DIGITS_64, "class_frequencies": LONG_TAIL}}),
    "empty": ("digits", {"dataset_kwargs": {**_DIGITS_64, "empty_fraction": 0.5}}),
    "dups": ("digits", {"dataset_kwargs": {**_DIGITS_64, "duplicate_fraction": 0.6, "duplicate_cluster_size": 6}}),
    "mixed": ("digits", {"dataset_kwargs": {
        **_DIGITS_64, "class_frequencies": LONG_TAIL, "duplicate_fraction": 0.3, "duplicate_cluster_size": 5,
        "empty_fraction": 0.3, "hard_fraction": 0.2}}),
    # all four kinds of structure, milder: a tail to 0.8^9 (digit 9: 3%), 480 images so that enough stay distinct
    "pool-a": ("digits", {"dataset_kwargs": {
        **_DIGITS_64, "train_size": 480, "class_frequencies": MILD_TAIL, "duplicate_fraction": 0.3,
        "duplicate_cluster_size": 4, "empty_fraction": 0.4, "hard_fraction": 0.1}, "initial_sets": ()}),
    "pool-b": ("digits", {"dataset_kwargs": {
        **_DIGITS_64, "train_size": 480, "class_frequencies": MILD_TAIL, "duplicate_fraction": 0.3,
        "duplicate_cluster_size": 4, "empty_fraction": 0.4, "hard_fraction": 0.1}, "initial_sets": (),
        "candidates": 144}),
    "test": ("test", {}),
}


@dataclass
class Settings:
    pools: tuple[str, ...] = ("v0", "tail", "empty", "dups", "mixed")
    seeds: tuple[int, ...] = (0, 1, 2)
    #: K random selections per cycle for the best-of-K oracle (0: skip it; screening runs without)
    best_of: int = 0
    #: retrainings of the random selections (and of best-of-K's) with fresh training seeds
    noise_repeats: int = 2
    threads: int = 1
    out: str = "runs/al_headroom"


# ------------------------------------------------------------------------------------------------- units
def _make_env(pool: str) -> Any:
    from detgym.envs.sample_select.env import DetSampleSelectEnv

    preset, overrides = POOLS[pool] if pool in POOLS else (pool, {})
    return DetSampleSelectEnv(preset, **overrides)


def _start(env: Any, seed: int, stream: int | None) -> np.ndarray:
    """Reset to the seed's first cycle; ``stream``: with the training seeds of that noise stream instead."""
    obs, _ = env.reset(seed=seed, options={"initial_set": seed % len(env.initial_sets)})
    if stream is None:
        return obs
    state = env.state_dict()
    state["cycle_seeds"] = [int(s) for s in np.random.SeedSequence([seed, 1000 + stream]).generate_state(env.cycles)]
    obs, _ = env.reset(options={"state": state})
    return obs


def _play(env: Any, obs: np.ndarray, choose: Callable[[np.ndarray, int], np.ndarray]) -> dict[str, Any]:
    """Run the episode to its end with ``choose(obs, cycle) -> scores``; rewards, selections, final metrics."""
    start, cpu = time.perf_counter(), time.process_time()
    rewards, maps, actions, selected, done, info = [], [], [], [], False, {}
    while not done:
        scores = np.asarray(choose(obs, len(rewards)), dtype=np.float32)
        obs, reward, terminated, truncated, info = env.step(scores)
        rewards.append(float(reward)), maps.append(float(info["map"]))
        actions.append(scores.tolist()), selected.append(sorted(int(i) for i in info["selected"]))
        done = terminated or truncated
    return {"rewards": rewards, "maps": maps, "final": maps[-1], "final_metrics": info.get("final_metrics"),
            "actions": actions, "selected": selected, "wall_s": time.perf_counter() - start,
            "cpu_s": time.process_time() - cpu}


def _random_scores(seed: int) -> Callable[[np.ndarray, int], np.ndarray]:
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7]))
    return lambda obs, cycle: rng.uniform(-1.0, 1.0, obs.shape[0])


def _replay(actions: list[list[float]]) -> Callable[[np.ndarray, int], np.ndarray]:
    return lambda obs, cycle: np.asarray(actions[cycle])


def _oracle(env: Any) -> Callable[[np.ndarray, int], np.ndarray]:
    from detgym.agents.al_oracle import BalanceOracle

    agent = BalanceOracle(env)
    return lambda obs, cycle: agent.predict(obs, deterministic=True)[0]


def _best_of_k(env: Any, seed: int, k: int) -> dict[str, Any]:
    """Greedy best-of-K random selections, every trial trained for real; the per-cycle reward distribution."""
    start = time.perf_counter()
    rng = np.random.default_rng(np.random.SeedSequence([seed, 11]))
    obs = _start(env, seed, None)
    trials, actions, done = [], [], False
    while not done:
        snapshot = env.state_dict()
        tried = []
        for j in range(k):
            if j:
                env.reset(options={"state": snapshot})
            scores = rng.uniform(-1.0, 1.0, obs.shape[0]).astype(np.float32)
            next_obs, reward, terminated, truncated, info = env.step(scores)
            after = None if (terminated or truncated) else env.state_dict()
            tried.append((float(reward), scores, after, next_obs, terminated or truncated))
        best = int(np.argmax([t[0] for t in tried]))
        trials.append([t[0] for t in tried])
        actions.append(tried[best][1].tolist())
        obs, done = tried[best][3], tried[best][4]
        if not done:
            env.reset(options={"state": tried[best][2]})
    return {"trial_rewards": trials, "actions": actions, "wall_s": time.perf_counter() - start}


def _run_unit(env: Any, seed: int, unit: str, done: dict[str, dict[str, Any]], key: str) -> dict[str, Any]:
    """Run one unit (see the module docstring); ``done``: the finished units, keyed ``<key>/<unit>``."""
    name, _, stream = unit.partition("-")
    if unit == "random":
        return _play(env, _start(env, seed, None), _random_scores(seed))
    if unit == "oracle_balance":
        return _play(env, _start(env, seed, None), _oracle(env))
    if name == "noise":
        return _play(env, _start(env, seed, int(stream)), _replay(done[f"{key}/random"]["actions"]))
    if name.startswith("best_of_") and stream:
        return _play(env, _start(env, seed, int(stream)), _replay(done[f"{key}/{name}"]["actions"]))
    if name.startswith("best_of_"):
        return _best_of_k(env, seed, int(name[len("best_of_"):]))
    raise ValueError(f"unknown unit {unit!r}")


def _units(settings: Settings) -> list[str]:
    """Unit names in run order: a replay follows what it replays."""
    streams = range(1, settings.noise_repeats + 1)
    units = ["random", *(f"noise-{r}" for r in streams), "oracle_balance"]
    if settings.best_of >= 2:
        best = f"best_of_{settings.best_of}"
        units += [best, *(f"{best}-{r}" for r in streams)]
    return units


# --------------------------------------------------------------------------------------------- statistics
def _ratio(diffs: np.ndarray, variances: np.ndarray) -> tuple[float, float | None, float | None]:
    """``mean(diff) / sqrt(mean(var))`` with a 95% percentile bootstrap interval over seeds (pairs kept; ``None``
    with one seed)."""
    def stat(d: np.ndarray, v: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.mean(d, axis=axis) / np.sqrt(np.maximum(np.mean(v, axis=axis), 1e-12))

    value = float(stat(diffs, variances))
    if diffs.size < 2:
        return value, None, None
    res = scipy.stats.bootstrap((diffs, variances), stat, paired=True, vectorized=True, n_resamples=9999,
                                method="percentile", random_state=0)
    return value, float(res.confidence_interval.low), float(res.confidence_interval.high)


def summarise(pool: str, config_key: str, records: dict[str, dict[str, Any]], settings: Settings) -> dict[str, Any]:
    """The headroom row of one pool from its finished units (seeds with every unit done)."""
    rows = []
    for seed in settings.seeds:
        key = f"{config_key}/seed{seed}"
        get = {u: records.get(f"{key}/{u}") for u in _units(settings)}
        if any(v is None for v in get.values()):
            continue
        noise = [get["random"]["final"]] + [get[f"noise-{r}"]["final"] for r in range(1, settings.noise_repeats + 1)]
        row = {"seed": seed, "random": get["random"]["final"], "oracle_balance": get["oracle_balance"]["final"],
               "noise_var": float(np.var(noise, ddof=1)),
               "noise_finals": noise, "episode_s": get["random"]["wall_s"],
               "episode_cpu_s": [u["cpu_s"] for u in get.values() if "cpu_s" in u],
               "cycle_noise_sd": np.std([get["random"]["rewards"]] + [get[f"noise-{r}"]["rewards"]
                                        for r in range(1, settings.noise_repeats + 1)], axis=0, ddof=1).tolist()}
        if settings.best_of >= 2:
            name = f"best_of_{settings.best_of}"
            best = [get[f"{name}-{r}"]["final"] for r in range(1, settings.noise_repeats + 1)]
            trials = np.array(get[name]["trial_rewards"])
            row.update(best_of_k=float(np.mean(best)), best_minus_random=float(np.mean(np.subtract(best, noise[1:]))),
                       cycle_random_sd=trials.std(axis=1, ddof=1).tolist(),
                       cycle_best_gain=(trials.max(axis=1) - trials.mean(axis=1)).tolist())
        rows.append(row)
    out: dict[str, Any] = {"pool": pool, "config_key": config_key, "seeds": [r["seed"] for r in rows], "rows": rows}
    if not rows:
        return out
    var = np.array([r["noise_var"] for r in rows])
    out["noise_sd"] = float(np.sqrt(np.mean(var)))
    out["random_final"] = float(np.mean([r["random"] for r in rows]))
    out["episode_s"] = float(np.median([r["episode_s"] for r in rows]))
    cpu = [c for r in rows for c in r["episode_cpu_s"]]  # every whole episode (best-of-K's search excepted)
    out["episode_cpu_s"] = float(np.median(cpu)) if cpu else None
    diff = np.array([r["oracle_balance"] - r["random"] for r in rows])
    out["oracle_balance_final"] = float(np.mean([r["oracle_balance"] for r in rows]))
    out["oracle_balance_gain"] = float(diff.mean())
    out["oracle_balance_ratio"] = _ratio(diff, var)
    if settings.best_of >= 2:
        diff = np.array([r["best_minus_random"] for r in rows])
        out["best_of_k_final"] = float(np.mean([r["best_of_k"] for r in rows]))
        out["best_of_k_gain"] = float(diff.mean())
        out["best_of_k_ratio"] = _ratio(diff, var)
        out["cycle_random_sd"] = np.mean([r["cycle_random_sd"] for r in rows], axis=0).tolist()
        out["cycle_best_gain"] = np.mean([r["cycle_best_gain"] for r in rows], axis=0).tolist()
    out["cycle_noise_sd"] = np.sqrt(np.mean(np.square([r["cycle_noise_sd"] for r in rows]), axis=0)).tolist()
    return out


def _fmt_ratio(r: tuple[float, float | None, float | None] | None) -> str:
    if r is None:
        return ""
    return f"{r[0]:.2f}" if r[1] is None else f"{r[0]:.2f} [{r[1]:.2f}, {r[2]:.2f}]"


def table(summaries: list[dict[str, Any]]) -> str:
    """Markdown table, one row per pool."""
    lines = ["| pool | seeds | random final | noise SD | oracle_balance final | ratio [95% CI] | best-of-K gain | "
             "ratio [95% CI] | episode wall s | episode CPU s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for s in summaries:
        if "noise_sd" not in s:
            lines.append(f"| {s['pool']} | 0 | | | | | | | | |")
            continue
        best = f"{s['best_of_k_gain']:+.4f}" if "best_of_k_gain" in s else ""
        lines.append(f"| {s['pool']} | {len(s['seeds'])} | {s['random_final']:.4f} | {s['noise_sd']:.4f} | "
                     f"{s['oracle_balance_final']:.4f} | {_fmt_ratio(s['oracle_balance_ratio'])} | {best} | "
                     f"{_fmt_ratio(s.get('best_of_k_ratio'))} | {s['episode_s']:.0f} | "
                     f"{'' if s['episode_cpu_s'] is None else round(s['episode_cpu_s'])} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    import torch

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = Settings()
    p.add_argument("--pools", default=",".join(d.pools), help=f"comma-separated: {', '.join(POOLS)} or preset names")
    p.add_argument("--seeds", default=",".join(map(str, d.seeds)))
    p.add_argument("--best-of", type=int, default=d.best_of)
    p.add_argument("--noise-repeats", type=int, default=d.noise_repeats)
    p.add_argument("--threads", type=int, default=d.threads)
    p.add_argument("--out", default=d.out)
    a = p.parse_args(argv)
    settings = Settings(tuple(a.pools.split(",")), tuple(int(s) for s in a.seeds.split(",")), a.best_of,
                        a.noise_repeats, a.threads, a.out)
    if settings.best_of == 1 or settings.best_of < 0 or settings.noise_repeats < 1:
        raise ValueError("--best-of must be 0 (skip) or >= 2, --noise-repeats >= 1")
    torch.set_num_threads(settings.threads)
    out = Path(settings.out)
    units_file = out / "units.jsonl"
    print(json.dumps(asdict(settings)))
    summaries = []
    for pool in settings.pools:
        env = _make_env(pool)
        config_key = env.config.config_key()
        records = read_runs(units_file).records
        # every seed's unit before the next unit (a replay after what it replays): the cheap oracle's ratio first
        todo = [(s, u) for u in _units(settings) for s in settings.seeds
                if f"{config_key}/seed{s}/{u}" not in records]
        for seed, unit in tqdm(todo, desc=f"headroom {pool}", unit="episode"):
            result = _run_unit(env, seed, unit, records, f"{config_key}/seed{seed}")
            line = {"key": f"{config_key}/seed{seed}/{unit}", "pool": pool, "seed": seed, "unit": unit, **result}
            _append_line(units_file, line)
            records[line["key"]] = line
        env.close()
        summary = summarise(pool, config_key, records, settings)
        summaries.append(summary)
        print(table([summary]).splitlines()[-1], flush=True)
    atomic_write_json(out / "summary.json", {"settings": asdict(settings), "pools": summaries})
    text = table(summaries)
    (out / "headroom.md").write_text(text + "\n")
    print(text)
    for s in summaries:
        if "cycle_random_sd" in s:
            print(f"{s['pool']}: per cycle, SD of the reward over {settings.best_of} random selections "
                  f"{np.round(s['cycle_random_sd'], 4).tolist()}, best minus their mean "
                  f"{np.round(s['cycle_best_gain'], 4).tolist()}, SD over training seeds "
                  f"{np.round(s['cycle_noise_sd'], 4).tolist()}")
    return summaries


if __name__ == "__main__":
    main()
