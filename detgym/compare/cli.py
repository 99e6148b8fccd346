"""``detgym compare`` (also ``python -m detgym compare``): which agent makes the better decisions inside detector
training? The options of :func:`detgym.compare.run`, parsed here.

Runs the grid env x agent x seed (a paper agent, a heuristic, an SB3 / sb3-contrib algorithm by name, or your own
agent or any SB3 algorithm class by import path, e.g. mypkg.selectors:MySelector or sb3_contrib.TQC; learning
agents first train for ``--train-budget`` timesteps on training seeds, then every agent is evaluated on separate
evaluation seeds, the same for every agent: see :mod:`detgym.compare.grid`), appends one replayable JSON line
per finished run to ``OUT/runs.jsonl``, and summarises: IQM and mean of the final AP and of the return with
stratified bootstrap 95% intervals, paired differences to the env's baseline and the probability of improvement
(:mod:`detgym.compare.stats`), as a markdown table (printed), CSV, JSON and PNG plots. An interrupted
comparison resumes: re-run the same command; finished runs are never repeated and never lost.

    detgym compare --list                                    # which agents fit which env
    detgym compare --env DetLossWeight-v0 --agents uniform,avw,rlo,ppo --seeds 5 --train-budget 256 --workers 2
    detgym compare --env DetLossWeight-Test-v0 --env-kwargs '{"iterations": 8}' --seeds 2 --out /tmp/cmp   # seconds
    detgym compare --env DetBoxSelect-v0 --agents nms,mypkg.selectors:MySelector --seeds 5   # your own agent
    detgym replay runs/compare/runs.jsonl                    # re-execute the recorded actions, check the rewards

OUT holds runs.jsonl, summary.csv, summary.json, table.md, scores.png, learning_curves.png,
episode_curves.png (multi-decision episodes: return so far per decision, e.g. active-learning curves),
action_frequencies.png and tb/<run key>/ (TensorBoard: the envs', SB3's and the harness's scalars).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from detgym._validation import int_option

__all__ = ["DEFAULTS", "add_arguments", "add_replay_arguments", "run_compare", "run_replay"]

#: Every default of the command in one place (agents, training budget and evaluated episodes per env: the env
#: class's ``compare_defaults``).
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
def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return list(dict.fromkeys(names))


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON ({err.msg}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object, got {text!r}")
    return value


_json_object.__name__ = "JSON object"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``detgym compare``."""
    d = DEFAULTS
    p.add_argument("--env", type=_names, default=None, metavar="ID[,ID...]",
                   help=f"detgym env ids (default {d['env']})")
    p.add_argument("--agents", type=_names, default=None, metavar="A[,B...]",
                   help="agents, for every env: names (see --list) or import paths (pkg.module:Factory, called as "
                   "Factory(env=env, seed=seed, **agent_kwargs); an SB3 algorithm class such as sb3_contrib.TQC); "
                   "default: the env's, e.g. uniform,avw,rlo,ppo for DetLossWeight")
    p.add_argument("--seeds", type=int_option(1), default=d["seeds"], metavar="N",
                   help=f"run seeds 0..N-1 per env and agent (default {d['seeds']})")
    p.add_argument("--train-budget", type=int_option(1), default=None, metavar="STEPS",
                   help="training timesteps of each learning agent per run (default: the env's, e.g. 256 for "
                   "DetLossWeight)")
    p.add_argument("--eval-episodes", type=int_option(1), default=None, metavar="N",
                   help="evaluated episodes per run (default: the env's, e.g. 1 for DetLossWeight)")
    p.add_argument("--workers", type=int_option(1), default=d["workers"], metavar="K",
                   help="parallel runs: 1 runs in this process, K > 1 in K worker processes, or the size of a local "
                   f"Ray instance (default {d['workers']})")
    p.add_argument("--backend", choices=("process", "ray"), default=d["backend"],
                   help=f"worker processes or Ray tasks (default {d['backend']})")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="Ray cluster to run on (--backend ray; default: a local instance started on demand)")
    p.add_argument("--threads", type=int_option(1), default=d["threads"],
                   help=f"torch threads per run (default {d['threads']})")
    p.add_argument("--env-kwargs", type=_json_object, default={}, metavar="JSON",
                   help='env constructor arguments for every env (\'{"iterations": 64}\'), or per env id '
                   '(\'{"DetLossWeight-v0": {"alpha": 50}}\')')
    p.add_argument("--agent-kwargs", type=_json_object, default={}, metavar="JSON",
                   help='agent arguments per agent name or import path (\'{"ppo": {"n_steps": 32}}\')')
    p.add_argument("--baseline", default=None, metavar="AGENT",
                   help="agent the others are compared with (default: the env's, e.g. uniform, else the first "
                   "agent)")
    p.add_argument("--out", default=d["out"], metavar="DIR", help=f"output directory (default {d['out']})")
    p.add_argument("--resamples", type=int_option(100), default=d["resamples"],
                   help=f"bootstrap resamples per interval (default {d['resamples']})")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--list", action="store_true", help="print which agents fit which env and exit")


def add_replay_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``detgym replay``."""
    p.add_argument("runs", metavar="RUNS_JSONL", help="a runs.jsonl written by detgym compare")
    p.add_argument("--run", default=None, metavar="KEY", help="replay only this run (its key, or a unique prefix)")


# ----------------------------------------------------------------------------------------------- commands
def _import_from_cwd() -> None:
    """Agents given by import path are found in the current directory, as ``python -m`` finds modules (the
    ``detgym`` script's own directory is first on ``sys.path`` instead); worker processes and Ray workers inherit
    the path."""
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())


def _print_list(args: argparse.Namespace) -> int:
    from detgym.agents.registry import find_agent
    from detgym.compare.api import list_agents

    for label, names in list_agents(args.env, args.env_kwargs).items():
        print(f"{label}: {', '.join(f'{n}*' if find_agent(n).learns else n for n in names)}")
    print("(* learns: trained for --train-budget timesteps before evaluation)")
    return 0


def run_compare(args: argparse.Namespace) -> int:
    """``detgym compare`` with parsed arguments; returns the exit code (0, 1: some run failed, 130: interrupted).

    Raises:
        ValueError: bad input, before any run starts (one line naming the option and what it accepts).
    """
    _import_from_cwd()
    if args.list:
        return _print_list(args)
    from detgym.compare.api import run
    from detgym.compare.execute import WorkerDied

    try:
        result = run(args.env or [DEFAULTS["env"]], args.agents, args.seeds, out=args.out, workers=args.workers,
                     backend=args.backend, ray_address=args.ray_address, train_budget=args.train_budget,
                     eval_episodes=args.eval_episodes, env_kwargs=args.env_kwargs, agent_kwargs=args.agent_kwargs,
                     threads=args.threads, baseline=args.baseline, resamples=args.resamples,
                     progress=not args.no_progress)
    except WorkerDied as err:
        print(f"detgym: error: {err}", file=sys.stderr)
        return 1
    if result.outcome.interrupted:
        print(f"interrupted: {result.outcome.finished} run(s) finished and saved in {args.out}; run the same "
              "command again to resume", file=sys.stderr)
        return 130
    if result.table:
        print()
        print(result.table)
        print("wrote " + ", ".join(str(p) for p in result.paths))
    return 1 if result.outcome.failed or not result.records else 0


def run_replay(args: argparse.Namespace) -> int:
    """``detgym replay``: prints one verdict per run; returns 0 when every run was reproduced exactly, else 1."""
    from detgym.compare.api import replay

    _import_from_cwd()
    report = replay(args.runs, args.run)
    for problem in report.problems:
        print(f"warning: {problem}", file=sys.stderr)
    for r in report.results:
        print(f"{'reproduced' if r.reproduced else 'MISMATCH  '}  {r.key}: {r.message}")
    bad = sum(not r.reproduced for r in report.results)
    print(f"{len(report.results) - bad} of {len(report.results)} run(s) reproduced exactly")
    return 1 if bad else 0
