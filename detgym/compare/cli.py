"""``detgym compare`` (also ``python -m detgym.compare.cli``): which agent makes the better decisions inside
detector training?

Runs the grid env x agent x seed (a paper agent, a heuristic, or an SB3 / sb3-contrib algorithm by name; learning
agents first train for ``--train-budget`` timesteps on training seeds, then every agent is evaluated on separate
evaluation seeds, the same for every agent: see :mod:`detgym.compare.grid`), appends one replayable JSON line
per finished run to ``OUT/runs.jsonl``, and summarises: IQM and mean of the final AP and of the return with
stratified bootstrap 95% intervals, paired differences to the env's baseline and the probability of improvement
(:mod:`detgym.compare.stats`), as a markdown table (printed), CSV, JSON and PNG plots. An interrupted
comparison resumes: re-run the same command; finished runs are never repeated and never lost.

    detgym compare --list                                    # which agents fit which env
    detgym compare --env DetLossWeight-v0 --agents uniform,avw,rlo,ppo --seeds 5 --train-budget 256 --workers 2
    detgym compare --env DetLossWeight-Test-v0 --env-kwargs '{"iterations": 8}' --seeds 2 --out /tmp/cmp   # seconds
    detgym replay runs/compare/runs.jsonl                    # re-execute the recorded actions, check the rewards

OUT holds runs.jsonl, summary.csv, summary.json, table.md, scores.png, learning_curves.png,
action_frequencies.png and tb/<run key>/ (TensorBoard: the envs', SB3's and the harness's scalars).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

__all__ = ["DEFAULTS", "add_arguments", "add_replay_arguments", "main", "run_compare", "run_replay"]

#: Every default of the command in one place (agents, training budget and evaluated episodes per env family:
#: :data:`detgym.compare.families.FAMILY_DEFAULTS`).
DEFAULTS: dict[str, Any] = {
    "env": "DetLossWeight-v0",
    "seeds": 5,
    "workers": 1,
    "backend": "process",
    "out": "runs/compare",
    "threads": 1,
    "resamples": 10_000,
}

# ------------------------------------------------------------------------------------------------ arguments
def _count(name: str, minimum: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{name} must be >= {minimum}, got {value}")
        return value

    return parse


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return list(dict.fromkeys(names))


def _json_object(option: str) -> Any:
    def parse(text: str) -> dict[str, Any]:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as err:
            raise argparse.ArgumentTypeError(f"{option} is not valid JSON ({err.msg}): {text!r}") from None
        if not isinstance(value, dict):
            raise argparse.ArgumentTypeError(f"{option} must be a JSON object, got {text!r}")
        return value

    return parse


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``detgym compare``."""
    d = DEFAULTS
    p.add_argument("--env", type=_names, default=None, metavar="ID[,ID...]",
                   help=f"detgym env ids (default {d['env']})")
    p.add_argument("--agents", type=_names, default=None, metavar="A[,B...]",
                   help="agent names, for every env (see --list; default: the env family's, e.g. uniform,avw,rlo,ppo "
                   "for DetLossWeight)")
    p.add_argument("--seeds", type=_count("--seeds", 1), default=d["seeds"], metavar="N",
                   help=f"run seeds 0..N-1 per env and agent (default {d['seeds']})")
    p.add_argument("--train-budget", type=_count("--train-budget", 1), default=None, metavar="STEPS",
                   help="training timesteps of each learning agent per run (default: the env family's, e.g. 256 for "
                   "DetLossWeight)")
    p.add_argument("--eval-episodes", type=_count("--eval-episodes", 1), default=None, metavar="N",
                   help="evaluated episodes per run (default: the env family's, e.g. 1 for DetLossWeight)")
    p.add_argument("--workers", type=_count("--workers", 1), default=d["workers"], metavar="K",
                   help="parallel runs: 1 runs in this process, K > 1 in K worker processes, or the size of a local "
                   f"Ray instance (default {d['workers']})")
    p.add_argument("--backend", choices=("process", "ray"), default=d["backend"],
                   help=f"worker processes or Ray tasks (default {d['backend']})")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="Ray cluster to run on (--backend ray; default: a local instance started on demand)")
    p.add_argument("--threads", type=_count("--threads", 1), default=d["threads"],
                   help=f"torch threads per run (default {d['threads']})")
    p.add_argument("--env-kwargs", type=_json_object("--env-kwargs"), default={}, metavar="JSON",
                   help='env constructor arguments for every env (\'{"iterations": 64}\'), or per env id '
                   '(\'{"DetLossWeight-v0": {"alpha": 50}}\')')
    p.add_argument("--agent-kwargs", type=_json_object("--agent-kwargs"), default={}, metavar="JSON",
                   help='agent arguments per agent name (\'{"ppo": {"n_steps": 32}}\')')
    p.add_argument("--baseline", default=None, metavar="AGENT",
                   help="agent the others are compared with (default: the env family's, e.g. uniform, else the "
                   "first agent)")
    p.add_argument("--out", default=d["out"], metavar="DIR", help=f"output directory (default {d['out']})")
    p.add_argument("--resamples", type=_count("--resamples", 100), default=d["resamples"],
                   help=f"bootstrap resamples per interval (default {d['resamples']})")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--list", action="store_true", help="print which agents fit which env and exit")


def add_replay_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``detgym replay``."""
    p.add_argument("runs", metavar="RUNS_JSONL", help="a runs.jsonl written by detgym compare")
    p.add_argument("--run", default=None, metavar="KEY", help="replay only this run (its key, or a unique prefix)")


# ----------------------------------------------------------------------------------------------------- list
def _list(env_ids: Sequence[str] | None, env_kwargs: dict[str, Any]) -> int:
    from detgym.agents.registry import AGENTS
    from detgym.compare.grid import resolve_env
    from detgym.envs import ENV_IDS, VARIANTS

    if env_ids is None:
        # one -Test id per env class stands for all its presets: spaces and family are the variant's
        shown = {f"{prefix}-*-v0": f"{prefix}-Test-v0" for prefix, _, _ in VARIANTS if f"{prefix}-Test-v0" in ENV_IDS}
    else:
        shown = {env_id: env_id for env_id in env_ids}
    for label, env_id in shown.items():
        env = resolve_env(env_id, _kwargs_for(env_id, env_kwargs, list(shown.values())))
        names = [f"{n}*" if AGENTS[n].learns else n for n in env.agents]
        print(f"{label}: {', '.join(names)}")
    print("(* learns: trained for --train-budget timesteps before evaluation)")
    return 0


# -------------------------------------------------------------------------------------------------- compare
def _kwargs_for(env_id: str, env_kwargs: dict[str, Any], env_ids: Sequence[str]) -> dict[str, Any]:
    """``--env-kwargs`` for one env: per-id when every key names an env of the comparison, else for every env."""
    if env_kwargs and all(k in env_ids for k in env_kwargs):
        value = env_kwargs.get(env_id, {})
        if not isinstance(value, dict):
            raise ValueError(f"--env-kwargs for {env_id} must be a JSON object, got {value!r}")
        return value
    return env_kwargs


def _plan(args: argparse.Namespace, envs: Sequence[Any]) -> dict[str, dict[str, Any]]:
    """Per env id: its agents, baseline, training budget and evaluated episodes (the options, else the family's
    defaults)."""
    from detgym.compare.families import family_defaults
    from detgym.compare.grid import baseline_for, check_agents

    plan = {}
    for env in envs:
        defaults = family_defaults(env.family)
        agents = [a.lower() for a in args.agents] if args.agents is not None else list(defaults.agents)
        if not agents:
            raise ValueError(f"--agents is required for {env.id} (its family has no default agents); agents that "
                             f"fit: {', '.join(env.agents)}")
        check_agents(env, agents)
        if args.baseline is not None and args.baseline not in agents:
            raise ValueError(f"--baseline {args.baseline!r} is not among the agents of {env.id}; accepted: "
                             f"{', '.join(agents)}")
        plan[env.id] = {
            "agents": agents, "baseline": args.baseline or baseline_for(env, agents),
            "train_budget": args.train_budget or defaults.train_budget,
            "eval_episodes": args.eval_episodes or defaults.eval_episodes,
        }
    unknown = set(args.agent_kwargs) - {a for p in plan.values() for a in p["agents"]}
    if unknown:
        raise ValueError(f"--agent-kwargs names agents not compared: {', '.join(sorted(unknown))}")
    return plan


def _write_outputs(out: Path, records: list[dict], plan: dict[str, dict[str, Any]], settings: dict[str, Any],
                   resamples: int) -> list[Path]:
    from detgym.compare import plots
    from detgym.compare.report import format_markdown, summary_rows, write_summary

    rows = summary_rows(records, {e: p["agents"] for e, p in plan.items()},
                        {e: p["baseline"] for e, p in plan.items()}, n_resamples=resamples)
    print()
    print(format_markdown(rows))
    paths = list(write_summary(out, rows, settings).values())
    for path in (plots.plot_scores(rows, out / "scores.png"),
                 plots.plot_learning_curves(records, out / "learning_curves.png"),
                 plots.plot_action_frequencies(records, out / "action_frequencies.png")):
        if path is not None:
            paths.append(path)
    return paths


def run_compare(args: argparse.Namespace) -> int:
    """``detgym compare`` with parsed arguments; returns the exit code (0, 1: some run failed, 130: interrupted).

    Raises:
        ValueError: bad input, before any run starts (one line naming the option and what it accepts).
    """
    if args.list:
        return _list(args.env, args.env_kwargs)
    args.env = args.env or [DEFAULTS["env"]]
    # The parent builds each env once with every core (a candidate cache or an initial detector may be trained
    # here, with a progress bar); each run then sets its own --threads.
    from detgym.compare.execute import WorkerDied, check_backend, execute
    from detgym.compare.grid import build_grid, check_same_configuration, resolve_env
    from detgym.compare.store import RunFile, check_writable, read_runs

    check_backend(args.backend, args.ray_address)
    envs = [resolve_env(env_id, _kwargs_for(env_id, args.env_kwargs, args.env)) for env_id in args.env]
    plan = _plan(args, envs)
    out = check_writable(args.out)
    specs = build_grid(envs, {e: p["agents"] for e, p in plan.items()}, range(args.seeds),
                       train_budget={e: p["train_budget"] for e, p in plan.items()},
                       eval_episodes={e: p["eval_episodes"] for e, p in plan.items()},
                       agent_kwargs=args.agent_kwargs, tb_root=str(out / "tb"), threads=args.threads)
    with RunFile(out) as run_file:
        read = read_runs(run_file.path)
        for problem in read.problems:
            print(f"warning: {problem}", file=sys.stderr)
        check_same_configuration(read.records, specs, str(run_file.path))
        todo = [s for s in specs if s.key not in read.records]
        print(f"{len(specs)} runs ({len(envs)} env(s) x their agents x {args.seeds} seeds): "
              f"{len(specs) - len(todo)} already in {run_file.path}, {len(todo)} to run "
              f"({args.workers} worker(s), backend {args.backend})")
        try:
            outcome = execute(todo, run_file, workers=args.workers, backend=args.backend,
                              ray_address=args.ray_address, total=len(specs), initial=len(specs) - len(todo),
                              progress=not args.no_progress)
        except WorkerDied as err:
            print(f"compare: error: {err}", file=sys.stderr)
            return 1
    if outcome.interrupted:
        print(f"interrupted: {outcome.finished} run(s) finished and saved in {run_file.path}; run the same command "
              "again to resume", file=sys.stderr)
        return 130
    keys = {s.key for s in specs}
    records = [r for k, r in read_runs(run_file.path).records.items() if k in keys]
    ran = {s.key for s in todo}
    own = sum(r["wall_s"] for r in records if r["key"] in ran)
    print(f"{outcome.finished} run(s) in {outcome.wall_s:.1f} s wall ({own:.1f} s of runs' own time, "
          f"{args.workers} worker(s)); {len(outcome.failed)} failed")
    if records:
        settings = {"env": args.env, "seeds": args.seeds, "plan": plan, "env_kwargs": args.env_kwargs,
                    "agent_kwargs": args.agent_kwargs, "threads": args.threads, "resamples": args.resamples}
        paths = _write_outputs(out, records, plan, settings, args.resamples)
        print("wrote " + ", ".join(str(p) for p in paths))
    return 1 if outcome.failed or not records else 0


def run_replay(args: argparse.Namespace) -> int:
    """``detgym replay``: prints one verdict per run; returns 0 when every run was reproduced exactly, else 1."""
    from detgym.compare.replay import replay_file

    results, problems = replay_file(args.runs, args.run)
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    for r in results:
        print(f"{'reproduced' if r.reproduced else 'MISMATCH  '}  {r.key}: {r.message}")
    bad = sum(not r.reproduced for r in results)
    print(f"{len(results) - bad} of {len(results)} run(s) reproduced exactly")
    return 1 if bad else 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m detgym.compare.cli [options]`` (the options of ``detgym compare``)."""
    parser = argparse.ArgumentParser(prog="python -m detgym.compare.cli", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        code = run_compare(args)
    except ValueError as err:
        print(f"compare: error: {err}", file=sys.stderr)
        return 2
    print(f"total {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
