"""Device check: one short episode of every registered env family on the GPU (AMP on) beside the CPU.

For each env family it runs its ``-Test`` id and its CPU default id (the first ``--steps`` steps) with a random
agent, once with ``device="cpu"`` and once with ``device="cuda"``, and prints the reset time and the mean step time
of each, with the GPU/CPU ratio. The CUDA path (AMP, device placement, candidate caches, embeddings) is verified
whenever a GPU is at hand; on a machine without CUDA the script says so and exits 0.

    python -m benchmarks.device_check                  # every family, both devices
    python -m benchmarks.device_check --steps 3 --families loss_weight
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

# ------------------------------------------------------------------------------------------------ settings
DEFAULT_STEPS = 5  # steps of the default-preset episode (a full one takes minutes on the CPU)
SEED = 0


def time_episode(env_id: str, device: str, max_steps: int | None) -> dict:
    """Reset + up to ``max_steps`` random-agent steps of ``env_id`` on ``device``; times in seconds."""
    import gymnasium as gym

    from detgym.agents import make_agent
    from detgym.rollout import run_episode

    t0 = time.perf_counter()
    env = gym.make(env_id, device=device)
    made = time.perf_counter() - t0
    agent = make_agent("random", env=env, seed=SEED)
    t1 = time.perf_counter()
    env.reset(seed=SEED)
    reset_s = time.perf_counter() - t1
    episode = run_episode(env, agent, seed=SEED, max_steps=max_steps)
    env.close()
    steps = max(episode.length, 1)
    # run_episode's wall time includes one more reset; take it out so the figure is per step
    step_s = max(episode.wall_s - reset_s, 0.0) / steps
    metrics = episode.final_metrics or {}
    return {"env": env_id, "device": device, "make_s": made, "reset_s": reset_s, "step_s": step_s,
            "steps": episode.length, "AP": metrics.get("AP")}


def vector_step_ratio(num_envs: int = 64, steps: int = 3, preset: str = "default") -> dict:
    """DetLossWeight's native vector env with ``num_envs`` sub-envs (vmap batching) on CUDA against one single env:
    seconds per step of each (after a warm-up step) and the ratio; the target is <= 4."""
    import numpy as np
    import torch

    from detgym.envs.loss_weight import DetLossWeightEnv, DetLossWeightVectorEnv

    def per_step(env, action) -> float:
        env.reset(seed=SEED)
        env.step(action)  # warm-up: cuDNN autotuning, allocator
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            env.step(action)
        torch.cuda.synchronize()
        return (time.perf_counter() - t0) / steps

    single = DetLossWeightEnv(preset, device="cuda")
    one = per_step(single, 3)
    single.close()
    vector = DetLossWeightVectorEnv(num_envs, preset, device="cuda")
    many = per_step(vector, np.full(num_envs, 3))
    batching = vector.batching
    vector.close()
    ratio = many / one
    print(f"DetLossWeight vector env N={num_envs} ({batching}) {many * 1e3:.1f} ms/step vs one env {one * 1e3:.1f} "
          f"ms/step: ratio {ratio:.2f} (target <= 4: {'met' if ratio <= 4 else 'MISSED'})")
    return {"num_envs": num_envs, "batching": batching, "vector_step_s": many, "single_step_s": one, "ratio": ratio}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="steps of each default-preset episode")
    p.add_argument("--families", nargs="*", default=None, help="env families (default: all registered)")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file (atomically)")
    args = p.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print("device_check: no CUDA device on this machine; nothing to check (exit 0)")
        return 0
    import detgym  # noqa: F401  registers the ids
    from detgym.data.io import atomic_write_json
    from detgym.envs import FAMILIES, env_ids

    print(f"CUDA device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    rows = []
    for family in args.families or FAMILIES:
        test_id, default_id = env_ids(family, test=True)[0], env_ids(family, test=False)[0]
        for env_id, max_steps in ((test_id, None), (default_id, args.steps)):
            cpu = time_episode(env_id, "cpu", max_steps)
            gpu = time_episode(env_id, "cuda", max_steps)
            rows.append({"cpu": cpu, "cuda": gpu})
            ratio = gpu["step_s"] / cpu["step_s"] if cpu["step_s"] > 0 else float("nan")
            print(f"{env_id:<34} steps {gpu['steps']:>3}  reset cpu {cpu['reset_s']:7.3f} s  "
                  f"cuda {gpu['reset_s']:7.3f} s  | step cpu {cpu['step_s'] * 1e3:9.2f} ms  "
                  f"cuda {gpu['step_s'] * 1e3:9.2f} ms  (cuda/cpu {ratio:.3f})")
    vector = vector_step_ratio()
    if args.json:
        atomic_write_json(Path(args.json), {"device": torch.cuda.get_device_name(0), "rows": rows, "vector": vector})
    print(json.dumps({"checked": len(rows)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
