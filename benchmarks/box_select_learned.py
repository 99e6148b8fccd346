"""Learned box selectors against greedy NMS, soft-NMS and the ground-truth oracle (paper 001's setting as an env).

SB3 PPO learns on ``DetBoxSelect-v0`` (keep-mask) and ``DetBoxRescore-v0`` (new scores), sb3-contrib MaskablePPO
on ``DetBoxSelectSeq-v0`` (one box per step, action masks), each out of the box from ``detgym.agents.make_agent`` on the
train split. Every agent, learned or heuristic, is then run once on every image of the test split
(``detgym.rollout.run_episode`` with ``options={"image_index": i}``, deterministic policies), which gives two
figures: the mean per-image AP (the env's return) and the COCO AP / AP50 / AP75 of the kept detections of the
whole split (``detgym.metrics.coco_evaluate``). Results go to a JSON file after each agent (atomic; finished
(agent, seed) pairs are skipped on restart), the summary to CSV and PNG.

    python -m benchmarks.box_select_learned                                   # default preset, 20k steps, seed 0
    python -m benchmarks.box_select_learned --absent-classes penalize --out runs/box_select_learned_penalize.json
    python -m benchmarks.box_select_learned --preset test --timesteps 256 --out /tmp/learned.json   # seconds
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detgym.compare.plots import grouped_bars
from detgym.data.io import atomic_write_csv, atomic_write_json

#: (row name, agent name, env variant, learns)
AGENTS: tuple[tuple[str, str, str, bool], ...] = (
    ("greedy NMS", "nms", "DetBoxSelect", False),
    ("soft-NMS linear", "soft_nms_linear", "DetBoxRescore", False),
    ("soft-NMS Gaussian", "soft_nms_gaussian", "DetBoxRescore", False),
    ("keep all", "keep_all", "DetBoxSelect", False),
    ("PPO keep-mask", "ppo", "DetBoxSelect", True),
    ("PPO rescore", "ppo", "DetBoxRescore", True),
    ("MaskablePPO sequential", "maskable_ppo", "DetBoxSelectSeq", True),
    ("oracle (sees the GT)", "oracle", "DetBoxSelect", False),
)


@dataclass
class Settings:
    preset: str = "default"
    seeds: list[int] = field(default_factory=lambda: [0])
    #: SB3 timesteps per learned agent (env steps on the train split)
    timesteps: int = 20_000
    train_split: str = "train"
    eval_split: str = "test"
    #: the learners' reward: pycocotools' per-image AP ("ignore", paper 001) or with absent classes penalised
    absent_classes: str = "ignore"


def _env(variant: str, preset: str, split: str, **kwargs: Any) -> Any:
    import gymnasium as gym

    import detgym  # noqa: F401
    from detgym.envs import PRESET_IDS

    suffix = {p: sfx for sfx, p in PRESET_IDS["box_select"][0]}[preset]
    return gym.make(f"{variant}{suffix}-v0", split=split, **kwargs)


def evaluate(env: Any, agent: Any) -> dict[str, Any]:
    """Run ``agent`` once on every image of ``env``'s split: mean per-image return and the split's COCO stats."""
    from detgym.rollout import run_episode

    base = env.unwrapped
    episodes = [run_episode(env, agent, options={"image_index": i}) for i in range(base.n_images)]
    returns = [episode.episode_return for episode in episodes]
    stats = base.evaluate_episodes([episode.last_info for episode in episodes])
    return {"mean_image_ap": float(np.mean(returns)), "AP": stats["AP"], "AP50": stats["AP50"],
            "AP75": stats["AP75"], "n_images": base.n_images}


def run_one(settings: dict[str, Any], row: str, seed: int) -> dict[str, Any]:
    from detgym.agents import make_agent

    s = Settings(**settings)
    _, name, variant, learns = next(a for a in AGENTS if a[0] == row)
    t0 = time.perf_counter()
    eval_env = _env(variant, s.preset, s.eval_split)
    if learns:
        agent = make_agent(name, env=_env(variant, s.preset, s.train_split, absent_classes=s.absent_classes),
                           seed=seed)
        agent.learn(s.timesteps)
    else:
        agent = make_agent(name, env=eval_env, seed=seed)
    learn_s = time.perf_counter() - t0
    result = evaluate(eval_env, agent)
    return {"row": row, "agent": name, "variant": variant, "seed": seed, **result, "learn_s": learn_s,
            "wall_s": time.perf_counter() - t0}


def summarize(runs: list[dict], seeds: list[int]) -> list[dict]:
    rows = []
    nms = {r["seed"]: r for r in runs if r["row"] == "greedy NMS"}
    for row, name, variant, learns in AGENTS:
        mine = [r for r in runs if r["row"] == row and r["seed"] in seeds]
        if not mine:
            continue
        out = {"row": row, "agent": name, "env": variant, "n_seeds": len(mine)}
        for key in ("mean_image_ap", "AP", "AP50", "AP75"):
            vals = np.array([r[key] for r in mine])
            out[key] = float(vals.mean())
            out[f"{key}_sd"] = float(vals.std(ddof=1)) if vals.size > 1 else 0.0
        paired = [r["AP"] - nms[r["seed"]]["AP"] for r in mine if r["seed"] in nms]
        out["dAP_vs_nms"] = float(np.mean(paired)) if paired else float("nan")
        out["learn_s"] = float(np.mean([r["learn_s"] for r in mine]))
        rows.append(out)
    return rows


def plot(path: Path, rows: list[dict], title: str) -> None:
    series = {label: ([r[key] for r in rows], [r[f"{key}_sd"] for r in rows])
              for key, label in (("AP", "COCO AP (split)"), ("mean_image_ap", "mean per-image AP"))}
    grouped_bars(path, [r["row"] for r in rows], series, title, width=1.3, rotation=25, ha="right", fontsize=8)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = Settings()
    p.add_argument("--preset", default=d.preset)
    p.add_argument("--seeds", nargs="+", type=int, default=d.seeds)
    p.add_argument("--timesteps", type=int, default=d.timesteps)
    p.add_argument("--train-split", default=d.train_split)
    p.add_argument("--eval-split", default=d.eval_split)
    p.add_argument("--absent-classes", default=d.absent_classes, choices=("ignore", "penalize"),
                   help="reward of the learners (evaluation is the same either way)")
    p.add_argument("--out", default="runs/box_select_learned.json")
    args = p.parse_args(argv)

    import torch
    from tqdm.auto import tqdm

    torch.set_num_threads(1)  # small MLPs: one thread each, the machine is shared
    s = Settings(args.preset, list(args.seeds), args.timesteps, args.train_split, args.eval_split, args.absent_classes)
    key = {k: v for k, v in asdict(s).items() if k != "seeds"}
    out = Path(args.out)
    saved = json.loads(out.read_text()) if out.exists() else {}
    if saved and saved.get("settings") != key:
        raise SystemExit(f"{out} holds runs of other settings {saved.get('settings')}; choose another --out")
    runs = {f"{r['row']}|{r['seed']}": r for r in saved.get("runs", [])}
    todo = [(row, seed) for seed in s.seeds for row, *_ in AGENTS if f"{row}|{seed}" not in runs]
    _env("DetBoxSelect", s.preset, s.train_split)  # builds the candidate cache once, before anything is timed
    print(f"{len(runs)} runs in {out}, {len(todo)} to do; settings {key}")
    for row, seed in tqdm(todo, desc="agents", unit="run"):
        record = run_one(asdict(s), row, seed)
        runs[f"{row}|{seed}"] = record
        atomic_write_json(out, {"settings": key, "runs": list(runs.values())}, indent=1)

    rows = summarize(list(runs.values()), s.seeds)
    print(f"\npreset={s.preset} seeds={s.seeds} timesteps={s.timesteps} eval split={s.eval_split} "
          f"learners' reward absent_classes={s.absent_classes} "
          f"({rows[0]['n_seeds'] if rows else 0} seed(s); COCO stats over the split's kept detections)")
    for r in rows:
        print(f"  {r['row']:>24} ({r['env']:>15})  AP {r['AP']:.4f}  AP50 {r['AP50']:.4f}  AP75 {r['AP75']:.4f}  "
              f"mean image AP {r['mean_image_ap']:.4f}  dAP vs NMS {r['dAP_vs_nms']:+.4f}  learn {r['learn_s']:.0f} s")
    csv_path, png_path = out.with_suffix(".summary.csv"), out.with_suffix(".summary.png")
    if rows:
        atomic_write_csv(csv_path, rows)
        plot(png_path, rows, f"box selectors on {s.eval_split} ({s.preset}, {s.timesteps} SB3 steps)")
    print(f"wrote {out}, {csv_path} and {png_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
