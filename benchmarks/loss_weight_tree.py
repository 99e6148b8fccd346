"""The shipped DetLossWeight tree: signal, fidelity, build cost and speed, measured in one run.

    python -m benchmarks.loss_weight_tree                     # everything below (fidelity: 2 leaves, ~6 CPU-min)
    python -m benchmarks.loss_weight_tree --fidelity-leaves 0 # no real re-runs
    python -m benchmarks.loss_weight_tree --speed 0           # no speed figures (a busy machine distorts them)

Prints, for the table of ``DetLossWeightTabular-v0`` (``DetLossWeight-v0``'s preset, T decisions):

* signal: per seed the final val AP of the uniform schedule (a3 a3 a3), the best and the worst leaf, and best minus
  uniform with a 95% bootstrap interval over seeds (SciPy);
* fidelity: stored leaves re-run for real through ``DetLossWeight-v0`` (``alpha = iterations // (T + 1)``, same
  seed, same thread count): stored and re-run final AP and their difference (target <= 1e-6);
* build cost: CPU seconds per node (training and evaluation) and per seed's tree;
* speed: ``build-tree`` on the test preset with 2 workers against 1 (fresh caches, side by side), and reset + step
  of the tabular env against ``CartPole-v1`` in this process;

and draws every seed's 4^T leaf APs (``docs/results/loss_weight_tree_leaves.png``). Results go to ``--out``
(JSON, written atomically; re-runs of finished fidelity leaves are read back, not trained again).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

SETTINGS: dict[str, Any] = {
    "preset": "default",
    "decisions": 3,
    "fidelity_leaves": 2,  # uniform and best leaf of the first seed, then more seeds' best leaves
    "speed_steps": 20_000,
    "speed": 1,  # 0: skip the build speed-up and env speed (they need an otherwise idle machine)
    "out": "runs/loss_weight_tree/results.json",
    "plot": "docs/results/loss_weight_tree_leaves.png",
    "resamples": 10_000,
}


def signal(table: Any, seeds: list[int], resamples: int) -> dict[str, Any]:
    from scipy import stats

    rows = []
    uniform = (3,) * table.spec.decisions
    for seed in seeds:
        leaves = {a: r["stats"]["AP"] for a, r in table.leaves(seed).items()}
        best_actions, best = table.best_leaf(seed)
        rows.append({"seed": seed, "uniform": leaves[uniform], "best": best, "best_actions": list(best_actions),
                     "worst": min(leaves.values()), **{f"const_a{k}": leaves[(k,) * table.spec.decisions]
                                                        for k in range(4)}})
    gaps = np.array([r["best"] - r["uniform"] for r in rows])
    ci = (float("nan"), float("nan"))
    if len(gaps) > 1 and np.ptp(gaps) > 0:
        res = stats.bootstrap((gaps,), np.mean, n_resamples=resamples, method="percentile", random_state=0)
        ci = (float(res.confidence_interval.low), float(res.confidence_interval.high))
    return {"rows": rows, "best_minus_uniform": float(gaps.mean()), "ci": ci}


def fidelity(table: Any, seeds: list[int], n: int, done: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Re-runs of stored leaves, one at a time (the caller writes each before the next starts)."""
    from detgym.envs.loss_weight.tree import fidelity_check

    leaves = [(seeds[0], (3,) * table.spec.decisions)] + [(s, table.best_leaf(s)[0]) for s in seeds]
    for seed, actions in list(dict.fromkeys(leaves))[:n]:
        key = f"{seed}:{''.join(map(str, actions))}"
        if key not in done:
            start = time.process_time()
            stored, rerun = fidelity_check(table, seed, actions)
            done[key] = {"seed": seed, "actions": list(actions), "stored": stored, "rerun": rerun,
                         "diff": abs(stored - rerun), "cpu_s": time.process_time() - start}
        yield done[key]


def build_cost(table: Any, seeds: list[int]) -> dict[str, float]:
    cpu = [r["train_cpu_s"] + r["eval_cpu_s"] for s in seeds for r in table.nodes[s].values()]
    return {"nodes": len(cpu), "cpu_s_per_node": float(np.mean(cpu)), "cpu_s_per_seed": float(np.sum(cpu)) / len(seeds)}


def build_speedup() -> dict[str, float]:
    from detgym.envs.loss_weight.tree import TreeSpec, build_tree

    spec = TreeSpec("test", decisions=2, overrides={"iterations": 96})
    wall = {}
    for workers in (1, 2):
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            build_tree(spec, [0, 1], out=Path(tmp) / "t.json", cache_dir=tmp, workers=workers, progress=False)
            wall[workers] = time.perf_counter() - start
    return {"wall_1": wall[1], "wall_2": wall[2], "speedup": wall[1] / wall[2]}


def env_speed(steps: int) -> dict[str, float]:
    import gymnasium as gym

    def rate(env: Any) -> float:
        env.reset(seed=0)
        env.action_space.seed(0)
        start = time.perf_counter()
        for _ in range(steps):
            _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            if terminated or truncated:
                env.reset()
        return steps / (time.perf_counter() - start)

    tabular, cartpole = rate(gym.make("DetLossWeightTabular-v0")), rate(gym.make("CartPole-v1"))
    return {"tabular_steps_per_s": tabular, "cartpole_steps_per_s": cartpole, "ratio": tabular / cartpole}


def plot(table: Any, seeds: list[int], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from detgym.data.io import atomic_savefig

    fig, ax = plt.subplots(figsize=(8, 4.2), layout="constrained")
    for seed in seeds:
        leaves = sorted(table.leaves(seed).items(), key=lambda kv: kv[1]["stats"]["AP"])
        ap = [r["stats"]["AP"] for _, r in leaves]
        line, = ax.plot(range(len(ap)), ap, marker=".", label=f"seed {seed}")
        for k, marker in ((3, "o"), (2, "^"), (0, "v")):
            i = [a for a, _ in leaves].index((k,) * table.spec.decisions)
            ax.plot(i, ap[i], marker, color=line.get_color(), markersize=9, markerfacecolor="none")
    ax.set_xlabel(f"the {4 ** table.spec.decisions} schedules of each seed, by final AP")
    ax.set_ylabel("final val COCO AP")
    ax.set_title("DetLossWeightTabular-v0: every schedule (o uniform, ^ always a2, v always a0)", fontsize=10)
    ax.legend(fontsize=8)
    atomic_savefig(fig, path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    from detgym.data.io import atomic_write_json
    from detgym.envs.loss_weight.tree import TreeSpec, TreeTable, packaged_table

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, value in SETTINGS.items():
        p.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    args = p.parse_args(argv)
    print("settings:", json.dumps(vars(args)))
    spec = TreeSpec(args.preset, args.decisions)
    table = TreeTable.load(packaged_table(spec.preset, spec.decisions), spec)
    seeds = table.complete_seeds()
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {}
    results["settings"] = vars(args)
    results["signal"] = signal(table, seeds, args.resamples)
    for row in results["signal"]["rows"]:
        print(f"seed {row['seed']}: uniform {row['uniform']:.4f}, best {row['best']:.4f} {row['best_actions']}, "
              f"worst {row['worst']:.4f}, always a0..a3 " + " ".join(f"{row[f'const_a{k}']:.4f}" for k in range(4)))
    sig = results["signal"]
    print(f"signal: best - uniform leaf AP {sig['best_minus_uniform']:+.4f} [{sig['ci'][0]:+.4f}, {sig['ci'][1]:+.4f}]"
          f" over {len(seeds)} seeds")
    results["build_cost"] = build_cost(table, seeds)
    cost = results["build_cost"]
    print(f"build cost: {cost['cpu_s_per_node']:.1f} CPU-s per node, {cost['cpu_s_per_seed'] / 60:.1f} CPU-min per "
          f"seed ({cost['nodes']} nodes)")
    results.setdefault("fidelity", {})
    for row in fidelity(table, seeds, args.fidelity_leaves, results["fidelity"]):
        atomic_write_json(out, results, indent=1)
        print(f"fidelity seed {row['seed']} {row['actions']}: stored {row['stored']:.6f}, re-run {row['rerun']:.6f}, "
              f"|diff| {row['diff']:.2e}")
    if args.speed:
        results["build_speedup"] = build_speedup()
        print(f"build-tree (test preset): 2 workers {results['build_speedup']['speedup']:.2f}x faster than 1")
        results["env_speed"] = env_speed(args.speed_steps)
        print(f"tabular env: {results['env_speed']['ratio']:.2f}x CartPole-v1's reset + step rate")
    plot(table, seeds, args.plot)
    atomic_write_json(out, results, indent=1)
    print(f"wrote {out}, {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
