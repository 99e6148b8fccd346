"""Env overhead of DetLossWeight-v0: one env step against the same alpha plain ``Trainer.step`` iterations.

Both run in one process on the same trainer (the env's), alternating env steps and plain blocks (ABBA order,
so drifts in machine load cancel), after a few warm-up rounds. Reported:

* ``ratio_interleaved``: total env-step time / total plain-block time (what a user sees; includes the noise of
  a shared machine, which on 2 cores is larger than the effect measured);
* ``overhead_direct``: time spent in ``env.step`` outside ``Trainer.step`` / time inside it, measured on the
  same calls (free of between-block noise; this is the env's own cost: eq. 2-5 statistics, observation, info).

The paper reports +0.45% per 50 iterations (31.32 s -> 31.46 s); the target here is <= 0.5% at the preset's
alpha. The end-of-episode evaluation is not part of a step's cost and is kept out (the run stops before it).

    python -m benchmarks.overhead --preset default --rounds 8
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from detgym.data.io import atomic_write_bytes


def measure(preset: str = "default", rounds: int = 8, warmup: int = 1, action: int = 0, seed: int = 0,
            threads: int | None = None, **env_kwargs) -> dict:
    """Run the interleaved measurement and return the numbers (see the module docstring)."""
    import torch

    from detgym.envs.loss_weight import DetLossWeightEnv

    if threads:
        torch.set_num_threads(threads)
    probe = DetLossWeightEnv(preset, **env_kwargs)
    alpha = probe.alpha
    probe.close()
    # Plain blocks advance the same trainer, so the schedule must hold both kinds of block without the episode
    # ending (its final evaluation is no step cost): room for 2 * (warmup + 2 * rounds) + 2 intervals.
    needed_intervals = 2 * (warmup + 2 * rounds) + 2
    env_kwargs = {**env_kwargs, "iterations": max(needed_intervals * alpha, env_kwargs.get("iterations") or 0)}
    env = DetLossWeightEnv(preset, **env_kwargs)
    env.reset(seed=seed)
    trainer = env.trainer
    real_step = trainer.step
    inside = {"t": 0.0}

    def timed_step(weights=None):
        t0 = time.perf_counter()
        try:
            return real_step(weights)
        finally:
            inside["t"] += time.perf_counter() - t0

    def env_block() -> tuple[float, float]:
        inside["t"] = 0.0
        trainer.step = timed_step  # instance attribute: only the env's calls are timed this way
        t0 = time.perf_counter()
        env.step(action)
        total = time.perf_counter() - t0
        del trainer.step
        return total, inside["t"]

    def plain_block() -> float:
        t0 = time.perf_counter()
        for _ in range(alpha):
            trainer.step(None)
        return time.perf_counter() - t0

    for _ in range(warmup):
        env_block()
        plain_block()
    env_times, inner_times, plain_times = [], [], []
    for r in range(rounds):
        order = ("env", "plain") if r % 2 == 0 else ("plain", "env")
        for kind in order:
            if kind == "env":
                total, inner = env_block()
                env_times.append(total)
                inner_times.append(inner)
            else:
                plain_times.append(plain_block())
    env.close()
    env_t, inner_t, plain_t = map(np.asarray, (env_times, inner_times, plain_times))
    return {
        "preset": preset,
        "alpha": alpha,
        "rounds": rounds,
        "action": action,
        "env_step_s_mean": float(env_t.mean()),
        "plain_block_s_mean": float(plain_t.mean()),
        "ratio_interleaved": float(env_t.sum() / plain_t.sum()),
        "ratio_median_paired": float(np.median(env_t / plain_t)),
        "overhead_direct": float((env_t.sum() - inner_t.sum()) / inner_t.sum()),
        "overhead_direct_ms_per_step": float((env_t - inner_t).mean() * 1e3),
        "torch_threads": torch.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="default")
    p.add_argument("--rounds", type=int, default=8, help="measured env steps (and as many plain blocks)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--alpha", type=int, default=None, help="override the preset's alpha")
    p.add_argument("--action", type=int, default=0, help="scheme used by the env steps (0 = AVW)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--json", default=None, help="also write the result to this JSON file (atomically)")
    args = p.parse_args(argv)
    kwargs = {"alpha": args.alpha} if args.alpha else {}
    res = measure(args.preset, args.rounds, args.warmup, args.action, threads=args.threads, **kwargs)
    print(
        f"preset={res['preset']} alpha={res['alpha']}: env step {res['env_step_s_mean']:.3f} s, "
        f"plain {res['alpha']} iterations {res['plain_block_s_mean']:.3f} s\n"
        f"  interleaved ratio {res['ratio_interleaved']:.4f} (median paired {res['ratio_median_paired']:.4f})\n"
        f"  direct env overhead {100 * res['overhead_direct']:.4f}% "
        f"({res['overhead_direct_ms_per_step']:.3f} ms per step)"
    )
    if args.json:
        atomic_write_bytes(Path(args.json), json.dumps(res, indent=2).encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
