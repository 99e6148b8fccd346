"""The comparison's figures (PNG, matplotlib's Agg backend, written atomically).

* :func:`plot_scores`: per env, every agent's final AP (the return where an env reports no AP) as its IQM and
  mean with 95% stratified bootstrap intervals (the summary rows of :mod:`detgym.compare.report`);
* :func:`plot_learning_curves`: the learning agents' training-episode returns against training timesteps (a moving
  average where there are many episodes), one thin line per seed and their mean;
* :func:`plot_episode_curves`: for envs whose episodes take several decisions (an active-learning episode's
  cycles, a loss-weighting episode's intervals), the evaluated episodes' return so far after each decision: per
  agent the mean over seeds with a 95% bootstrap band (each seed's mean over its episodes first). On
  DetSampleSelect, whose reward is the val mAP gain of a cycle, these are the active-learning curves (mAP gain
  over the initial detector against the cycle);
* :func:`grouped_bars`: a bar per (row, series) with error bars, for the benchmark scripts' tables;
* :func:`plot_action_frequencies`: for discrete actions, what each agent chose as it learned: the probabilities of
  agents that expose them (RLO, over the decisions of its evaluated episode, which is its training: RLO learns
  online, eq. 8-9 of paper 000) beside the learning agents' action frequencies over their training timesteps
  (PPO's choices). Each curve is the mean over seeds.

Each function returns the path written, or ``None`` when the records hold nothing to draw.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from detgym.data.io import atomic_savefig

__all__ = ["grouped_bars", "plot_action_frequencies", "plot_episode_curves", "plot_learning_curves", "plot_scores"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | Path) -> Path:
    fig.tight_layout()
    return atomic_savefig(fig, path, dpi=120)


def grouped_bars(path: str | Path, names: Sequence[str], series: Mapping[str, tuple[Sequence[float], Any]],
                 title: str, *, ylabel: str | None = None, width: float = 1.4, **xtick_kwargs: Any) -> Path:
    """One group of bars per name, one bar per series: ``label -> (heights, errors)``, errors as matplotlib's
    ``yerr`` (``[n]`` symmetric or ``[2, n]`` below / above; NaN draws none)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(width * len(names) + 2, 4))
    x = np.arange(len(names))
    bar = 0.8 / len(series)
    for j, (label, (heights, errors)) in enumerate(series.items()):
        yerr = np.nan_to_num(np.asarray(errors, dtype=float), nan=0.0)
        ax.bar(x + (j - (len(series) - 1) / 2) * bar, heights, bar, yerr=yerr, capsize=3, label=label)
    ax.set_xticks(x, names, **xtick_kwargs)
    if ylabel:
        ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def _grouped(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    groups: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[row["env"]].append(row)
    return groups


def plot_scores(rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path | None:
    """Final AP (or return) per agent and env: IQM (dot) and mean (cross) with their 95% intervals."""
    groups = _grouped(rows)
    if not groups:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(groups), figsize=(4.5 * len(groups), 0.45 * max(map(len, groups.values())) + 1.6),
                             squeeze=False)
    for ax, (env_id, env_rows) in zip(axes[0], groups.items()):
        metric = "AP" if all("AP_iqm" in r for r in env_rows) else "return"
        y = np.arange(len(env_rows))
        for offset, stat, marker, label in ((-0.12, "iqm", "o", "IQM"), (0.12, "mean", "x", "mean")):
            value = np.array([r[f"{metric}_{stat}"] for r in env_rows])
            low = np.array([r[f"{metric}_{stat}_low"] for r in env_rows])
            high = np.array([r[f"{metric}_{stat}_high"] for r in env_rows])
            err = np.nan_to_num(np.stack([value - low, high - value]), nan=0.0)
            ax.errorbar(value, y + offset, xerr=err, fmt=marker, capsize=3, label=label)
        ax.set_yticks(y, [r["agent"] for r in env_rows])
        ax.invert_yaxis()
        ax.set_xlabel(f"final {metric} (95% CI)" if metric == "AP" else "return (95% CI)")
        ax.set_title(env_id, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    return _save(fig, path)


def _records_by_env_agent(records: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], list[Mapping[str, Any]]]:
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for r in records:
        groups[r["env"]["id"], r["agent"]["name"]].append(r)
    return groups


def _smoothed(x: np.ndarray, y: np.ndarray, points: int = 25) -> tuple[np.ndarray, np.ndarray]:
    """A moving average over ``len / points`` episodes (one-step episodes, DetBoxSelect's, come by thousands)."""
    window = max(1, len(y) // points)
    if window == 1:
        return x, y
    return x[window - 1:], np.convolve(y, np.ones(window) / window, mode="valid")


def _thousands(x: float, _pos: Any = None) -> str:
    """Tick label of a timestep count: 160000 -> 160k (long counts run into each other)."""
    return f"{x / 1000:g}k" if abs(x) >= 10_000 else f"{x:g}"


def _env_panels(curves: Mapping[tuple[str, str], Any], height: float) -> tuple[Any, list[tuple[Any, str, list]]]:
    """One panel per env of ``curves`` (``(env, agent) -> data``): the figure and, per panel, its axes, its env id and
    the ``(agent, data, colour)`` drawn in it (agents in ``curves``' order, colours from matplotlib's cycle)."""
    env_ids = list(dict.fromkeys(env for env, _ in curves))
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(env_ids), figsize=(5.5 * len(env_ids), height), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    panels = []
    for ax, env_id in zip(axes[0], env_ids):
        drawn = [(agent, data) for (env, agent), data in curves.items() if env == env_id]
        panels.append((ax, env_id, [(agent, data, colors[i % len(colors)]) for i, (agent, data) in enumerate(drawn)]))
    return fig, panels


def _label_panel(ax: Any, env_id: str, xlabel: str, ylabel: str, legend_size: int) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(env_id, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=legend_size)


def plot_learning_curves(records: Sequence[Mapping[str, Any]], path: str | Path) -> Path | None:
    """Training-episode return against timesteps of every learning agent, per env."""
    curves = {k: v for k, v in _records_by_env_agent(records).items()
              if any(r.get("train") and r["train"]["episodes"] for r in v)}
    if not curves:
        return None
    fig, panels = _env_panels(curves, 3.6)
    for ax, env_id, drawn in panels:
        for agent, runs, color in drawn:
            lines = []
            for r in runs:
                eps = r["train"]["episodes"] if r.get("train") else []
                if eps:
                    x, y = _smoothed(np.array([e["timesteps"] for e in eps]), np.array([e["return"] for e in eps]))
                    ax.plot(x, y, color=color, alpha=0.25, linewidth=0.8)
                    lines.append((x, y))
            grid = np.linspace(max(x[0] for x, _ in lines), min(x[-1] for x, _ in lines), 50)
            mean = np.mean([np.interp(grid, x, y) for x, y in lines], axis=0)
            ax.plot(grid, mean, color=color, linewidth=2, label=f"{agent} (mean of {len(lines)})")
        ax.xaxis.set_major_formatter(_thousands)
        _label_panel(ax, env_id, "training timesteps", "training episode return (moving average)", 8)
    return _save(fig, path)


def _cumulative_returns(runs: Sequence[Mapping[str, Any]]) -> np.ndarray | None:
    """Per run (seed), the mean over its evaluated episodes of the return after each decision: ``[runs, steps]``
    (steps: the shortest episode's), or None when no episode takes more than one decision."""
    per_run = []
    for r in runs:
        rewards = [np.cumsum(e["rewards"]) for e in r.get("episodes", []) if len(e.get("rewards", ())) > 1]
        if rewards:
            n = min(len(x) for x in rewards)
            per_run.append(np.mean([x[:n] for x in rewards], axis=0))
    if not per_run:
        return None
    n = min(len(x) for x in per_run)
    return np.stack([x[:n] for x in per_run])


def plot_episode_curves(records: Sequence[Mapping[str, Any]], path: str | Path, *,
                        n_resamples: int = 2000) -> Path | None:
    """Return so far after each decision of the evaluated episodes, per env and agent: the mean over seeds and its
    95% bootstrap band (:func:`detgym.compare.stats.interval_estimate`)."""
    from matplotlib.ticker import MaxNLocator

    from detgym.compare.stats import interval_estimate, mean_of_task_means

    curves = {k: c for k, runs in _records_by_env_agent(records).items()
              if (c := _cumulative_returns(runs)) is not None}
    if not curves:
        return None
    fig, panels = _env_panels(curves, 3.8)
    for ax, env_id, drawn in panels:
        for agent, c, color in drawn:
            steps = np.arange(1, c.shape[1] + 1)
            bands = [interval_estimate([c[:, t]], mean_of_task_means, n_resamples=n_resamples)
                     for t in range(c.shape[1])]
            ax.plot(steps, [b.value for b in bands], color=color, linewidth=1.8, marker="o", markersize=3,
                    label=f"{agent} ({c.shape[0]} seeds)")
            if c.shape[0] > 1:
                ax.fill_between(steps, [b.low for b in bands], [b.high for b in bands], color=color, alpha=0.15)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        _label_panel(ax, env_id, "decision (step of the evaluated episode)",
                     "return so far (mean over seeds, 95% band)", 7)
    return _save(fig, path)


def _probs_curve(runs: Sequence[Mapping[str, Any]]) -> np.ndarray | None:
    """Mean over seeds of the first evaluated episode's probabilities, ``[decisions, n_actions]``."""
    probs = [np.asarray(r["episodes"][0]["probs"]) for r in runs if r["episodes"][0].get("probs")]
    if not probs:
        return None
    n = min(len(p) for p in probs)
    return np.mean([p[:n] for p in probs], axis=0)


def _training_frequencies(runs: Sequence[Mapping[str, Any]], n_bins: int = 20) -> tuple[np.ndarray, np.ndarray] | None:
    """``(bin centres in timesteps, mean action frequencies [bins, n_actions])`` over the training episodes."""
    seqs = []
    for r in runs:
        eps = r["train"]["episodes"] if r.get("train") else []
        actions = [a for e in eps for a in e["actions"]]
        if not actions or not all(isinstance(a, int) for a in actions):
            return None  # not a discrete action
        seqs.append(np.asarray(actions))
    if not seqs:
        return None
    n_actions = int(max(s.max() for s in seqs)) + 1
    length = min(len(s) for s in seqs)
    edges = np.linspace(0, length, min(n_bins, length) + 1).astype(int)
    freq = np.mean([[np.bincount(s[a:b], minlength=n_actions) / max(b - a, 1) for a, b in zip(edges, edges[1:])]
                    for s in seqs], axis=0)
    return (edges[:-1] + edges[1:]) / 2, freq


def plot_action_frequencies(records: Sequence[Mapping[str, Any]], path: str | Path) -> Path | None:
    """RLO's probabilities (agents exposing ``probs``) beside the learning agents' choices over training."""
    panels = []
    for (env_id, agent), runs in _records_by_env_agent(records).items():
        probs = _probs_curve(runs)
        if probs is not None:
            panels.append((env_id, f"{agent}: action probabilities", np.arange(1, len(probs) + 1), probs, "decision"))
        freq = _training_frequencies(runs)
        if freq is not None:
            panels.append((env_id, f"{agent}: actions while training", freq[0], freq[1], "training timesteps"))
    if not panels:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.4), squeeze=False)
    for ax, (env_id, title, x, values, xlabel) in zip(axes[0], panels):
        for k in range(values.shape[1]):
            ax.plot(x, values[:, k], label=f"a{k}", linewidth=1.5)
        ax.set_ylim(0, 1)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("probability / frequency")
        ax.set_title(f"{env_id}\n{title}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, path)
