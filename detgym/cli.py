"""The ``detgym`` command line.

Each top-level verb registers itself with a function ``add_<verb>_command(subparsers)`` listed in
:data:`COMMANDS`; the function adds its sub-parser and sets ``func`` (called with the parsed
arguments, returns an exit code). New verbs (train, find-threshold, predict, ...) are added the same
way, each in its own function, without touching the others.

Implemented here:

``detgym data digits --out DIR [--seed S] [--train N] [--val N] [--test N] [--image-size PX]``
    write the synthetic digits set as COCO JSON + PNG (train/ valid/ test/ + *.json) to DIR.

The digit pipeline of paper 004 (:mod:`detgym.pipeline`):

``detgym train --out RUN_DIR [--data PATH_OR_PRESET --family F --backbone B --res-fpn --epochs N ...]``
    train a detector (epochs, warmup + cosine, layer-wise lr, augmentation off for the last epochs,
    val mAP every epoch, best / last checkpoints); Ctrl-C saves a resumable state (``--resume``).
``detgym find-threshold --run RUN_DIR [--from 0.45 --to 0.9 --step 0.01]``
    sweep the confidence threshold on the val split (mAP and sequence accuracy), store the best.
``detgym predict --run RUN_DIR --images DIR --out DIR [--ann JSON]``
    write pred.json (COCO results) and pred.csv (digit strings at the stored threshold).

The envs and the comparison harness:

``detgym build-table [--preset P --episodes N --out FILE --set FIELD=VALUE]``
    MGRAL's look-up table for DetSampleSelect's ``reward_mode="lookup"`` (papers 002/003, III-F); resumable.
``detgym compare --env ID[,ID...] --agents A[,B...] --seeds N [--workers K --backend ray] --out DIR``
    the suite's main job: agents compared across envs with intervals (:mod:`detgym.compare`); resumable.
``detgym replay DIR/runs.jsonl [--run KEY]``
    re-execute recorded runs and check that their rewards and metrics are reproduced exactly.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Callable, Sequence

from detgym._validation import int_option

__all__ = ["COMMANDS", "build_parser", "main"]

_NONNEG_INT, _POS_INT = int_option(0), int_option(1)


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
    dg.add_argument("--seed", type=_NONNEG_INT, default=0, help="generator seed (default 0)")
    dg.add_argument("--train", type=_NONNEG_INT, default=None, help="training images (default 2000)")
    dg.add_argument("--val", type=_NONNEG_INT, default=None, help="validation images (default 200)")
    dg.add_argument("--test", type=_NONNEG_INT, default=None, help="test images (default 200)")
    dg.add_argument("--image-size", type=_NONNEG_INT, default=None, help="square image side in px (default 128)")
    dg.add_argument("--min-height", type=float, default=None, help="smallest digit height in px (default 8)")
    dg.add_argument("--max-height", type=float, default=None,
                    help="largest digit height in px (default 100, or image size - 4 if smaller)")
    dg.add_argument("--overwrite", action="store_true", help="replace a digits set previously written to --out")
    dg.set_defaults(func=_cmd_data_digits)


# ------------------------------------------------------------------ digit pipeline (paper 004)
def _finite_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if v != v or v in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return v


def _nonneg_float(text: str) -> float:
    v = _finite_float(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"{v:g} is negative; accepted: a number >= 0")
    return v


def _pos_float(text: str) -> float:
    v = _finite_float(text)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"{v:g} is not positive; accepted: a number > 0")
    return v


def _set_threads(args: argparse.Namespace) -> None:
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)


def _add_common(p: argparse.ArgumentParser, *, batch_help: str | None = None) -> None:
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="device (default auto: CUDA if available)")
    p.add_argument("--threads", type=_POS_INT, default=None, help="CPU threads for torch (default: torch's choice)")
    if batch_help:
        p.add_argument("--batch-size", type=_POS_INT, default=None, help=batch_help)


def _cmd_train(args: argparse.Namespace) -> int:
    from detgym.pipeline import TrainOptions, train_run

    _set_threads(args)
    opts = TrainOptions(
        out=args.out, data=args.data, family=args.family, backbone=args.backbone, res_fpn=args.res_fpn,
        image_size=args.image_size, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, min_lr=args.min_lr,
        warmup_epochs=args.warmup_epochs, no_aug_epochs=args.no_aug_epochs, weight_decay=args.weight_decay,
        backbone_lr_mult=args.backbone_lr_mult,
        augment=args.augment, flip=args.flip, pretrained=args.pretrained, finetune=args.finetune, seed=args.seed,
        resume=args.resume, device=args.device, eval_batch_size=args.eval_batch_size, progress=not args.no_progress,
    )
    outcome = train_run(opts)
    if outcome.interrupted:
        print(f"detgym: {outcome.message}", file=sys.stderr)
        return 130
    print(outcome.message)
    return 0


def add_train_command(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Register ``detgym train`` (paper 004's training: model.py)."""
    from detgym.models import BACKBONES, FAMILIES

    p = subparsers.add_parser(
        "train", help="train a detector into a run directory (paper 004 pipeline)",
        description="Train a detector on a COCO-layout dataset (train/ valid/ + train.json valid.json) or the "
        "embedded digits set, as paper 004: warmup + cosine to --min-lr, backbone at 0.5x lr (trained backbones), "
        "augmentation (ColorJitter, SVHN colour policy, affine) off for the last --no-aug-epochs, val mAP every epoch, "
        "best.pt and last.pt, TensorBoard logs and PNG plots in --out. Unset options come from the detector's recipe. "
        "Ctrl-C saves last.pt; continue with --resume.",
    )
    p.add_argument("--out", required=True, metavar="RUN_DIR",
                   help="run directory (new or empty; with --resume: an existing run)")
    p.add_argument("--data", default=None, metavar="PATH_OR_PRESET",
                   help="'digits' (default: the embedded synthetic set) or a COCO-layout / VOC directory")
    p.add_argument("--family", choices=FAMILIES, default=None,
                   help="detector family (default fasterrcnn, as paper 004)")
    p.add_argument("--backbone", choices=BACKBONES, default=None, help="backbone (default tiny: CPU-trainable)")
    p.add_argument("--res-fpn", action="store_true", default=None,
                   help="residual block after every FPN output (paper 004)")
    p.add_argument("--pretrained", choices=("coco", "imagenet"), default=None,
                   help="start from torchvision's COCO detector or ImageNet backbone weights (downloads; not for tiny)")
    p.add_argument("--finetune", default=None, metavar="CKPT",
                   help="start from the weights of this checkpoint (e.g. RUN/best.pt)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in --out from its last.pt")
    p.add_argument("--epochs", type=_POS_INT, default=None, help="epochs (default: the recipe's iterations in epochs)")
    p.add_argument("--batch-size", type=_POS_INT, default=None, help="training batch size (default: the recipe's)")
    p.add_argument("--lr", type=_pos_float, default=None, help="initial (head) learning rate (default: the recipe's)")
    p.add_argument("--min-lr", type=_nonneg_float, default=None,
                   help="learning rate at the end of the cosine (default: recipe)")
    p.add_argument("--warmup-epochs", type=_nonneg_float, default=None,
                   help="linear warmup length in epochs (fractions allowed)")
    p.add_argument("--no-aug-epochs", type=_NONNEG_INT, default=None,
                   help="last epochs trained without augmentation (default: 30%%)")
    p.add_argument("--no-augment", dest="augment", action="store_false", default=None, help="no augmentation at all")
    p.add_argument("--flip", action="store_true", default=None,
                   help="also flip horizontally (off for digits by default)")
    p.add_argument("--weight-decay", type=_nonneg_float, default=None, help="weight decay (default: the recipe's)")
    p.add_argument("--backbone-lr-mult", type=_nonneg_float, default=None,
                   help="backbone learning rate as a multiple of --lr (default: 0.5 as paper 004 for --pretrained / "
                   "--finetune backbones, 1 for a backbone trained from scratch)")
    p.add_argument("--image-size", type=_POS_INT, default=None,
                   help="detector input size in px (default: recipe, 128 for tiny)")
    p.add_argument("--seed", type=_NONNEG_INT, default=None,
                   help="seed of initialisation, batch order, augmentation (default 0)")
    p.add_argument("--eval-batch-size", type=_POS_INT, default=None, help="batch size of validation")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_common(p)
    p.set_defaults(func=_cmd_train)


def _cmd_find_threshold(args: argparse.Namespace) -> int:
    from detgym.pipeline import find_threshold

    _set_threads(args)
    find_threshold(args.run, args.start, args.stop, args.step, checkpoint=args.checkpoint, device=args.device,
                   batch_size=args.batch_size)
    return 0


def add_find_threshold_command(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Register ``detgym find-threshold`` (paper 004's Find_threshold.py)."""
    p = subparsers.add_parser(
        "find-threshold", help="sweep the confidence threshold on the val split, store the best in the run",
        description="Run the trained detector over the run's val split once, then for every threshold from --from "
        "to --to (inclusive) by --step print the COCO mAP of the detections scoring >= it and the sequence accuracy "
        "of their left-to-right digit strings; store the most accurate threshold (ties: higher mAP) in "
        "RUN_DIR/threshold.json.",
    )
    p.add_argument("--run", required=True, metavar="RUN_DIR", help="run directory written by `detgym train`")
    p.add_argument("--from", dest="start", type=_finite_float, default=0.45, help="first threshold (default 0.45)")
    p.add_argument("--to", dest="stop", type=_finite_float, default=0.9, help="last threshold, inclusive (default 0.9)")
    p.add_argument("--step", type=_finite_float, default=0.01, help="threshold step (default 0.01)")
    p.add_argument("--checkpoint", default="best", help="best (default), last, or a checkpoint file")
    _add_common(p, batch_help="inference batch size (default: the run's eval batch size)")
    p.set_defaults(func=_cmd_find_threshold)


def _cmd_predict(args: argparse.Namespace) -> int:
    from detgym.pipeline import predict_directory

    _set_threads(args)
    predict_directory(args.run, args.images, args.out, ann=args.ann, checkpoint=args.checkpoint,
                      threshold=args.threshold, device=args.device, batch_size=args.batch_size or 8,
                      num_workers=args.num_workers, progress=not args.no_progress)
    return 0


def add_predict_command(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Register ``detgym predict`` (paper 004's inference.py)."""
    p = subparsers.add_parser(
        "predict", help="write pred.json and pred.csv for an image directory",
        description="Detect digits in every PNG / JPG of --images with the run's best checkpoint and write "
        "--out/pred.json (COCO results: image_id, bbox [x, y, w, h], score, category_id) and --out/pred.csv "
        "(image_id,pred_label: the digits read left to right at the run's stored threshold, -1 when none). "
        "Image ids come from --ann (a COCO JSON listing the images), else from integer file names (1.png -> 1), "
        "else 1..N in file-name order.",
    )
    p.add_argument("--run", required=True, metavar="RUN_DIR", help="run directory written by `detgym train`")
    p.add_argument("--images", required=True, metavar="DIR", help="directory of PNG / JPG images")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory for pred.json and pred.csv")
    p.add_argument("--ann", default=None, metavar="JSON", help="COCO JSON whose 'images' give the image ids")
    p.add_argument("--checkpoint", default="best", help="best (default), last, or a checkpoint file")
    p.add_argument("--threshold", type=_finite_float, default=None,
                   help="score threshold for pred.csv (default: the one find-threshold stored, else 0.5)")
    p.add_argument("--num-workers", type=_NONNEG_INT, default=0, help="threads decoding images ahead (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_common(p, batch_help="inference batch size (default 8)")
    p.set_defaults(func=_cmd_predict)


# ------------------------------------------------------------------ agent comparison (detgym.compare.cli)
def add_compare_command(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Register ``detgym compare`` (the grid env x agent x seed, with intervals; :mod:`detgym.compare.cli`)."""
    from detgym.compare import cli as compare

    p = subparsers.add_parser(
        "compare", help="compare agents on envs over seeds: table with 95%% intervals, plots, replayable runs",
        description=compare.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    compare.add_arguments(p)
    p.set_defaults(func=compare.run_compare)


def add_replay_command(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Register ``detgym replay`` (re-execute recorded runs, check rewards; :mod:`detgym.compare.reproduce`)."""
    from detgym.compare import cli as compare

    p = subparsers.add_parser(
        "replay", help="re-execute the recorded actions of a comparison's runs and check the rewards",
        description="Re-execute every evaluated episode of the runs in RUNS_JSONL (a fresh env from the recorded "
        "configuration, reset with the recorded seed, the recorded actions) and report whether the rewards and final "
        "metrics are reproduced exactly. Exit code 0 when every run is, 1 otherwise.",
    )
    compare.add_replay_arguments(p)
    p.set_defaults(func=compare.run_replay)


# ------------------------------------------------------------------ look-up table (DetSampleSelect, MGRAL III-F)
def _preset_override(text: str) -> tuple[str, object]:
    import json

    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r} is not FIELD=VALUE (e.g. cycles=3, candidates=null)")
    try:
        return name, json.loads(value)
    except ValueError:
        return name, value  # a bare string such as training=retrain


def _cmd_build_table(args: argparse.Namespace) -> int:
    from detgym.envs.sample_select import build_table

    overrides = dict(args.set or [])
    for name, value in overrides.items():  # JSON lists are tuples in the presets (initial_sets)
        if isinstance(value, list):
            overrides[name] = tuple(tuple(v) if isinstance(v, list) else v for v in value)
    t0 = time.perf_counter()
    table = build_table(args.preset, episodes=args.episodes, path=args.out, seed=args.seed,
                        progress=not args.quiet, **overrides)
    counts = table.counts()
    per_cycle = ", ".join(f"set {s} cycle {c}: {n}" for (s, c), n in counts.items())
    print(f"lookup table {table.path}: {len(table)} records ({per_cycle or 'none'}), "
          f"{len(table.done)} build episodes, {time.perf_counter() - t0:.1f} s")
    return 0


def add_build_table_command(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Register ``detgym build-table`` (:func:`detgym.envs.sample_select.build_table`)."""
    p = subparsers.add_parser(
        "build-table", help="build (or resume) the look-up table of a DetSampleSelect preset (MGRAL III-F)",
        description="Run random-selection active-learning episodes of a DetSampleSelect preset with real training and "
        "record, for every cycle, the selection's feature summary and the measured val mAP. The table is saved "
        "atomically after each episode; running the command again resumes (finished episodes are skipped). "
        "Look-up envs (reward_mode=lookup) of the same configuration find it at the default path.",
    )
    p.add_argument("--preset", default="default", help="DetSampleSelect preset (default, voc, test)")
    p.add_argument("--episodes", type=_POS_INT, default=20, help="build episodes = records per cycle (default 20)")
    p.add_argument("--out", default=None, help="table file (default: the preset's, under $DETGYM_CACHE/sample_select)")
    p.add_argument("--seed", type=_NONNEG_INT, default=0, help="base seed of the random selections (default 0)")
    p.add_argument("--set", type=_preset_override, action="append", metavar="FIELD=VALUE",
                   help="override a preset field, VALUE as JSON (repeatable), e.g. --set cycles=3")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_build_table)


def _seed_list(text: str) -> list[int]:
    """``0,1,2`` or a range ``0-4``."""
    try:
        if "-" in text:
            first, last = (int(x) for x in text.split("-"))
            seeds = list(range(first, last + 1))
        else:
            seeds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds must be comma-separated integers or a range A-B, got {text!r}")
    if not seeds or min(seeds) < 0:
        raise argparse.ArgumentTypeError(f"--seeds must name seeds >= 0, got {text!r}")
    return list(dict.fromkeys(seeds))


def _cmd_build_tree(args: argparse.Namespace) -> int:
    import json

    from detgym.envs.loss_weight.tree import TreeSpec, build_tree, tree_preset

    try:
        env_kwargs = json.loads(args.env_kwargs) if args.env_kwargs else {}
    except ValueError as err:
        raise ValueError(f"--env-kwargs is not valid JSON ({err})") from None
    if not isinstance(env_kwargs, dict):
        raise ValueError(f"--env-kwargs must be a JSON object, got {args.env_kwargs!r}")
    spec = TreeSpec(tree_preset(args.env), args.decisions, args.threads, env_kwargs)
    report = build_tree(spec, args.seeds, out=args.out, workers=args.workers, backend=args.backend,
                        ray_address=args.ray_address, progress=not args.quiet)
    table = report.table
    leaves = 4**spec.decisions
    print(f"tree table {report.path}: complete seeds {table.complete_seeds()} ({spec.n_nodes()} nodes, {leaves} "
          f"schedules each); {report.computed} node(s) trained now, {report.cpu_s / 60:.1f} CPU-min, "
          f"{report.wall_s / 60:.1f} min wall ({args.workers} worker(s))")
    return 130 if report.interrupted else 0


def add_build_tree_command(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Register ``detgym build-tree`` (:func:`detgym.envs.loss_weight.tree.build_tree`)."""
    p = subparsers.add_parser(
        "build-tree", help="build (or extend) the tree of every weighting schedule of a DetLossWeight preset",
        description="Train every schedule of T decisions of DetLossWeight's four weighting schemes, one seed's "
        "tree at a time (a node continues its parent's exact state), evaluate val COCO AP at every node and write "
        "the table DetLossWeightTabular-v0 reads. Resumable after any kill: finished nodes are kept in the table "
        "and the cache and never trained again. A node costs 1/(T+1) of a training plus an evaluation (the CPU "
        "default: about 45 CPU-s; T = 3 is 85 nodes per seed, about 70 CPU-min; T = 4 is 341 nodes, about 4.5 "
        "CPU-hours per seed).",
    )
    p.add_argument("--env", default="DetLossWeight-v0", help="DetLossWeight env id whose preset the tree trains "
                   "(default DetLossWeight-v0)")
    p.add_argument("--decisions", type=_POS_INT, default=3, help="decisions T per episode (default 3)")
    p.add_argument("--seeds", type=_seed_list, default=[0, 1, 2], help="episode seeds, e.g. 0,1,2 or 0-9 "
                   "(default 0,1,2)")
    p.add_argument("--workers", type=_POS_INT, default=1, help="parallel nodes (default 1)")
    p.add_argument("--backend", choices=("process", "ray"), default="process", help="worker processes or Ray tasks")
    p.add_argument("--ray-address", default=None, help="Ray cluster (--backend ray; default: a local instance)")
    p.add_argument("--threads", type=_POS_INT, default=1, help="torch threads per node (default 1; results depend "
                   "on it, so a tree is keyed by it)")
    p.add_argument("--env-kwargs", default=None, metavar="JSON",
                   help="constructor arguments of the env over its preset (not alpha or reward)")
    p.add_argument("--out", default=None, help="table file (default: the shipped table of the preset in the "
                   "package, which the tabular env reads)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_build_tree)


#: Registration functions of the top-level verbs, in help order.
COMMANDS: list[Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]] = [
    add_data_command,
    add_train_command,
    add_find_threshold_command,
    add_predict_command,
    add_compare_command,
    add_replay_command,
    add_build_table_command,
    add_build_tree_command,
]


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
