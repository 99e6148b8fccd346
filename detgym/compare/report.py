"""The comparison's summary: one row per env and agent, as a markdown table (for the README), CSV and JSON.

Per metric (``AP``: the final val COCO AP of the evaluated episodes, where the env reports it; ``return``: the
undiscounted return) a row holds the IQM and the mean over runs with stratified bootstrap 95% intervals, and,
for every agent but the env's baseline, the paired difference to the baseline (same seeds) and the probability of
improvement over it, with intervals (:mod:`detgym.compare.stats`). With several envs, one more row per agent of
every env aggregates the AP over envs (IQM, runs resampled within each env: rliable's stratified bootstrap).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from detgym.compare import stats
from detgym.data.io import atomic_write_bytes, atomic_write_csv

__all__ = ["ALL_ENVS", "METRICS", "format_markdown", "summary_rows", "write_summary"]

#: Metrics summarised, when every run of an env has them.
METRICS: tuple[str, ...] = ("AP", "return")
#: The ``env`` of the rows aggregating over envs.
ALL_ENVS = "all envs"


def _metrics(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """AP, return, then the info metrics the records carry (``record["info_metrics"]`` names them)."""
    extra = [m for r in records for m in r.get("info_metrics", ())]
    return list(dict.fromkeys([*METRICS, *extra])) if records else []


def _by_seed(records: Sequence[Mapping[str, Any]], env_id: str, agent: str, metric: str) -> dict[int, float]:
    return {r["seeds"]["run"]: float(r[metric]) for r in records
            if r["env"]["id"] == env_id and r["agent"]["name"] == agent and metric in r}


def _put(row: dict[str, Any], prefix: str, est: stats.Estimate) -> None:
    row[prefix], row[f"{prefix}_low"], row[f"{prefix}_high"] = est.value, est.low, est.high


def _metric_cells(row: dict[str, Any], metric: str, mine: dict[int, float], base: dict[int, float] | None,
                  n_resamples: int) -> None:
    values = np.array(list(mine.values()))
    _put(row, f"{metric}_iqm", stats.interval_estimate([values], stats.iqm, n_resamples=n_resamples))
    _put(row, f"{metric}_mean", stats.interval_estimate([values], stats.mean_of_task_means, n_resamples=n_resamples))
    if base is None:
        return
    seeds = sorted(set(mine) & set(base))
    if not seeds:
        return
    x, y = [mine[s] for s in seeds], [base[s] for s in seeds]
    row[f"{metric}_pairs"] = len(seeds)
    _put(row, f"{metric}_diff", stats.paired_difference(x, y, n_resamples=n_resamples))
    _put(row, f"{metric}_poi", stats.probability_of_improvement_estimate(x, y, n_resamples=n_resamples))


def summary_rows(records: Sequence[Mapping[str, Any]], agents: Mapping[str, Sequence[str]],
                 baselines: Mapping[str, str], *, n_resamples: int = stats.N_RESAMPLES) -> list[dict[str, Any]]:
    """Rows (dicts) in env and agent order; see the module docstring.

    Args:
        records: this comparison's runs.
        agents: per env id (in table order), its agents (in table order).
        baselines: per env id, its baseline agent.
        n_resamples: bootstrap resamples per interval.
    """
    env_ids = list(agents)
    rows: list[dict[str, Any]] = []
    for env_id in env_ids:
        env_records = [r for r in records if r["env"]["id"] == env_id]
        metrics = [m for m in _metrics(env_records) if all(m in r for r in env_records)]
        for agent in agents[env_id]:
            runs = [r for r in env_records if r["agent"]["name"] == agent]
            if not runs:
                continue
            baseline = baselines[env_id]
            row: dict[str, Any] = {
                "env": env_id, "agent": agent, "baseline": baseline, "runs": len(runs),
                "diverged": sum(any(ep["diverged"] for ep in r["episodes"]) for r in runs),
                "wall_s_mean": float(np.mean([r["wall_s"] for r in runs])),
            }
            for metric in metrics:
                base = _by_seed(env_records, env_id, baseline, metric) if agent != baseline else None
                _metric_cells(row, metric, _by_seed(env_records, env_id, agent, metric), base, n_resamples)
            rows.append(row)
    if len(env_ids) > 1:
        rows.extend(_aggregate_rows(records, env_ids, agents, n_resamples))
    return rows


def _aggregate_rows(records: Sequence[Mapping[str, Any]], env_ids: Sequence[str],
                    agents: Mapping[str, Sequence[str]], n_resamples: int) -> list[dict[str, Any]]:
    rows = []
    shared = [a for a in agents[env_ids[0]] if all(a in agents[e] for e in env_ids)]
    for agent in shared:
        tasks = [list(_by_seed(records, env_id, agent, "AP").values()) for env_id in env_ids]
        if not all(tasks):
            continue  # the agent lacks AP on some env: no aggregate over envs
        row: dict[str, Any] = {"env": ALL_ENVS, "agent": agent, "runs": sum(map(len, tasks))}
        _put(row, "AP_iqm", stats.interval_estimate(tasks, stats.iqm, n_resamples=n_resamples))
        _put(row, "AP_mean", stats.interval_estimate(tasks, stats.mean_of_task_means, n_resamples=n_resamples))
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------------- formats
def _cell(row: Mapping[str, Any], prefix: str, digits: int, signed: bool = False) -> str:
    if prefix not in row:
        return ""
    fmt = f"{{:{'+' if signed else ''}.{digits}f}}"
    value, low, high = row[prefix], row[f"{prefix}_low"], row[f"{prefix}_high"]
    if math.isnan(low):
        return f"{fmt.format(value)} (n < 2)"
    return f"{fmt.format(value)} [{fmt.format(low)}, {fmt.format(high)}]"


def _primary(row: Mapping[str, Any]) -> str:
    return "AP" if "AP_iqm" in row else "return"


def format_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """A GitHub markdown table of ``rows``: per row its primary metric (the final AP, or the return where the env
    reports no AP) with IQM, mean, paired difference and probability of improvement over the baseline (marked), and
    the return's IQM beside the AP."""
    extra = list(dict.fromkeys(k[: -len("_iqm")] for r in rows for k in r
                               if k.endswith("_iqm") and k[: -len("_iqm")] not in METRICS))
    header = ["env", "agent", "runs", "metric", "IQM [95% CI]", "mean [95% CI]", "Δ vs baseline [95% CI]",
              "P(> baseline) [95% CI]", "return IQM [95% CI]", *(f"{m} IQM [95% CI]" for m in extra)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        m = _primary(r)
        digits = 3 if m == "AP" else 2
        agent = f"{r['agent']} (baseline)" if r.get("baseline") == r["agent"] else r["agent"]
        cells = [r["env"], agent, str(r["runs"]), m, _cell(r, f"{m}_iqm", digits), _cell(r, f"{m}_mean", digits),
                 _cell(r, f"{m}_diff", digits, signed=True), _cell(r, f"{m}_poi", 2),
                 _cell(r, "return_iqm", 2) if m == "AP" else "", *(_cell(r, f"{x}_iqm", 3) for x in extra)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_summary(out: str | Path, rows: Sequence[Mapping[str, Any]], settings: Mapping[str, Any]) -> dict[str, Path]:
    """Write ``summary.csv``, ``summary.json`` (rows + the comparison's settings; a missing interval is null) and
    ``table.md`` atomically."""
    out = Path(out)
    paths = {"csv": out / "summary.csv", "json": out / "summary.json", "markdown": out / "table.md"}
    atomic_write_csv(paths["csv"], rows)
    strict = [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()} for r in rows]
    atomic_write_bytes(paths["json"], json.dumps({"settings": dict(settings), "rows": strict}, indent=1).encode())
    atomic_write_bytes(paths["markdown"], format_markdown(rows).encode())
    return paths
