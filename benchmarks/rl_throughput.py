"""RL throughput of DetLossWeight: learning-detector episodes per CPU-hour, and the native vector env against
gymnasium's SyncVectorEnv -- two ratios, each measured side by side in one run.

1. **Episodes per CPU-hour** of a learning detector (final val AP50 >= 0.5; every sub-episode of a vector env
   counts). Baseline: DetLossWeight-v0 as it was before the vector env and the fast training path (the
   ``retinanet`` preset, one single env, on the previous training path:
   ``benchmarks.profile_step.use_previous_path``; ``--baseline-path current`` drops that);
   candidate: today's ``DetLossWeight-v0`` (the ``default`` preset) in the native vector env with ``--num-envs``
   sub-envs. Both run the uniform scheme (a3) in the same process with the same torch threads, alternating
   (baseline, candidate, baseline, ...), so load drifts hit both. CPU time is the process's own
   (``time.process_time``: user + system of all its threads), so other users of a shared machine do not count.
2. **Env steps per second**: the native vector env with N sub-envs against ``gymnasium.vector.SyncVectorEnv`` of N
   separate ``DetLossWeightEnv`` (what ``make_vec(..., vectorization_mode="sync")`` builds), same preset, same
   process and threads, alternating blocks of steps (ABBA); a sub-env step counts as one env step.

    python -m benchmarks.rl_throughput                      # both, defaults below
    python -m benchmarks.rl_throughput --rounds 1 --num-envs 8 --threads 1
    python -m benchmarks.rl_throughput --part steps --steps 3 --blocks 4

Results are written atomically to ``runs/rl_throughput.json`` (per part, merged with what is there).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.profile_step import use_previous_path
from detgym.data.io import atomic_write_bytes

# ---------------------------------------------------------------------------------------------- settings
BASELINE_PRESET = "retinanet"  # DetLossWeight-v0's default before retinanet-lambda4
CANDIDATE_PRESET = "default"
NUM_ENVS = 8
ROUNDS = 1  # baseline episodes (and candidate vector episodes) per run
LEARNING_AP50 = 0.5
UNIFORM = 3  # the action every episode takes (a3): the benchmark measures the env, not an agent
STEP_BLOCKS = 4  # part 2: alternating blocks per env kind
STEPS_PER_BLOCK = 2  # vector steps per block
THREADS = 1
OUT = Path("runs/rl_throughput.json")


class Clock:
    """Wall and process-CPU seconds of a block of work."""

    def __enter__(self) -> "Clock":
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def uniform_ap50(env: Any, seed: int) -> np.ndarray:
    """One episode of every sub-env of a vector env under the uniform scheme; final val AP50 per sub-env."""
    from detgym.agents import ConstantAgent
    from detgym.rollout import run_vector_episode

    episodes = run_vector_episode(env, ConstantAgent(UNIFORM), seed=seed)
    return np.array([ep.final_metrics["AP50"] for ep in episodes], dtype=np.float64)


# ---------------------------------------------------------------------------------------------- part 1
def episodes_per_cpu_hour(rounds: int, num_envs: int, baseline: str = BASELINE_PRESET,
                          candidate: str = CANDIDATE_PRESET, seed: int = 0, previous_path: bool = True,
                          **env_kwargs: Any) -> dict[str, Any]:
    """Learning-detector episodes per CPU-hour: the single env on the previous training path against today's vector
    env."""
    from detgym.envs.loss_weight import DetLossWeightEnv, DetLossWeightVectorEnv

    single = DetLossWeightEnv(baseline, **env_kwargs)
    vector = DetLossWeightVectorEnv(num_envs, candidate, **env_kwargs)
    rows: dict[str, dict[str, Any]] = {
        "baseline": {"preset": baseline, "envs": 1, "episodes": 0, "learning": 0, "cpu_s": 0.0,
                     "wall_s": 0.0, "AP50": []},
        "candidate": {"preset": candidate, "envs": num_envs, "episodes": 0, "learning": 0, "cpu_s": 0.0,
                      "wall_s": 0.0, "AP50": []},
    }
    for r in range(rounds):
        for kind in ("baseline", "candidate") if r % 2 == 0 else ("candidate", "baseline"):
            with Clock() as clock:
                if kind == "baseline":
                    single.reset(seed=seed + r)
                    if previous_path:  # the first interval (trained by reset) ran on the current path
                        use_previous_path(single.trainer)
                    while True:
                        *_, terminated, truncated, info = single.step(UNIFORM)
                        if terminated or truncated:
                            ap50 = np.array([info["final_metrics"]["AP50"]])
                            break
                else:
                    ap50 = uniform_ap50(vector, seed + 1000 * (r + 1))
            row = rows[kind]
            row["episodes"] += ap50.size
            row["learning"] += int((ap50 >= LEARNING_AP50).sum())
            row["cpu_s"] += clock.cpu
            row["wall_s"] += clock.wall
            row["AP50"] += ap50.tolist()
            print(f"  {kind}: {ap50.size} episode(s), AP50 {np.round(ap50, 3).tolist()}, {clock.wall:.0f} s wall, "
                  f"{clock.cpu:.0f} s CPU", flush=True)
    single.close()
    vector.close()
    for row in rows.values():
        row["learning_per_cpu_hour"] = 3600.0 * row["learning"] / row["cpu_s"]
        row["episodes_per_cpu_hour"] = 3600.0 * row["episodes"] / row["cpu_s"]
        row["cpu_s_per_episode"] = row["cpu_s"] / row["episodes"]
    base = rows["baseline"]["learning_per_cpu_hour"]
    ratio = rows["candidate"]["learning_per_cpu_hour"] / base if base > 0 else float("inf")
    return {"rows": rows, "ratio": ratio}


# ---------------------------------------------------------------------------------------------- part 2
def steps_per_second(num_envs: int, blocks: int, steps: int, preset: str = CANDIDATE_PRESET, seed: int = 0,
                     **env_kwargs: Any) -> dict[str, Any]:
    """Env steps per second of the native vector env and of SyncVectorEnv over the same preset, ABBA blocks."""
    import gymnasium

    import detgym  # noqa: F401  (registers the ids)

    envs = {
        mode: gymnasium.make_vec("DetLossWeight-v0", num_envs=num_envs, vectorization_mode=vectorization,
                                 preset=preset, **env_kwargs)
        for mode, vectorization in (("native", "vector_entry_point"), ("sync", "sync"))
    }
    actions = np.full(num_envs, UNIFORM)
    spent = {k: [0.0, 0.0] for k in envs}
    for name, env in envs.items():
        env.reset(seed=seed)
        env.step(actions)  # warm-up step (allocator, lazy set-ups)
    for b in range(blocks):
        for name in ("native", "sync") if b % 2 == 0 else ("sync", "native"):
            with Clock() as clock:
                for _ in range(steps):
                    envs[name].step(actions)
            spent[name][0] += clock.wall
            spent[name][1] += clock.cpu
    for env in envs.values():
        env.close()
    n_steps = blocks * steps * num_envs
    out = {k: {"env_steps_per_s": n_steps / w, "env_steps_per_cpu_s": n_steps / c} for k, (w, c) in spent.items()}
    out["ratio_wall"] = out["native"]["env_steps_per_s"] / out["sync"]["env_steps_per_s"]
    out["ratio_cpu"] = out["native"]["env_steps_per_cpu_s"] / out["sync"]["env_steps_per_cpu_s"]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=("episodes", "steps", "both"), default="both")
    p.add_argument("--rounds", type=int, default=ROUNDS)
    p.add_argument("--num-envs", type=int, default=NUM_ENVS)
    p.add_argument("--blocks", type=int, default=STEP_BLOCKS)
    p.add_argument("--steps", type=int, default=STEPS_PER_BLOCK)
    p.add_argument("--threads", type=int, default=THREADS)
    p.add_argument("--baseline-preset", default=BASELINE_PRESET)
    p.add_argument("--candidate-preset", default=CANDIDATE_PRESET)
    p.add_argument("--baseline-path", choices=("previous", "current"), default="previous",
                   help="training path of the baseline episodes (previous: before the fast paths)")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    result = json.loads(args.out.read_text()) if args.out.exists() else {}
    settings = {"threads": args.threads, "num_envs": args.num_envs, "baseline": args.baseline_preset,
                "baseline_path": args.baseline_path,
                "candidate": args.candidate_preset, "learning_ap50": LEARNING_AP50, "torch": torch.__version__}
    if args.part in ("episodes", "both"):
        print(f"episodes per CPU-hour: {args.baseline_preset!r} single env vs {args.candidate_preset!r} vector env "
              f"(N={args.num_envs}), {args.rounds} round(s), {args.threads} thread(s)")
        res = episodes_per_cpu_hour(args.rounds, args.num_envs, args.baseline_preset, args.candidate_preset,
                                    previous_path=args.baseline_path == "previous")
        result["episodes"] = {"settings": {**settings, "rounds": args.rounds}, **res}
        for kind, row in res["rows"].items():
            print(f"  {kind:<10} {row['preset']:<10} {row['learning']}/{row['episodes']} learning episodes, "
                  f"{row['cpu_s_per_episode']:.0f} CPU s per episode -> {row['learning_per_cpu_hour']:.1f} learning "
                  f"episodes per CPU-hour ({row['episodes_per_cpu_hour']:.1f} episodes)")
        print(f"  ratio (target >= 4): {res['ratio']:.2f}")
    if args.part in ("steps", "both"):
        print(f"env steps per second: native vector env vs SyncVectorEnv, N={args.num_envs}, {args.threads} thread(s)")
        res = steps_per_second(args.num_envs, args.blocks, args.steps, args.candidate_preset)
        result["steps"] = {"settings": {**settings, "blocks": args.blocks, "steps": args.steps}, **res}
        for kind in ("native", "sync"):
            print(f"  {kind:<7} {res[kind]['env_steps_per_s']:.3f} env steps/s, "
                  f"{res[kind]['env_steps_per_cpu_s']:.3f} per CPU second")
        print(f"  ratio (target >= 2): wall {res['ratio_wall']:.3f}, CPU {res['ratio_cpu']:.3f}")
    atomic_write_bytes(args.out, json.dumps(result, indent=1).encode())
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
