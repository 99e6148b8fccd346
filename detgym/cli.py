"""The ``detgym`` command line.

Each top-level verb registers itself with a function ``add_<verb>_command(subparsers)`` listed in
:data:`COMMANDS`; the function adds its sub-parser and sets ``func`` (called with the parsed
arguments, returns an exit code). New verbs (train, find-threshold, predict, ...) are added the same
way, each in its own function, without touching the others.

Implemented here:

``detgym data digits --out DIR [--seed S] [--train N] [--val N] [--test N] [--image-size PX]``
    write the synthetic digits set as COCO JSON + PNG (train/ valid/ test/ + *.json) to DIR.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Callable, Sequence

__all__ = ["COMMANDS", "build_parser", "main"]


def _nonneg_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"{v} is negative; accepted: an integer >= 0")
    return v


def _cmd_data_digits(args: argparse.Namespace) -> int:
    from detgym.data import DigitsConfig, write_digits

    overrides = {
        "train_size": args.train,
        "val_size": args.val,
        "test_size": args.test,
        "image_size": args.image_size,
        "min_digit_height": args.min_height,
        "max_digit_height": args.max_height,
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if "image_size" in overrides and "max_digit_height" not in overrides:
        # The default heights (8-100 px) assume 128 px images: keep them inside a smaller image.
        overrides["max_digit_height"] = float(min(DigitsConfig.max_digit_height, overrides["image_size"] - 4))
        if "min_digit_height" not in overrides:
            overrides["min_digit_height"] = float(min(DigitsConfig.min_digit_height, overrides["max_digit_height"]))
    cfg = DigitsConfig(**overrides)
    t0 = time.perf_counter()
    out = write_digits(args.out, seed=args.seed, config=cfg, overwrite=args.overwrite)
    dt = time.perf_counter() - t0
    print(
        f"wrote digits set (seed {args.seed}, {cfg.image_size} px): train {cfg.train_size}, "
        f"val {cfg.val_size}, test {cfg.test_size} images -> {out} ({dt:.1f} s)"
    )
    return 0


def add_data_command(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Register ``detgym data ...`` (dataset utilities)."""
    data = subparsers.add_parser("data", help="dataset utilities", description="Dataset utilities.")
    data_sub = data.add_subparsers(dest="data_command", metavar="DATASET")
    data_sub.required = True
    dg = data_sub.add_parser(
        "digits",
        help="write the synthetic digits set (COCO JSON + PNG)",
        description="Generate the synthetic SVHN-like digits detection set deterministically from a seed "
        "and write it as train/ valid/ test/ (PNG) + train.json valid.json test.json (COCO).",
    )
    dg.add_argument("--out", required=True, help="output directory (must not exist, or be empty)")
    dg.add_argument("--seed", type=_nonneg_int, default=0, help="generator seed (default 0)")
    dg.add_argument("--train", type=_nonneg_int, default=None, help="training images (default 2000)")
    dg.add_argument("--val", type=_nonneg_int, default=None, help="validation images (default 200)")
    dg.add_argument("--test", type=_nonneg_int, default=None, help="test images (default 200)")
    dg.add_argument("--image-size", type=_nonneg_int, default=None, help="square image side in px (default 128)")
    dg.add_argument("--min-height", type=float, default=None, help="smallest digit height in px (default 8)")
    dg.add_argument("--max-height", type=float, default=None, help="largest digit height in px (default 100, or image size - 4 if smaller)")
    dg.add_argument("--overwrite", action="store_true", help="replace a digits set previously written to --out")
    dg.set_defaults(func=_cmd_data_digits)


#: Registration functions of the top-level verbs, in help order.
COMMANDS: list[Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]] = [add_data_command]


def build_parser() -> argparse.ArgumentParser:
    """The ``detgym`` argument parser with every verb in :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="detgym", description="detgym: reinforcement-learning environments over object-detector training."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for register in COMMANDS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 2 usage or input error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(func(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        print(f"detgym: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
