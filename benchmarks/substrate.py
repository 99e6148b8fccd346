"""Substrate benchmark: train the tiny detectors on the embedded digits set and report speed and COCO AP.

For each recipe it prints
  * the Trainer's throughput against a plain hand-written torchvision loop (same model, same batches,
    ``sum(model(images, targets).values()).backward()``), measured side by side in alternating blocks;
  * iterations/s and images/s of the full training run, its wall time, and val AP / AP50 / AR100.

    python -m benchmarks.substrate                         # the default recipe (fcos-tiny)
    python -m benchmarks.substrate --recipe all            # every tiny recipe
    python -m benchmarks.substrate --recipe retinanet-tiny --iterations 300

Results are also written (atomically) to ``runs/substrate/<recipe>.json``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from detgym.data import digits_dataset
from detgym.data.io import atomic_write_json
from detgym.models import as_torchvision
from detgym.train import RECIPES, Trainer, get_recipe
from detgym.train.trainer import resolve_device

DEFAULT_RECIPE = "fcos-tiny"
TINY_RECIPES = [name for name in RECIPES if name.endswith("-tiny")]


def plain_loop_ratio(recipe_name: str, train, *, iters: int, blocks: int, device: torch.device) -> dict[str, float]:
    """Seconds per iteration of the Trainer and of a plain torchvision loop over the same model and batches."""
    recipe = get_recipe(recipe_name)
    torch.manual_seed(0)
    model = recipe.build_model()
    trainer = Trainer(model, train, config=recipe.train.replace(device=str(device)))
    plain = as_torchvision(model).to(device).train()
    optimizer = torch.optim.AdamW(plain.parameters(), lr=recipe.train.lr, weight_decay=recipe.train.weight_decay)
    batch = recipe.train.batch_size

    def plain_iteration(i: int) -> None:
        images, targets = train.batch([(i * batch + k) % len(train) for k in range(batch)], device=device)
        loss = sum(plain(images, targets).values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if recipe.train.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(plain.parameters(), recipe.train.grad_clip)
        optimizer.step()
        loss.item()

    trainer.step(), plain_iteration(0)  # warm up both
    t_trainer = t_plain = 0.0
    for b in range(blocks):
        start = time.perf_counter()
        for _ in range(iters):
            trainer.step()
        t_trainer += time.perf_counter() - start
        start = time.perf_counter()
        for i in range(iters):
            plain_iteration(b * iters + i)
        t_plain += time.perf_counter() - start
    n = iters * blocks
    return {"trainer_s_per_it": t_trainer / n, "plain_s_per_it": t_plain / n, "ratio": t_trainer / t_plain}


def train_and_evaluate(recipe_name: str, train, val, *, iterations: int | None, device: torch.device) -> dict:
    recipe = get_recipe(recipe_name)
    config = recipe.train.replace(device=str(device))
    if iterations is not None:
        config = config.replace(iterations=iterations)
    torch.manual_seed(config.seed)
    trainer = Trainer(recipe.build_model(), train, val, config, log_dir=Path("runs/substrate/tb") / recipe_name)
    start = time.perf_counter()
    trainer.fit()
    seconds = time.perf_counter() - start
    stats = trainer.evaluate()
    trainer.close()
    return {
        "iterations": config.iterations,
        "train_seconds": seconds,
        "iterations_per_s": config.iterations / seconds,
        "images_per_s": config.iterations * config.batch_size / seconds,
        **stats,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", default=DEFAULT_RECIPE, help=f"one of {TINY_RECIPES} or 'all'")
    parser.add_argument("--iterations", type=int, default=None, help="override the recipe's schedule length")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--overhead-iters", type=int, default=10, help="iterations per timing block (0: skip)")
    parser.add_argument("--overhead-blocks", type=int, default=3)
    args = parser.parse_args(argv)
    names = TINY_RECIPES if args.recipe == "all" else [args.recipe]
    for name in names:
        get_recipe(name)  # fail early on a typo
    device = resolve_device(args.device)
    train, val = digits_dataset("train"), digits_dataset("val")
    print(f"digits: {len(train)} train / {len(val)} val images, device {device}, "
          f"torch threads {torch.get_num_threads()}")
    for name in names:
        row: dict = {"recipe": name, "device": str(device)}
        if args.overhead_iters > 0:
            row.update(plain_loop_ratio(name, train, iters=args.overhead_iters, blocks=args.overhead_blocks,
                                        device=device))
            print(f"[{name}] trainer {row['trainer_s_per_it'] * 1e3:.1f} ms/it vs plain torchvision loop "
                  f"{row['plain_s_per_it'] * 1e3:.1f} ms/it: ratio {row['ratio']:.3f}")
        row.update(train_and_evaluate(name, train, val, iterations=args.iterations, device=device))
        print(f"[{name}] {row['iterations']} it in {row['train_seconds']:.0f} s: {row['iterations_per_s']:.2f} it/s, "
              f"{row['images_per_s']:.1f} img/s; val AP {row['AP']:.3f} AP50 {row['AP50']:.3f} "
              f"AR100 {row['AR100']:.3f}")
        atomic_write_json(Path("runs/substrate") / f"{name}.json", row, indent=2)


if __name__ == "__main__":
    main()
