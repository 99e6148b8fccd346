"""Does the box-selection reward rank selections as a detector user's metric does? (DetBoxSelect, paper 001's task)

A family of fixed keep-mask policies runs once on every image of the split (``reset(options={"image_index": i})``) in
``DetBoxSelect`` with each reward mode: ``image_ap`` (paper 001's per-image AP, the -v0 reward), ``image_ap`` with
``absent_classes="penalize"``, and ``pool_ap`` (the -v1 reward: the change of COCO AP over a fixed pool of greedy-NMS
outputs when the image's kept boxes replace its NMS boxes). Per policy: the mean reward of each mode beside the COCO
AP of the policy's kept boxes over the same images (``env.evaluate_episodes``), and per mode the Spearman correlation
of mean reward and COCO AP over the policies (scipy). Targets: Spearman(pool_ap) >= 0.9 over all the policies;
keep-all's mean pool reward below greedy NMS's (0 by construction).

The policies: greedy NMS at IoU 0.3 / 0.5 / 0.7 / 0.9, keep-all, random, and score thresholds, top-k and the
ground-truth oracle in both of their readings. Score thresholds and top-k on the raw candidates (the ``threshold``
and ``topk`` agents: duplicates kept) and after greedy NMS (a detector's post-processing knobs, torchvision's
``box_score_thresh`` and ``box_detections_per_img``); the oracle keeping per object its highest-IoU candidate or
its highest-scored one (COCO's matching). The Spearman correlation is printed over all of them and over each
reading (``FAMILIES``): the pool reward is the *marginal* change of dataset AP (one image's selection among the
other images' NMS output), COCO AP over the images the *aggregate* (every image under the policy); they part where a
policy's effect is not additive, as when every image keeps its duplicates.

    python -m benchmarks.box_select_reward                               # default preset, val split (200 images)
    python -m benchmarks.box_select_reward --split train --images 400    # 400 train images (seeded draw)
    python -m benchmarks.box_select_reward --preset test --out /tmp/reward.json   # seconds
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from detgym.data.io import atomic_write_csv, atomic_write_json

#: (policy name, agent name, agent kwargs); "random" keeps each candidate with probability 1/2 (seeded).
POLICIES: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("nms_0.3", "nms", {"iou": 0.3}),
    ("nms_0.5", "nms", {"iou": 0.5}),
    ("nms_0.7", "nms", {"iou": 0.7}),
    ("nms_0.9", "nms", {"iou": 0.9}),
    ("threshold_0.3", "threshold", {"threshold": 0.3}),
    ("threshold_0.5", "threshold", {"threshold": 0.5}),
    ("threshold_0.7", "threshold", {"threshold": 0.7}),
    ("top_3", "topk", {"k": 3}),
    ("top_5", "topk", {"k": 5}),
    ("top_10", "topk", {"k": 10}),
    ("keep_all", "keep_all", {}),
    ("random", "random", {}),
    ("oracle", "oracle", {}),
    ("nms_0.5+score_0.3", "nms", {"score_thresh": 0.3}),
    ("nms_0.5+score_0.5", "nms", {"score_thresh": 0.5}),
    ("nms_0.5+score_0.7", "nms", {"score_thresh": 0.7}),
    ("nms_0.5+top_3", "nms", {"detections_per_img": 3}),
    ("nms_0.5+top_5", "nms", {"detections_per_img": 5}),
    ("nms_0.5+top_10", "nms", {"detections_per_img": 10}),
    ("oracle_score", "oracle", {"match": "score"}),
)
_COMMON = ("nms_0.3", "nms_0.5", "nms_0.7", "nms_0.9", "keep_all", "random")
#: Policy subsets whose Spearman correlation is printed beside the one over all policies: the two readings of score
#: thresholds, top-k and the oracle.
FAMILIES: dict[str, tuple[str, ...]] = {
    "raw": _COMMON + ("threshold_0.3", "threshold_0.5", "threshold_0.7", "top_3", "top_5", "top_10", "oracle"),
    "post_nms": _COMMON + ("nms_0.5+score_0.3", "nms_0.5+score_0.5", "nms_0.5+score_0.7", "nms_0.5+top_3",
                           "nms_0.5+top_5", "nms_0.5+top_10", "oracle_score"),
}
#: Reward modes: name -> env kwargs over the version-1 id.
MODES: dict[str, dict[str, Any]] = {
    "image_ap": {"reward": "image_ap"},
    "image_ap_penalize": {"reward": "image_ap", "absent_classes": "penalize"},
    "pool_ap": {"reward": "pool_ap"},
}


@dataclass
class Settings:
    preset: str = "default"
    split: str = "val"
    #: images evaluated (a seeded draw when the split has more; 0: all)
    images: int = 0
    #: the pool reward's pool size (0: the -v1 default, 200 images or the whole split when smaller) and seed
    pool_size: int = 0
    pool_seed: int = 0
    seed: int = 0


def _env(preset: str, **kwargs: Any) -> Any:
    import gymnasium as gym

    import detgym  # noqa: F401
    from detgym.envs import PRESET_IDS

    suffix = {p: sfx for sfx, p in PRESET_IDS["box_select"][1]}[preset]
    return gym.make(f"DetBoxSelect{suffix}-v1", **kwargs)


def _agent(env: Any, name: str, kwargs: dict[str, Any], seed: int) -> Any:
    from detgym.agents import make_agent

    return make_agent(name, env=env, seed=seed, **kwargs)


def run(s: Settings) -> dict[str, Any]:
    """Every policy on every chosen image in every reward mode: mean rewards, COCO AP, Spearman per mode."""
    from scipy import stats
    from tqdm.auto import tqdm

    from detgym.rollout import run_episode

    envs = {mode: _env(s.preset, split=s.split, pool_size=s.pool_size or None, pool_seed=s.pool_seed, **kw)
            for mode, kw in MODES.items()}
    n = envs["pool_ap"].unwrapped.n_images
    images = np.arange(n) if not s.images or s.images >= n else np.sort(
        np.random.default_rng(s.seed).choice(n, s.images, replace=False))
    rows = []
    for policy, name, kwargs in tqdm(POLICIES, desc="policies", unit="policy"):
        row: dict[str, Any] = {"policy": policy}
        for mode, env in envs.items():
            agent = _agent(env, name, kwargs, s.seed)
            episodes = [run_episode(env, agent, options={"image_index": int(i)}) for i in images]
            row[f"reward_{mode}"] = float(np.mean([e.episode_return for e in episodes]))
            if mode == "pool_ap":
                row["COCO_AP"] = float(env.unwrapped.evaluate_episodes([e.last_info for e in episodes])["AP"])
        rows.append(row)
    groups = {"all": tuple(r["policy"] for r in rows), **FAMILIES}
    by = {r["policy"]: r for r in rows}
    spearman = {group: {mode: float(stats.spearmanr([by[p][f"reward_{mode}"] for p in names],
                                                    [by[p]["COCO_AP"] for p in names]).statistic) for mode in MODES}
                for group, names in groups.items()}
    pool_size = int(envs["pool_ap"].unwrapped.pool.pool.size)
    return {"settings": asdict(s), "n_images": int(images.size), "pool_size": pool_size, "policies": rows,
            "spearman": spearman}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = Settings()
    for name, value in asdict(d).items():
        p.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    p.add_argument("--out", default="runs/box_select_reward.json")
    args = p.parse_args(argv)
    s = Settings(**{k: getattr(args, k) for k in asdict(d)})
    print(f"settings {asdict(s)}")
    t0 = time.perf_counter()
    result = run(s)
    result["wall_s"] = time.perf_counter() - t0
    atomic_write_json(args.out, result, indent=1)
    csv = args.out.rsplit(".", 1)[0] + ".csv"
    atomic_write_csv(csv, result["policies"])

    rows, sp = result["policies"], result["spearman"]
    print(f"\npreset={s.preset} split={s.split} ({result['n_images']} images), pool_size={result['pool_size']} "
          f"pool_seed={s.pool_seed}: mean reward per mode and COCO AP of the kept boxes over the same images")
    width = max(len(r["policy"]) for r in rows)
    print(f"  {'policy':>{width}}  {'image_ap':>9}  {'penalize':>9}  {'pool_ap':>9}  {'COCO AP':>8}")
    for r in rows:
        print(f"  {r['policy']:>{width}}  {r['reward_image_ap']:9.4f}  {r['reward_image_ap_penalize']:9.4f}  "
              f"{r['reward_pool_ap']:+9.4f}  {r['COCO_AP']:8.4f}")
    for group, rho in sp.items():
        target = "   [target: pool_ap >= 0.9]" if group == "all" else ""
        print(f"  {'Spearman ' + group:>{width}}  {rho['image_ap']:9.3f}  {rho['image_ap_penalize']:9.3f}  "
              f"{rho['pool_ap']:9.3f}{target}")
    by = {r["policy"]: r for r in rows}
    print(f"  keep-all vs greedy NMS (pool_ap): {by['keep_all']['reward_pool_ap']:+.4f} vs "
          f"{by['nms_0.5']['reward_pool_ap']:+.4f}   [target: below]; with image_ap: "
          f"{by['keep_all']['reward_image_ap']:.4f} vs {by['nms_0.5']['reward_image_ap']:.4f}")
    print(f"wrote {args.out} and {csv} ({result['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
