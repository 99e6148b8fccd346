"""Redraw paper 000's figure of RLO's action probabilities over training from a TensorBoard log.

The log is the one :class:`detgym.agents.RLOAgent` writes with ``log_dir=...`` (tags ``rlo/prob/a0`` .. ``a3``).
Either point the script at an existing log, or let it run one RLO episode first::

    python -m benchmarks.plot_rlo_probs runs/rlo --out rlo_probs.png --alpha 20
    python -m benchmarks.plot_rlo_probs runs/rlo --run test --seed 0 --out rlo_probs.png

The x axis is the training iteration (decision index x alpha: RLO decides after every interval of alpha
iterations); the paper plots epochs of the same run.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from detgym.data.io import atomic_savefig

LABELS = ("a0 (AVW: max variance drop)", "a1 (min loss)", "a2 (max loss)", "a3 (uniform)")


def read_probs(log_dir: str | os.PathLike, episode: int | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """``(decisions [T], probs [T, 4], episode)`` of one episode (default: the last) of an RLO log."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if not Path(log_dir).exists():
        raise FileNotFoundError(f"log_dir {log_dir} does not exist (write it with RLOAgent(log_dir=...) or --run)")
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    needed = {f"rlo/prob/a{k}" for k in range(4)} | {"rlo/episode", "rlo/decision"}
    if not needed <= tags:
        raise FileNotFoundError(f"no RLO probabilities in {log_dir}: missing tags {sorted(needed - tags)}")

    def by_step(tag: str) -> dict[int, float]:
        return {e.step: e.value for e in acc.Scalars(tag)}

    episodes = by_step("rlo/episode")
    decisions = by_step("rlo/decision")
    chosen = int(max(episodes.values())) if episode is None else int(episode)
    steps = sorted(s for s, e in episodes.items() if int(e) == chosen)
    if not steps:
        accepted = sorted({int(e) for e in episodes.values()})
        raise ValueError(f"episode={episode} is not in the log; accepted: {accepted}")
    probs = np.array([[by_step(f"rlo/prob/a{k}")[s] for k in range(4)] for s in steps])
    return np.array([decisions[s] for s in steps]), probs, chosen


def plot(decisions: np.ndarray, probs: np.ndarray, out: str | os.PathLike, alpha: int = 1, title: str = "") -> Path:
    """Draw the four probability curves and write the PNG atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = decisions * alpha
    fig, ax = plt.subplots(figsize=(7, 4))
    for k in range(4):
        ax.plot(x, probs[:, k], label=LABELS[k], linewidth=1.5)
    ax.set_xlabel("training iteration" if alpha > 1 else "decision (interval)")
    ax.set_ylabel("action probability")
    ax.set_ylim(0, max(0.5, float(probs.max()) + 0.05))  # gamma = 0.01 moves slowly: do not squash the curves
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(title or "RLO action probabilities over training (paper 000)")
    fig.tight_layout()
    return atomic_savefig(fig, out, dpi=120)


def run_rlo(log_dir: str, preset: str, seed: int, **env_kwargs) -> int:
    """Run one RLO episode on ``preset`` with logging; returns the env's alpha."""
    import detgym  # noqa: F401
    from detgym.agents import RLOAgent, run_episode
    from detgym.envs.loss_weight import DetLossWeightEnv

    env = DetLossWeightEnv(preset, log_dir=os.path.join(log_dir, "env"), **env_kwargs)
    agent = RLOAgent(seed=seed, log_dir=log_dir)
    episode = run_episode(env, agent, seed=seed)
    print(f"final val AP {episode.final_metrics['AP']:.4f}, probabilities {np.round(agent.probs, 3).tolist()}")
    agent.close()
    env.close()
    return env.alpha


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("log_dir", help="RLOAgent TensorBoard directory")
    p.add_argument("--out", default="rlo_probs.png", help="PNG to write")
    p.add_argument("--episode", type=int, default=None, help="episode index in the log (default: the last)")
    p.add_argument("--alpha", type=int, default=None, help="iterations per decision for the x axis")
    p.add_argument("--run", metavar="PRESET", default=None, help="first run one RLO episode on this env preset")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    alpha = args.alpha
    if args.run is not None:
        ran_alpha = run_rlo(args.log_dir, args.run, args.seed)
        alpha = alpha or ran_alpha
    decisions, probs, episode = read_probs(args.log_dir, args.episode)
    out = plot(decisions, probs, args.out, alpha or 1, title=f"RLO action probabilities (episode {episode})")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
