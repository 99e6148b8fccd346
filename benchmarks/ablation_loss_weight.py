"""Ablation in the spirit of table 3 of paper 000: uniform vs AVW vs RLO vs each single scheme.

Every (agent, seed) pair runs one DetLossWeight episode (one full training run); the same seed gives every agent
the same detector initialisation and data order (paired comparison). Results are appended to a JSON file
atomically after each run and runs already there are skipped, so an interrupted sweep resumes where it stopped.
The summary gives, per agent, the mean final val AP with a bootstrap 95% confidence interval, the interquartile
mean, and the paired difference to ``uniform`` with its own bootstrap CI; it is printed and written as CSV and
as a PNG bar chart.

    python -m benchmarks.ablation_loss_weight --preset default --seeds 0 1 2 3 4 --out runs/ablation.json
    python -m benchmarks.ablation_loss_weight --preset test --seeds 0 1 --out /tmp/abl.json   # seconds
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np

from detgym.data.io import atomic_savefig, atomic_write_bytes

#: Agent names (agents.make_agent): the paper's table 3 rows plus RLO and a random baseline.
DEFAULT_AGENTS = ("uniform", "avw", "a1", "a2", "rlo", "random")


def run_key(preset: str, agent: str, seed: int, env_kwargs: dict[str, Any]) -> str:
    """Identity of one run: a result is reused only for the same preset, agent, seed and env overrides."""
    extra = json.dumps(env_kwargs, sort_keys=True) if env_kwargs else ""
    return f"{preset}|{agent}|{seed}|{extra}"


def run_one(preset: str, agent_name: str, seed: int, env_kwargs: dict[str, Any], threads: int | None = None) -> dict:
    """One episode of ``agent_name`` on ``preset`` with ``seed``; returns a JSON-able record."""
    import torch

    import detgym  # noqa: F401
    from agents import make_agent
    from detgym.envs.loss_weight import DetLossWeightEnv

    if threads:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    env = DetLossWeightEnv(preset, **env_kwargs)
    agent = make_agent(agent_name, seed=seed)
    obs, _ = env.reset(seed=seed)
    ret, steps, counts = 0.0, 0, [0, 0, 0, 0]
    start, done, info = True, False, {}
    while not done:
        action, _ = agent.predict(obs, episode_start=start)
        counts[int(action)] += 1
        obs, reward, term, trunc, info = env.step(action)
        ret += reward
        steps += 1
        start, done = False, term or trunc
    env.close()
    final = info["final_metrics"]
    record = {
        "preset": preset,
        "agent": agent_name,
        "seed": seed,
        "env_kwargs": env_kwargs,
        "AP": final["AP"],
        "AP50": final["AP50"],
        "AP75": final["AP75"],
        "return": ret,
        "steps": steps,
        "action_counts": counts,
        "diverged": bool(info.get("diverged", False)),
        "wall_s": time.perf_counter() - t0,
    }
    if hasattr(agent, "probs"):
        record["final_probs"] = np.asarray(agent.probs).tolist()
    return record


# ------------------------------------------------------------------------------------------------ storage
def load_results(path: Path) -> dict[str, dict]:
    if not path.exists():
        return {}
    with open(path) as fh:
        data = json.load(fh)
    return {r["key"]: r for r in data.get("runs", [])}


def save_results(path: Path, results: dict[str, dict]) -> None:
    """Write every run so far, atomically (temporary file in the same directory, then os.replace)."""
    atomic_write_bytes(path, json.dumps({"runs": list(results.values())}, indent=1).encode())


# ------------------------------------------------------------------------------------------------ stats
def bootstrap_ci(values: np.ndarray, n_boot: int = 10_000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean (``(nan, nan)`` with fewer than 2 values)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(n_boot, values.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def iqm(values: np.ndarray) -> float:
    """Interquartile mean: the mean of the middle 50% (rliable's robust aggregate)."""
    v = np.sort(np.asarray(values, dtype=np.float64))
    if v.size == 0:
        return float("nan")
    lo, hi = int(np.floor(0.25 * v.size)), int(np.ceil(0.75 * v.size))
    return float(v[lo:hi].mean()) if hi > lo else float(v.mean())


def summarize(runs: list[dict], agents: list[str], n_boot: int = 10_000, baseline: str = "uniform") -> list[dict]:
    """Per-agent rows: n, mean AP, CI, IQM, mean AP50, mean return, and the paired AP difference to ``baseline``."""
    by = {a: {r["seed"]: r for r in runs if r["agent"] == a} for a in agents}
    rows = []
    for a in agents:
        ap = np.array([r["AP"] for r in by[a].values()])
        if ap.size == 0:
            continue
        lo, hi = bootstrap_ci(ap, n_boot)
        row = {
            "agent": a, "n": int(ap.size), "AP_mean": float(ap.mean()), "AP_ci_low": lo, "AP_ci_high": hi,
            "AP_iqm": iqm(ap), "AP50_mean": float(np.mean([r["AP50"] for r in by[a].values()])),
            "return_mean": float(np.mean([r["return"] for r in by[a].values()])),
            "diverged": int(sum(r["diverged"] for r in by[a].values())),
        }
        common = sorted(set(by[a]) & set(by.get(baseline, {})))
        if a != baseline and common:
            diff = np.array([by[a][s]["AP"] - by[baseline][s]["AP"] for s in common])
            dlo, dhi = bootstrap_ci(diff, n_boot)
            row.update({"dAP_vs_" + baseline: float(diff.mean()), "dAP_ci_low": dlo, "dAP_ci_high": dhi})
        rows.append(row)
    return rows


def write_csv(path: Path, rows: list[dict]) -> None:
    keys: list[str] = []
    for r in rows:
        keys.extend(k for k in r if k not in keys)
    text = io.StringIO(newline="")
    w = csv.DictWriter(text, fieldnames=keys)
    w.writeheader()
    w.writerows(rows)
    atomic_write_bytes(path, text.getvalue().encode())


def plot_summary(path: Path, rows: list[dict], title: str = "") -> None:
    """Bar chart of the mean final val AP per agent with its bootstrap CI, written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["agent"] for r in rows]
    mean = np.array([r["AP_mean"] for r in rows])
    lo = np.array([r["AP_ci_low"] for r in rows])
    hi = np.array([r["AP_ci_high"] for r in rows])
    err = np.nan_to_num(np.stack([mean - lo, hi - mean]), nan=0.0)
    fig, ax = plt.subplots(figsize=(1.2 * len(rows) + 2, 3.5))
    ax.bar(names, mean, yerr=err, capsize=4, color="tab:blue", alpha=0.8)
    ax.set_ylabel("final val AP (mean, 95% CI)")
    ax.set_title(title or "DetLossWeight ablation (paper 000, table 3)")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    try:
        atomic_savefig(fig, path, dpi=120)
    finally:
        plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="default")
    p.add_argument("--agents", nargs="+", default=list(DEFAULT_AGENTS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    p.add_argument("--out", default="runs/ablation_loss_weight.json", help="results JSON (resumable)")
    p.add_argument("--iterations", type=int, default=None, help="override the preset's schedule length")
    p.add_argument("--alpha", type=int, default=None, help="override the preset's alpha")
    p.add_argument("--workers", type=int, default=1, help="parallel processes (each gets --threads torch threads)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--bootstrap", type=int, default=10_000, help="bootstrap resamples")
    args = p.parse_args(argv)

    from tqdm.auto import tqdm

    from agents import make_agent

    for a in args.agents:
        make_agent(a)  # unknown names fail before any training
    env_kwargs = {k: v for k, v in (("iterations", args.iterations), ("alpha", args.alpha)) if v is not None}
    out = Path(args.out)
    results = load_results(out)
    todo = [(a, s) for s in args.seeds for a in args.agents
            if run_key(args.preset, a, s, env_kwargs) not in results]
    print(f"{len(results)} runs in {out}, {len(todo)} to do")

    def store(rec: dict) -> None:
        rec["key"] = run_key(args.preset, rec["agent"], rec["seed"], env_kwargs)
        results[rec["key"]] = rec
        save_results(out, results)

    with tqdm(total=len(todo), desc="ablation", unit="run") as bar:
        if args.workers <= 1:
            for a, s in todo:
                bar.set_postfix(agent=a, seed=s)
                store(run_one(args.preset, a, s, env_kwargs, args.threads))
                bar.update(1)
        else:
            with ProcessPoolExecutor(args.workers) as pool:
                futures = [pool.submit(run_one, args.preset, a, s, env_kwargs, args.threads) for a, s in todo]
                for f in as_completed(futures):
                    store(f.result())  # only the parent writes the file
                    bar.update(1)

    mine = [r for r in results.values() if r["key"].startswith(f"{args.preset}|")
            and r.get("env_kwargs", {}) == env_kwargs and r["seed"] in args.seeds]
    rows = summarize(mine, args.agents, args.bootstrap)
    print(f"\npreset={args.preset} seeds={args.seeds} (final val AP, mean [95% bootstrap CI])")
    for r in rows:
        line = f"  {r['agent']:>8}  n={r['n']}  AP {r['AP_mean']:.4f} [{r['AP_ci_low']:.4f}, {r['AP_ci_high']:.4f}]"
        line += f"  IQM {r['AP_iqm']:.4f}  AP50 {r['AP50_mean']:.4f}  return {r['return_mean']:+.2f}"
        if "dAP_vs_uniform" in r:
            line += f"  dAP {r['dAP_vs_uniform']:+.4f} [{r['dAP_ci_low']:+.4f}, {r['dAP_ci_high']:+.4f}]"
        print(line)
    csv_path = out.with_suffix(".summary.csv")
    write_csv(csv_path, rows)
    png_path = out.with_suffix(".summary.png")
    if rows:
        plot_summary(png_path, rows, f"DetLossWeight ablation, preset {args.preset}, {len(args.seeds)} seeds")
    print(f"wrote {out}, {csv_path} and {png_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
