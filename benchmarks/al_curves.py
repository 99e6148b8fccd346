"""Active-learning curves on DetSampleSelect-v0 (papers 002/003, Fig. 3): val mAP against the number of labeled
images, for every strategy over several seeds, with 95% bands, the area under each curve with bootstrap intervals
and its paired difference to random sampling.

    python -m benchmarks.al_curves --quick                 # random, entropy_mean, coreset, mgral x seeds 0 1 2
    python -m benchmarks.al_curves                         # + entropy_sum, score_uncertainty
    python -m benchmarks.al_curves --preset test --quick   # a smoke run: seconds

Top to bottom:

1. the settings (every knob is in :class:`Settings`, saved to ``OUT/settings.json``);
2. the initial detectors of the seeds' initial sets (seed ``s`` starts from initial set ``s mod K``, the same set
   for every strategy: runs are paired by seed), trained once and cached beside the data;
3. MGRAL: ``detgym build-table`` episodes, then REINFORCE against the look-up env (``reward_mode="lookup"``, the
   paper's setting), once (``mgral_seed``); its weights go to ``OUT/mgral.pt``;
4. every (strategy, seed) episode of the real env, cycle by cycle: after each cycle the env's state goes to
   ``OUT/state/`` and the cycle's record to ``OUT/runs/<strategy>-seed<s>.jsonl``, so an interrupted run resumes at
   the cycle it stopped in and a finished (strategy, seed, cycle) is never run twice; the jobs run in ``workers``
   processes of ``threads`` torch threads each;
5. the aggregate: per strategy and labeled-set size the mean mAP with a 95% bootstrap interval over seeds; per
   seed the normalised area under the curve (trapezoid over labeled images / their range = the mean mAP over the
   budget), its mean with a 95% bootstrap interval, and the paired difference to random (same seeds)
   (:mod:`detgym.compare.stats`, SciPy's bootstrap); ``curves.csv``, ``auc.csv``, ``al_curves.png``,
   ``summary.json``. It also prints whether every strategy's mAP rises over the cycles, and the episode times.

Records carry the env's ``config_key``: results of another configuration are never mixed in.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from detgym.compare.stats import interval_estimate, mean_of_task_means, paired_difference
from detgym.compare.store import read_runs
from detgym.data.io import atomic_savefig, atomic_write_csv, atomic_write_json

ALL_STRATEGIES = ("random", "entropy_mean", "entropy_sum", "score_uncertainty", "coreset", "mgral")
QUICK_STRATEGIES = ("random", "entropy_mean", "coreset", "mgral")


@dataclass
class Settings:
    preset: str = "default"
    strategies: tuple[str, ...] = ALL_STRATEGIES
    seeds: tuple[int, ...] = (0, 1, 2)
    #: preset fields changed for this run (JSON on the command line)
    overrides: dict[str, Any] = field(default_factory=dict)
    workers: int = 2
    threads: int = 1
    #: MGRAL: build-table episodes (records per cycle) before it learns, and its REINFORCE steps (one per cycle);
    #: --quick: 3 and 10 (a mechanism check: the table then has one record per initial set and cycle, so MGRAL's
    #: rewards are measured, and 10 steps barely move its policy)
    table_episodes: int = 12
    mgral_steps: int = 50
    mgral_seed: int = 0
    out: str = "runs/al_curves"


# ------------------------------------------------------------------------------------------- workers
def _env(settings: Settings, **extra: Any) -> Any:
    import torch

    from detgym.envs.sample_select.env import DetSampleSelectEnv

    torch.set_num_threads(settings.threads)
    return DetSampleSelectEnv(settings.preset, **{**settings.overrides, **extra})


def _prepare_initial(settings: Settings, initial_set: int) -> str:
    """Train (or load) the initial detector of one initial set, so that evaluation jobs find it on disk."""
    env = _env(settings)
    env.reset(seed=0, options={"initial_set": initial_set})
    env.close()
    return f"initial set {initial_set}"


def _train_mgral(settings: Settings, path: str) -> str:
    """Build the look-up table, train MGRAL on the look-up env, save its weights."""
    import torch

    from detgym.agents.mgral import MGRALAgent
    from detgym.envs.sample_select import build_table
    from detgym.train import atomic_torch_save

    torch.set_num_threads(settings.threads)
    start = time.perf_counter()
    table = build_table(settings.preset, episodes=settings.table_episodes, progress=False, **settings.overrides)
    built = time.perf_counter() - start
    env = _env(settings, reward_mode="lookup")
    agent = MGRALAgent(env, seed=settings.mgral_seed).learn(settings.mgral_steps)
    sources = [h["reward_source"] for h in agent.history]
    summary = {"table_records": len(table), "table_s": built, "learn_s": time.perf_counter() - start - built,
               "steps": len(sources), "estimated": sources.count("estimated"),
               "records_after": len(env.table) if env.table is not None else 0}
    atomic_torch_save({"model": agent.policy.state_dict(), "summary": summary}, path)
    env.close()
    return (f"mgral: table {summary['table_records']} records ({built:.0f} s), {summary['steps']} REINFORCE steps "
            f"({summary['estimated']} estimated by the table), {summary['learn_s']:.0f} s")


def _agent(settings: Settings, strategy: str, env: Any, seed: int, cycle: int, mgral_path: str) -> Any:
    from detgym.agents import make_agent

    if strategy == "mgral":
        from detgym.agents.mgral import MGRALAgent
        from detgym.train import load_plain

        agent = MGRALAgent(env, seed=seed)
        agent.policy.load_state_dict(load_plain(mgral_path)["model"])
        return agent
    # a stochastic agent draws from its own stream per cycle, so a resumed episode continues identically
    return make_agent(strategy, env=env, seed=int(np.random.SeedSequence([seed, cycle]).generate_state(1)[0]))


def _append_line(path: Path, record: dict[str, Any]) -> None:
    """One JSON line, one write, then fsync (one writer per file: the job that owns it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        if os.fstat(fd).st_size and not path.read_bytes().endswith(b"\n"):
            os.write(fd, b"\n")  # a line cut by a crash stays on its own (read_runs skips it)
        os.write(fd, json.dumps(record, separators=(",", ":")).encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)


def _evaluate(settings: Settings, strategy: str, seed: int, config_key: str, mgral_path: str) -> str:
    """Run (or finish) the episode of ``strategy`` on ``seed``, one cycle at a time (see the module docstring)."""
    from detgym.agents import run_episode
    from detgym.train import atomic_torch_save, load_plain

    out = Path(settings.out)
    runs_file = out / "runs" / f"{strategy}-seed{seed}.jsonl"
    state_file = out / "state" / f"{strategy}-seed{seed}.pt"
    done = set(read_runs(runs_file).records)
    snapshot = load_plain(state_file) if state_file.exists() else None
    if snapshot is not None:
        for record in snapshot["records"]:  # lines lost between the state file and the runs file
            if record["key"] not in done:
                _append_line(runs_file, record)
        if snapshot["finished"]:
            return f"{strategy} seed {seed}: done"
    records = [] if snapshot is None else list(snapshot["records"])
    env = _env(settings)
    state = None if snapshot is None else snapshot["env"]
    k = seed % len(env.initial_sets)
    finished = False
    while not finished:
        agent = _agent(settings, strategy, env, seed, len(records), mgral_path)
        options = {"initial_set": k} if state is None else {"state": state}
        episode = run_episode(env, agent, seed=seed, options=options, max_steps=1)
        info = episode.last_info
        new = []
        base = {"strategy": strategy, "seed": seed, "initial_set": k, "config_key": config_key}
        if state is None:  # the initial detector: the curve's first point
            new.append({**base, "cycle": 0, "labeled": env.config.initial_size,
                        "map": info["map"] - episode.rewards[0], "wall_s": 0.0})
        new.append({**base, "cycle": info["cycle"], "labeled": info["labeled"], "map": info["map"],
                    "reward": episode.rewards[0], "wall_s": episode.wall_s, "selected": info["selected"]})
        for record in new:
            record["key"] = f"{config_key}/{strategy}/{seed}/{record['cycle']}"
        records += new
        finished = episode.terminated
        state = None if finished else env.state_dict()
        atomic_torch_save({"env": state, "records": records, "finished": finished}, state_file)
        for record in new:
            _append_line(runs_file, record)
    env.close()
    return f"{strategy} seed {seed}: {len(records) - 1} cycles"


# ------------------------------------------------------------------------------------------- aggregate
@dataclass
class Curve:
    """One strategy's complete runs: ``maps[i]`` is seed ``seeds[i]``'s mAP after each cycle (cycle 0 first)."""

    seeds: list[int]
    labeled: np.ndarray
    maps: np.ndarray
    episode_s: np.ndarray


def _curves(records: list[dict[str, Any]], strategies: tuple[str, ...], seeds: tuple[int, ...],
            cycles: int) -> dict[str, Curve]:
    out = {}
    for strategy in strategies:
        done, rows, walls, labeled = [], [], [], None
        for seed in seeds:
            mine = sorted((r for r in records if r["strategy"] == strategy and r["seed"] == seed),
                          key=lambda r: r["cycle"])
            if [r["cycle"] for r in mine] != list(range(cycles + 1)):
                continue  # not finished (yet)
            done.append(seed)
            rows.append([r["map"] for r in mine])
            walls.append(sum(r["wall_s"] for r in mine))
            labeled = [r["labeled"] for r in mine]
        if done:
            out[strategy] = Curve(done, np.array(labeled, dtype=np.float64), np.array(rows), np.array(walls))
    return out


def _auc(labeled: np.ndarray, maps: np.ndarray) -> np.ndarray:
    """Area under each row's curve over labeled images, divided by the range: the mean mAP over the budget."""
    return np.trapezoid(maps, labeled, axis=-1) / (labeled[-1] - labeled[0])


def _plot(curves: dict[str, Curve], path: Path, metric: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for strategy, curve in curves.items():
        bands = [interval_estimate([col], mean_of_task_means) for col in curve.maps.T]
        ax.plot(curve.labeled, curve.maps.mean(0), marker="o", label=f"{strategy} (n={len(curve.seeds)})")
        ax.fill_between(curve.labeled, [b.low for b in bands], [b.high for b in bands], alpha=0.15)
    ax.set_xlabel("labeled images")
    ax.set_ylabel(f"val {metric}")
    ax.set_title("DetSampleSelect-v0: active-learning curves (mean, 95% bootstrap band over seeds)", fontsize=10)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_savefig(fig, path)


def aggregate(settings: Settings, config: Any, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Curves, AUCs, paired differences to random; writes the CSVs, the PNG and summary.json; returns the summary."""
    out = Path(settings.out)
    curves = _curves(records, settings.strategies, settings.seeds, config.cycles)
    random_auc = {}
    if "random" in curves:
        random_auc = dict(zip(curves["random"].seeds, _auc(curves["random"].labeled, curves["random"].maps)))
    curve_rows, auc_rows, summary = [], [], {}
    for strategy, curve in curves.items():
        for c, x in enumerate(curve.labeled):
            band = interval_estimate([curve.maps[:, c]], mean_of_task_means)
            curve_rows.append({"strategy": strategy, "cycle": c, "labeled": int(x), "map_mean": band.value,
                               "ci_low": band.low, "ci_high": band.high, "n_seeds": band.n})
        aucs = dict(zip(curve.seeds, _auc(curve.labeled, curve.maps)))
        auc = interval_estimate([list(aucs.values())], mean_of_task_means)
        paired = [s for s in curve.seeds if s in random_auc]
        diff = (paired_difference([aucs[s] for s in paired], [random_auc[s] for s in paired])
                if strategy != "random" and paired else None)
        # rises: every seed ends above where it started, and the mean curve goes up at every cycle
        rises = bool(np.all(curve.maps[:, -1] > curve.maps[:, 0]) and np.all(np.diff(curve.maps.mean(0)) > 0))
        row = {"strategy": strategy, "auc": auc.value, "auc_low": auc.low, "auc_high": auc.high, "n_seeds": auc.n,
               "diff_to_random": None if diff is None else diff.value,
               "diff_low": None if diff is None else diff.low, "diff_high": None if diff is None else diff.high,
               "initial_map": float(curve.maps[:, 0].mean()), "final_map": float(curve.maps[:, -1].mean()),
               "map_rises": rises, "episode_s": float(curve.episode_s.mean())}
        auc_rows.append(row)
        summary[strategy] = {**row, "seeds": curve.seeds, "labeled": curve.labeled.tolist(),
                             "curve": curve.maps.mean(0).tolist()}
    if curve_rows:
        atomic_write_csv(out / "curves.csv", curve_rows)
        atomic_write_csv(out / "auc.csv", auc_rows)
        _plot(curves, out / "al_curves.png", config.map_metric)
    atomic_write_json(out / "summary.json", summary)
    return summary


def _print(summary: dict[str, Any], metric: str) -> None:
    print(f"\n{'strategy':<18} {'AUC of ' + metric + ' (95% CI)':<26} {'vs random (95% CI)':<28} "
          f"{'initial':>8} {'final':>8} {'rises':>6} {'episode s':>10}")
    for strategy, s in summary.items():
        diff = ("-" if s["diff_to_random"] is None else
                f"{s['diff_to_random']:+.4f} [{s['diff_low']:+.4f}, {s['diff_high']:+.4f}]")
        print(f"{strategy:<18} {s['auc']:.4f} [{s['auc_low']:.4f}, {s['auc_high']:.4f}]   {diff:<28} "
              f"{s['initial_map']:>8.4f} {s['final_map']:>8.4f} {str(s['map_rises']):>6} {s['episode_s']:>10.1f}")


# ------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> Settings:
    defaults = Settings()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default=defaults.preset)
    p.add_argument("--quick", action="store_true", help=f"strategies {', '.join(QUICK_STRATEGIES)} only")
    p.add_argument("--strategies", nargs="+", default=None, help=f"any of {', '.join(ALL_STRATEGIES)}")
    p.add_argument("--seeds", nargs="+", type=int, default=list(defaults.seeds))
    p.add_argument("--overrides", type=json.loads, default={}, help='preset fields as JSON, e.g. \'{"cycles": 3}\'')
    p.add_argument("--workers", type=int, default=defaults.workers)
    p.add_argument("--threads", type=int, default=defaults.threads, help="torch threads per worker")
    p.add_argument("--table-episodes", type=int, default=None, help=f"default {defaults.table_episodes}, --quick 3")
    p.add_argument("--mgral-steps", type=int, default=None, help=f"default {defaults.mgral_steps}, --quick 10")
    p.add_argument("--mgral-seed", type=int, default=defaults.mgral_seed)
    p.add_argument("--out", default=defaults.out)
    a = p.parse_args(argv)
    strategies = tuple(a.strategies) if a.strategies else (QUICK_STRATEGIES if a.quick else ALL_STRATEGIES)
    unknown = sorted(set(strategies) - set(ALL_STRATEGIES))
    if unknown:
        p.error(f"unknown strategies {unknown}; accepted: {', '.join(ALL_STRATEGIES)}")
    if "random" not in strategies:
        p.error("the strategies must include random (the paired baseline)")
    table_episodes = a.table_episodes if a.table_episodes is not None else (3 if a.quick else defaults.table_episodes)
    mgral_steps = a.mgral_steps if a.mgral_steps is not None else (10 if a.quick else defaults.mgral_steps)
    return Settings(a.preset, strategies, tuple(a.seeds), dict(a.overrides), a.workers, a.threads,
                    table_episodes, mgral_steps, a.mgral_seed, a.out)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from tqdm.auto import tqdm

    from detgym.envs.sample_select import PRESETS

    settings = parse_args(argv)
    start, load_start = time.perf_counter(), os.getloadavg()[0]
    out = Path(settings.out)
    config = PRESETS.get_preset(settings.preset).merged(**settings.overrides)
    config.validate()
    config_key = config.config_key()
    atomic_write_json(out / f"settings-{config_key}.json", {**asdict(settings), "config": config.to_dict()})
    mgral_path = str(out / f"mgral-{config_key}.pt")
    n_sets = len(config.initial_sets) or config.n_initial_sets

    context = get_context("spawn")  # fresh interpreters: no torch thread pool inherited through fork
    with ProcessPoolExecutor(settings.workers, mp_context=context) as pool:
        initial = [pool.submit(_prepare_initial, settings, k) for k in sorted({s % n_sets for s in settings.seeds})]
        for job in tqdm(initial, desc="initial detectors", unit="set"):
            tqdm.write(job.result())
        evaluate = lambda strategy, seed: pool.submit(_evaluate, settings, strategy, seed, config_key, mgral_path)  # noqa: E731
        waiting_for_mgral = "mgral" in settings.strategies and not Path(mgral_path).exists()
        pending = {pool.submit(_train_mgral, settings, mgral_path)} if waiting_for_mgral else set()
        training = set(pending)
        pending |= {evaluate(strategy, seed) for strategy in settings.strategies for seed in settings.seeds
                    if not (waiting_for_mgral and strategy == "mgral")}
        with tqdm(total=len(settings.strategies) * len(settings.seeds), desc="episodes", unit="episode") as bar:
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for job in finished:
                    tqdm.write(job.result())
                    if job in training:  # MGRAL is trained: its evaluation episodes can start
                        pending |= {evaluate("mgral", seed) for seed in settings.seeds}
                    else:
                        bar.update(1)
    records = [r for f in sorted((out / "runs").glob("*.jsonl")) for r in read_runs(f).records.values()
               if r.get("config_key") == config_key]
    summary = aggregate(settings, config, records)
    _print(summary, config.map_metric)
    minutes = (time.perf_counter() - start) / 60
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # the worker processes, after the pool shut down
    cpu_minutes = (usage.ru_utime + usage.ru_stime) / 60
    print(f"\nwall {minutes:.1f} min with {settings.workers} worker(s) x {settings.threads} torch thread(s), "
          f"{cpu_minutes:.1f} CPU-min in the workers (an idle 2-core machine needs about CPU-min / 2 of wall); "
          f"load average {load_start:.1f} at start, {os.getloadavg()[0]:.1f} at end; results in {out}")
    return summary


if __name__ == "__main__":
    main()
