"""The comparison as a library: :func:`run`, :func:`replay` and :func:`list_agents` take what ``detgym compare`` /
``detgym replay`` take and return the results as data (the command line only parses its options and calls them).

Example (a notebook)::

    import detgym.compare

    result = detgym.compare.run(["DetBoxSelect-Test-v0"], ["nms", "keep_all"], seeds=3, out="runs/nb",
                                eval_episodes=8)
    print(result.table)                 # the markdown summary; result.summary: its rows as dicts
    assert detgym.compare.replay("runs/nb/runs.jsonl").reproduced
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from detgym.compare.plan import Plan, env_kwargs_for, make_plan

if TYPE_CHECKING:
    from detgym.compare.execute import Outcome
    from detgym.compare.reproduce import ReplayResult

__all__ = ["Comparison", "DEFAULT_ENV", "Replay", "list_agents", "replay", "run"]

#: The env compared when none is given.
DEFAULT_ENV = "DetLossWeight-v0"


@dataclass
class Comparison:
    """What :func:`run` did and found."""

    #: This comparison's finished runs (those of earlier, resumed invocations included), as ``runs.jsonl`` holds them.
    records: list[dict[str, Any]]
    #: One row per env and agent (:func:`detgym.compare.report.summary_rows`); empty when no run finished.
    summary: list[dict[str, Any]]
    #: The summary as the markdown table written to ``OUT/table.md`` (``""`` when no run finished).
    table: str
    plan: Plan
    #: What this invocation ran: finished and failed runs, whether it was interrupted, its wall time.
    outcome: Outcome
    #: The files written (summary, table, plots).
    paths: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every run of the grid finished (none failed, nothing interrupted)."""
        return not self.outcome.failed and not self.outcome.interrupted and len(self.records) == len(self.plan.specs)


def _seeds(seeds: int | Sequence[int]) -> list[int]:
    from detgym._validation import check_int

    if isinstance(seeds, int) and not isinstance(seeds, bool):
        return list(range(check_int("--seeds", seeds, 1)))
    values = [check_int("--seeds", s, 0) for s in seeds]
    if not values:
        raise ValueError("--seeds must be a count >= 1 or a non-empty list of seeds, got []")
    return list(dict.fromkeys(values))


def _write_outputs(out: Path, records: list[dict], plan: Plan, settings: Mapping[str, Any],
                   resamples: int) -> tuple[list[dict[str, Any]], str, list[Path]]:
    from detgym.compare import plots
    from detgym.compare.report import format_markdown, summary_rows, write_summary

    rows = summary_rows(records, plan.agents, plan.baselines, n_resamples=resamples)
    paths = list(write_summary(out, rows, settings).values())
    for path in (plots.plot_scores(rows, out / "scores.png"),
                 plots.plot_learning_curves(records, out / "learning_curves.png"),
                 plots.plot_episode_curves(records, out / "episode_curves.png"),
                 plots.plot_action_frequencies(records, out / "action_frequencies.png")):
        if path is not None:
            paths.append(path)
    return rows, format_markdown(rows), paths


def run(envs: str | Sequence[str] = DEFAULT_ENV, agents: Sequence[str] | None = None, seeds: int | Sequence[int] = 5,
        *, out: str | Path = "runs/compare", workers: int = 1, backend: str = "process",
        ray_address: str | None = None, train_budget: int | None = None, eval_episodes: int | None = None,
        env_kwargs: Mapping[str, Any] | None = None, agent_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
        threads: int = 1, baseline: str | None = None, resamples: int | None = None, progress: bool = True,
        verbose: bool = True) -> Comparison:
    """Run the grid env x agent x seed (resuming what ``out`` already holds) and summarise it.

    Args:
        envs: env ids (one id, or several).
        agents: agent names (``detgym compare --list``), import paths (``"pkg.module:Factory"``, an SB3 algorithm
            class such as ``"sb3_contrib.TQC"``) or names given to :func:`detgym.agents.register`; ``None``: each
            env's default agents.
        seeds: a count N (run seeds 0..N-1) or the run seeds.
        out: output directory (``runs.jsonl``, ``summary.csv`` / ``.json``, ``table.md``, plots, ``tb/``).
        workers: parallel runs: 1 in this process, K > 1 in K worker processes (or the size of a local Ray
            instance).
        backend: ``"process"`` or ``"ray"``; ``ray_address``: a Ray cluster (default: a local instance).
        train_budget: training timesteps of each learning agent per run (``None``: each env's default).
        eval_episodes: evaluated episodes per run (``None``: each env's default).
        env_kwargs: constructor arguments for every env, or per env id.
        agent_kwargs: per agent name (or import path), its arguments.
        threads: torch threads per run.
        baseline: the agent the others are compared with (``None``: each env's default, else the first agent).
        resamples: bootstrap resamples per interval (``None``: :data:`detgym.compare.stats.N_RESAMPLES`).
        progress: show a progress bar; ``verbose``: print what is run and skipped.

    Returns:
        A :class:`Comparison`; after an interrupt (Ctrl-C) every finished run is saved and ``outcome.interrupted``
        is set (call again to resume).

    Raises:
        ValueError: bad input, before any run starts (one line naming the option and what it accepts).
        detgym.compare.execute.WorkerDied: a worker process died (the finished runs are saved).
    """
    from detgym._validation import check_int
    from detgym.compare.execute import check_backend, execute
    from detgym.compare.grid import check_same_configuration
    from detgym.compare.stats import N_RESAMPLES
    from detgym.compare.store import RunFile, check_writable, read_runs

    env_ids = [envs] if isinstance(envs, str) else list(envs)
    run_seeds = _seeds(seeds)
    check_backend(backend, ray_address)
    for name, value in (("--workers", workers), ("--threads", threads), ("--train-budget", train_budget),
                        ("--eval-episodes", eval_episodes), ("--resamples", resamples)):
        if value is not None:
            check_int(name, value, 1)
    resamples = N_RESAMPLES if resamples is None else resamples
    # the parent builds each env once with every core (a candidate cache or an initial detector may be trained here,
    # with a progress bar); each run then sets its own thread count
    plan = make_plan(env_ids, agents, run_seeds, train_budget=train_budget, eval_episodes=eval_episodes,
                     env_kwargs=env_kwargs, agent_kwargs=agent_kwargs, baseline=baseline, threads=threads,
                     workers=workers, backend=backend, tb_root=str(Path(out) / "tb"))
    out = check_writable(out)
    say = print if verbose else (lambda *a, **k: None)
    with RunFile(out) as run_file:
        read = read_runs(run_file.path)
        for problem in read.problems:
            print(f"warning: {problem}", file=sys.stderr)
        check_same_configuration(read.records, plan.specs, str(run_file.path))
        todo = [s for s in plan.specs if s.key not in read.records]
        done = len(plan.specs) - len(todo)
        say(f"{len(plan.specs)} runs ({len(env_ids)} env(s) x their agents x {len(run_seeds)} seeds): {done} already "
            f"in {run_file.path}, {len(todo)} to run ({workers} worker(s), backend {backend})")
        outcome = execute(todo, run_file, workers=workers, backend=backend, ray_address=ray_address,
                          total=len(plan.specs), initial=done, progress=progress)
    keys = {s.key for s in plan.specs}
    records = [r for k, r in read_runs(run_file.path).records.items() if k in keys]
    ran = {s.key for s in todo}
    own = sum(r["wall_s"] for r in records if r["key"] in ran)
    say(f"{outcome.finished} run(s) in {outcome.wall_s:.1f} s wall ({own:.1f} s of runs' own time, {workers} "
        f"worker(s)); {len(outcome.failed)} failed")
    comparison = Comparison(records=records, summary=[], table="", plan=plan, outcome=outcome)
    if records and not outcome.interrupted:
        settings = {"env": env_ids, "seeds": run_seeds if not isinstance(seeds, int) else seeds,
                    "plan": {p.env.id: p.settings() for p in plan.envs}, "env_kwargs": dict(env_kwargs or {}),
                    "agent_kwargs": dict(agent_kwargs or {}), "threads": threads, "resamples": resamples}
        comparison.summary, comparison.table, comparison.paths = _write_outputs(out, records, plan, settings,
                                                                                resamples)
    return comparison


def list_agents(envs: Sequence[str] | None = None, env_kwargs: Mapping[str, Any] | None = None) -> dict[str, list[str]]:
    """Which agents fit which env: ``{label: agent names}``, for ``envs`` (each built once), or for one ``-Test``
    id per env class (labelled ``Prefix-*-v0``: an env class's presets share their spaces and agents)."""
    from detgym.compare.grid import resolve_env
    from detgym.envs import ENV_IDS, VARIANTS

    if envs is None:
        shown = {f"{prefix}-*-v0": f"{prefix}-Test-v0" for prefix, _, _ in VARIANTS if f"{prefix}-Test-v0" in ENV_IDS}
    else:
        shown = {env_id: env_id for env_id in envs}
    ids = list(shown.values())
    return {label: list(resolve_env(env_id, env_kwargs_for(env_id, dict(env_kwargs or {}), ids)).agents)
            for label, env_id in shown.items()}


@dataclass
class Replay:
    """What :func:`replay` found: one verdict per run, and the damaged lines of the file (skipped)."""

    results: list[ReplayResult]
    problems: list[str]

    @property
    def reproduced(self) -> bool:
        """Every replayed run was reproduced exactly."""
        return bool(self.results) and all(r.reproduced for r in self.results)


def replay(path: str | Path, run: str | None = None) -> Replay:
    """Re-execute the recorded actions of the runs in ``path`` (a ``runs.jsonl``), or of the run whose key is (or
    starts with) ``run``, and check rewards and final metrics (:mod:`detgym.compare.reproduce`).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: no readable run, or ``run`` matches none or several.
    """
    from detgym.compare.reproduce import replay_file

    results, problems = replay_file(path, run)
    return Replay(results, problems)
