"""How fast DetBoxSelect is, as ratios measured side by side in one process (targets in brackets: -v1's pool reward
/ -v0's per-image AP).

1. ``gymnasium.make`` of a preset whose cache exists, in a fresh interpreter (imports excluded) [about 1 s];
2. env steps per second, reset + step, through ``gymnasium.make`` with its default wrappers, against
   ``CartPole-v1``'s steps per second in the same process, rounds interleaved [>= 0.1x / 0.25x CartPole];
   the Seq and Rescore variants alongside (informational);
3. the native vector env (``make_vec(..., num_envs=64, vectorization_mode="vector_entry_point")``) in images per
   second against CartPole's single-env steps per second [>= 1x / 2x];
4. one policy-gradient fine-tuning iteration (detgym.agents.pg_detector) against one standard iteration of the same
   detector, trainer settings and batch size, blocks interleaved [<= 1.10x].

Each figure is the median over rounds. Results (with the settings) are written to ``--out`` as JSON.

    python -m benchmarks.box_select_speed                  # default preset, -v1 (its cache is built first if missing)
    python -m benchmarks.box_select_speed --version 0      # the -v0 ids (paper 001's per-image AP)
    python -m benchmarks.box_select_speed --preset test --rounds 2 --pg-iterations 2   # seconds
"""

from __future__ import annotations

import argparse
import copy
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from detgym.data.io import atomic_write_json


@dataclass
class Settings:
    preset: str = "default"
    #: the ids' version: 1 (pool reward) or 0 (per-image AP)
    version: int = 1
    rounds: int = 5
    #: env steps per round (each env: CartPole, DetBoxSelect, Seq, Rescore)
    steps: int = 20_000
    num_envs: int = 64
    #: vector env steps per round
    vector_steps: int = 300
    #: training iterations per block of the PG cost comparison (one standard and one PG block per round)
    pg_iterations: int = 10
    seed: int = 0


def _env_rate(env: Any, actions: list, steps: int) -> float:
    """Steps per second of ``env`` over ``steps`` steps (reset when an episode ends, as an RL loop does)."""
    env.reset(seed=0)
    n_act = len(actions)
    t0 = time.perf_counter()
    for i in range(steps):
        _, _, terminated, truncated, _ = env.step(actions[i % n_act])
        if terminated or truncated:
            env.reset()
    return steps / (time.perf_counter() - t0)


def _vector_rate(venv: Any, actions: np.ndarray, steps: int) -> float:
    """Images (sub-env episodes) per second of the native vector env."""
    venv.reset(seed=0)
    t0 = time.perf_counter()
    for _ in range(steps):
        venv.step(actions)
    return steps * venv.num_envs / (time.perf_counter() - t0)


def _make_seconds(env_id: str) -> float:
    """``gymnasium.make(env_id)`` in a fresh interpreter (cache on disk, imports not counted)."""
    code = ("import time, gymnasium as gym, detgym, torch, detgym.envs.box_select.env\n"
            f"t = time.perf_counter(); gym.make({env_id!r}); print(time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def _pg_cost(preset: str, iterations: int, rounds: int, seed: int) -> dict[str, Any]:
    """Seconds per iteration of standard and PG fine-tuning, blocks interleaved, from the preset's detector."""
    from detgym.agents.pg_detector import PGConfig, PolicyGradientDetector
    from detgym.envs.box_select import PRESETS
    from detgym.envs.box_select.candidates import load_detector
    from detgym.envs.substrate import LoadedSubstrate

    config = PRESETS.get_preset(preset)
    substrate = LoadedSubstrate(config)
    base = load_detector(config, substrate)
    trainers = {
        "standard": substrate.build_trainer(seed, seed, model=copy.deepcopy(base)),
        "pg": substrate.build_trainer(seed, seed, model=PolicyGradientDetector(copy.deepcopy(base), PGConfig())),
    }
    for trainer in trainers.values():
        trainer.step()  # warm-up (allocations, first-call paths)
    times: dict[str, list[float]] = {k: [] for k in trainers}
    for _ in range(rounds):
        for name, trainer in trainers.items():
            t0 = time.perf_counter()
            for _ in range(iterations):
                trainer.step()
            times[name].append((time.perf_counter() - t0) / iterations)
    ratios = [p / s for p, s in zip(times["pg"], times["standard"])]
    return {"standard_s_per_it": float(np.median(times["standard"])), "pg_s_per_it": float(np.median(times["pg"])),
            "ratio": float(np.median(ratios)), "ratios": ratios,
            "batch_size": int(trainers["pg"].config.batch_size)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = Settings()
    for name, value in asdict(d).items():
        p.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    p.add_argument("--out", default="runs/box_select_speed.json")
    p.add_argument("--skip-pg", action="store_true", help="skip the fine-tuning cost comparison")
    args = p.parse_args(argv)
    s = Settings(**{k: getattr(args, k) for k in asdict(d)})

    import gymnasium as gym
    from tqdm.auto import tqdm

    import detgym  # noqa: F401
    from detgym.envs import PRESET_IDS

    if s.version not in PRESET_IDS["box_select"]:
        raise SystemExit(f"--version must be one of {sorted(PRESET_IDS['box_select'])}")
    suffix = {preset: sfx for sfx, preset in PRESET_IDS["box_select"][s.version]}.get(s.preset)
    if suffix is None:
        raise SystemExit(f"--preset must be one of {[p for _, p in PRESET_IDS['box_select'][s.version]]}")
    ids = {v: f"{v}{suffix}-v{s.version}" for v in ("DetBoxSelect", "DetBoxSelectSeq", "DetBoxRescore")}
    single_target, vector_target = (0.1, 1.0) if s.version == 1 else (0.25, 2.0)
    envs = {"CartPole": gym.make("CartPole-v1"), **{v: gym.make(i, progress=True) for v, i in ids.items()}}
    rng = np.random.default_rng(s.seed)
    n_max = envs["DetBoxSelect"].unwrapped.n_max
    actions: dict[str, list] = {
        "CartPole": [int(a) for a in rng.integers(0, 2, 1000)],
        "DetBoxSelect": list(rng.integers(0, 2, (1000, n_max)).astype(np.int8)),
        "DetBoxSelectSeq": [n_max] * 1000,  # "stop": one reset + one step per episode, as the one-step variants
        "DetBoxRescore": list(rng.uniform(0, 1, (1000, n_max)).astype(np.float32)),
    }
    venv = gym.make_vec(ids["DetBoxSelect"], num_envs=s.num_envs, vectorization_mode="vector_entry_point")
    vec_actions = rng.integers(0, 2, (s.num_envs, n_max)).astype(np.int8)

    rates: dict[str, list[float]] = {k: [] for k in (*envs, "vector")}
    ratios: dict[str, list[float]] = {k: [] for k in (*ids, "vector")}
    for _ in tqdm(range(s.rounds), desc="env rounds"):
        cart = _env_rate(envs["CartPole"], actions["CartPole"], s.steps)
        rates["CartPole"].append(cart)
        for name in ids:
            rate = _env_rate(envs[name], actions[name], s.steps)
            rates[name].append(rate)
            ratios[name].append(rate / cart)
        rate = _vector_rate(venv, vec_actions, s.vector_steps)
        rates["vector"].append(rate)
        ratios["vector"].append(rate / cart)
    result: dict[str, Any] = {
        "settings": asdict(s),
        "make_seconds": _make_seconds(ids["DetBoxSelect"]),
        "steps_per_second": {k: float(np.median(v)) for k, v in rates.items()},
        "ratio_to_cartpole": {k: float(np.median(v)) for k, v in ratios.items()},
        "ratios_per_round": ratios,
    }
    if not args.skip_pg:
        result["pg_iteration"] = _pg_cost(s.preset, s.pg_iterations, s.rounds, s.seed)
    atomic_write_json(args.out, result, indent=1)

    r, sps = result["ratio_to_cartpole"], result["steps_per_second"]
    print(f"\npreset={s.preset}, {ids['DetBoxSelect']} (medians of {s.rounds} rounds)")
    print(f"  make from the cache (fresh process):    {result['make_seconds']:.2f} s   [target: about 1 s]")
    print(f"  CartPole-v1:                            {sps['CartPole']:,.0f} steps/s")
    print(f"  DetBoxSelect (reset + step):            {sps['DetBoxSelect']:,.0f} steps/s = "
          f"{r['DetBoxSelect']:.3f}x CartPole   [target >= {single_target}x]")
    print(f"  DetBoxSelectSeq (reset + stop):         {sps['DetBoxSelectSeq']:,.0f} steps/s = "
          f"{r['DetBoxSelectSeq']:.3f}x")
    print(f"  DetBoxRescore (reset + step):           {sps['DetBoxRescore']:,.0f} steps/s = {r['DetBoxRescore']:.3f}x")
    print(f"  vector env, {s.num_envs} envs:                  {sps['vector']:,.0f} images/s = {r['vector']:.2f}x "
          f"CartPole's single-env steps/s   [target >= {vector_target:g}x]")
    if "pg_iteration" in result:
        pg = result["pg_iteration"]
        print(f"  PG fine-tuning iteration:               {pg['pg_s_per_it']:.3f} s vs standard "
              f"{pg['standard_s_per_it']:.3f} s = {pg['ratio']:.3f}x   [target <= 1.10x] (batch {pg['batch_size']})")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
