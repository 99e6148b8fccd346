"""What an env's own thread count costs: the same episode steps with ``num_threads`` 1 (the default) and more.

    python -m benchmarks.env_threads                              # DetLossWeight-v0, 1 against 2 threads
    python -m benchmarks.env_threads --env DetLossWeight-Test-v0 --steps 6

Every env runs its training and evaluation at the thread count it owns (default 1), so its rewards are the same in
every vector env and worker. A single env in a process of its own then leaves a second core idle; this prints the
wall and CPU seconds per step of each count, measured interleaved (step i of every count before step i + 1), and
the speed-up of the larger count: what the default costs a lone env on a 2-core machine. Rewards of the counts
differ in the last bits (CPU float sums depend on the thread count); that is why the env owns it.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

SETTINGS = {"env": "DetLossWeight-v0", "threads": "1,2", "steps": 8, "seed": 0, "action": 3}


def main(argv: list[str] | None = None) -> int:
    import gymnasium as gym
    import torch

    import detgym  # noqa: F401  registers the ids

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, value in SETTINGS.items():
        p.add_argument(f"--{name}", type=type(value), default=value)
    args = p.parse_args(argv)
    print("settings:", json.dumps(vars(args)))
    counts = [int(t) for t in args.threads.split(",")]
    torch.set_num_threads(max(counts))
    envs = {n: gym.make(args.env, num_threads=n) for n in counts}
    for env in envs.values():
        env.reset(seed=args.seed)
    wall = {n: [] for n in counts}
    cpu = {n: [] for n in counts}
    for _ in range(args.steps):
        for n, env in envs.items():
            w, c = time.perf_counter(), time.process_time()
            *_, terminated, truncated, _ = env.step(args.action)
            wall[n].append(time.perf_counter() - w)
            cpu[n].append(time.process_time() - c)
            if terminated or truncated:
                env.reset(seed=args.seed)
    for n in counts:
        print(f"num_threads={n}: {np.median(wall[n]):.3f} s wall, {np.median(cpu[n]):.3f} CPU-s per step (median)")
    base = np.median(wall[counts[0]])
    for n in counts[1:]:
        print(f"{n} threads: {base / np.median(wall[n]):.2f}x the steps per second of {counts[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
