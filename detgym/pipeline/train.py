"""``detgym train``: the epoch loop of paper 004 on top of :class:`detgym.train.Trainer`.

Paper 004 (section 2.3) trains Faster R-CNN for N epochs with a linear warmup over the first epochs
and cosine annealing to a minimum learning rate, the backbone at 0.5x the head's learning rate, data
augmentation switched off for the last epochs, and validation mAP every epoch (best weights kept).
Here:

* one epoch = ``ceil(len(train) / batch_size)`` Trainer iterations (the Trainer draws seeded random
  permutations; a batch may straddle two permutations, so an "epoch" is one pass worth of images);
* the learning-rate schedule is the Trainer's warmup + cosine in iterations: ``warmup_iters =
  round(warmup_epochs * iters_per_epoch)``, cosine from ``lr`` to ``min_lr`` at the last iteration;
  ``TrainConfig.backbone_lr_mult`` = 0.5 gives the layer-wise learning rate when the backbone starts from
  trained weights (``--pretrained`` / ``--finetune``), the paper's case; a backbone trained from scratch
  (the tiny default) learns at the head's rate (x1), which is what reaches the learning target on the
  CPU (``--backbone-lr-mult`` sets it explicitly);
* augmentation (:class:`detgym.data.augment.DetectionAugment`) runs in the epochs before the last
  ``no_aug_epochs``;
* after every epoch: val COCO stats (``coco_evaluate`` of the detections), val sequence accuracy at
  threshold 0.5 (the paper's default during training), val loss per term (train-mode forward without
  gradients, BatchNorm statistics frozen, fixed sampling seed, so it neither changes the model nor the
  run's random state), ``last.pt`` (full resume state) and, when val AP improved, ``best.pt``; history
  JSON, TensorBoard scalars and PNG plots;
* Ctrl-C finishes the running iteration, saves ``last.pt`` with the position inside the epoch and
  returns (the CLI exits with code 130 and prints how to resume); ``--resume`` continues from it, with
  the same result as an uninterrupted run on the CPU (the Trainer's state includes its random state).

Defaults come from the detector's recipe (:func:`detgym.train.get_recipe`, ``"<family>-<backbone>"``):
batch size, lr, weight decay, optimizer, and the epochs that make up the recipe's iteration count
(clamped to 5..50: on the digits set the tiny Faster R-CNN needs about 4-5 epochs to reach val AP50 0.5),
warmup (capped at a fifth of the run) and min lr (``lr x min_lr_ratio``);
``no_aug_epochs`` defaults to 30 % of the epochs (paper 004: 15 of 50).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from .run import RunConfig, RunDir, build_run_model, load_model_weights
from .strings import DetectionTable, ground_truth_strings

__all__ = ["TrainOptions", "TrainOutcome", "resolve_run_config", "train_run", "validation_loss"]

#: Options that may be given again with ``--resume`` (they do not change what is computed).
RESUME_OK = {"out", "resume", "device", "progress", "eval_batch_size", "data"}
#: Share of the epochs without augmentation when --no-aug-epochs is not given (paper 004: 15 of 50).
NO_AUG_SHARE = 0.3
#: Largest default warmup as a share of the epochs, and the default epoch range.
WARMUP_SHARE_MAX = 0.2
EPOCH_RANGE = (5, 50)
#: Layer-wise learning rate of paper 004: the backbone trains at this multiple of the head's rate.
BACKBONE_LR_MULT = 0.5
#: Threshold of the per-epoch sequence accuracy (paper 004 evaluates at 0.5 while training).
TRAIN_EVAL_THRESHOLD = 0.5


@dataclass
class TrainOptions:
    """What ``detgym train`` was asked for; ``None`` means "the default" (resolved by :func:`resolve_run_config`)."""

    out: str
    data: str | None = None
    family: str | None = None
    backbone: str | None = None
    res_fpn: bool | None = None
    image_size: int | None = None
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    min_lr: float | None = None
    warmup_epochs: float | None = None
    no_aug_epochs: int | None = None
    weight_decay: float | None = None
    backbone_lr_mult: float | None = None
    augment: bool | None = None
    flip: bool | None = None
    pretrained: str | None = None
    finetune: str | None = None
    seed: int | None = None
    resume: bool = False
    device: str = "auto"
    eval_batch_size: int | None = None
    progress: bool = True


@dataclass
class TrainOutcome:
    """What :func:`train_run` returns."""

    run: RunDir
    config: RunConfig
    history: list[dict[str, Any]]
    best_epoch: int | None
    best_stats: dict[str, float] | None
    interrupted: bool = False
    message: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------- configuration
def _recipe_for(family: str, backbone: str, res_fpn: bool) -> tuple[Any, str | None]:
    from detgym.train import RECIPES, Recipe, get_recipe

    names = ([f"{family}-{backbone}-resfpn"] if res_fpn else []) + [f"{family}-{backbone}", f"{family}-{backbone}-resfpn"]
    for name in names:
        if name in RECIPES:
            return get_recipe(name), name
    return Recipe(family, backbone, 128 if backbone == "tiny" else None), None


def _load_splits(data: str) -> tuple[Any, Any]:
    from detgym.data import load_dataset

    train = load_dataset(data, "train")
    val = load_dataset(data, "val")
    if len(train) == 0:
        raise ValueError(f"--data {data}: the train split is empty")
    if len(val) == 0:
        raise ValueError(f"--data {data}: the val split is empty (validation mAP is computed every epoch)")
    if [dict(c) for c in train.categories] != [dict(c) for c in val.categories]:
        raise ValueError(f"--data {data}: the train and val splits list different categories")
    return train, val


def resolve_run_config(opts: TrainOptions, train_set: Any) -> RunConfig:
    """Fill in every default of a new run (see the module docstring) and validate the combination."""
    from detgym.data.augment import AugmentConfig
    from detgym.models import BACKBONES, FAMILIES

    meta_cfg: dict[str, Any] = {}
    if opts.finetune is not None:
        # The checkpoint's own run config names its architecture: a fine-tune needs the same one.
        from detgym.train import load_checkpoint_file

        p = Path(opts.finetune).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"--finetune checkpoint not found: {p}")
        try:
            meta_cfg = dict(load_checkpoint_file(p).get("pipeline", {}).get("config", {}) or {})
        except ValueError:
            meta_cfg = {}
    family = opts.family or meta_cfg.get("family") or "fasterrcnn"
    backbone = opts.backbone or meta_cfg.get("backbone") or "tiny"
    res_fpn = bool(opts.res_fpn if opts.res_fpn is not None else meta_cfg.get("res_fpn", False))
    if family not in FAMILIES:
        raise ValueError(f"--family {family!r} is not supported; accepted: {', '.join(FAMILIES)}")
    if backbone not in BACKBONES:
        raise ValueError(f"--backbone {backbone!r} is not supported; accepted: {', '.join(BACKBONES)}")
    recipe, _ = _recipe_for(family, backbone, res_fpn)
    rt = recipe.train
    image_size = opts.image_size if opts.image_size is not None else meta_cfg.get("image_size", recipe.image_size)
    batch = int(opts.batch_size or rt.batch_size)
    ipe = math.ceil(len(train_set) / batch)
    epochs = opts.epochs
    if epochs is None:
        epochs = int(min(max(round(rt.iterations / ipe), EPOCH_RANGE[0]), EPOCH_RANGE[1]))
    lr = float(opts.lr if opts.lr is not None else rt.lr)
    min_lr = float(opts.min_lr if opts.min_lr is not None else lr * rt.min_lr_ratio)
    warmup = opts.warmup_epochs
    if warmup is None:
        warmup = min(rt.warmup_iters / ipe, WARMUP_SHARE_MAX * epochs)
    no_aug = opts.no_aug_epochs if opts.no_aug_epochs is not None else min(epochs, math.ceil(NO_AUG_SHARE * epochs))
    for name, val, ok, accepted in (
        ("--epochs", epochs, epochs >= 1, "an integer >= 1"),
        ("--batch-size", batch, batch >= 1, "an integer >= 1"),
        ("--lr", lr, lr > 0 and math.isfinite(lr), "a number > 0"),
        ("--min-lr", min_lr, 0 <= min_lr <= lr, f"a number in [0, --lr = {lr:g}]"),
        ("--warmup-epochs", warmup, 0 <= warmup <= epochs, f"a number in [0, --epochs = {epochs}]"),
        ("--no-aug-epochs", no_aug, 0 <= no_aug <= epochs, f"an integer in [0, --epochs = {epochs}]"),
    ):
        if not ok:
            raise ValueError(f"{name} = {val!r} is invalid; accepted: {accepted}")
    if opts.backbone_lr_mult is not None and not (opts.backbone_lr_mult >= 0 and math.isfinite(opts.backbone_lr_mult)):
        raise ValueError(f"--backbone-lr-mult = {opts.backbone_lr_mult!r} is invalid; accepted: a number >= 0")
    if image_size is not None and (not isinstance(image_size, int) or image_size < 32):
        raise ValueError(f"--image-size = {image_size!r} is invalid; accepted: an integer >= 32 (pixels)")
    bb_mult = opts.backbone_lr_mult
    if bb_mult is None:
        # Paper 004 (2.3) trains the backbone at 0.5x to keep its pretrained features stable; a backbone that
        # starts from random weights has nothing to keep (tiny Faster R-CNN, 4 digits epochs: val AP50 0.39 at
        # 0.5x against 0.51 at 1x), so it trains at the head's rate.
        trained = opts.pretrained is not None or opts.finetune is not None
        bb_mult = BACKBONE_LR_MULT if trained else 1.0
    tc = rt.replace(
        iterations=epochs * ipe,
        batch_size=batch,
        lr=lr,
        warmup_iters=int(round(warmup * ipe)),
        schedule="cosine",
        min_lr_ratio=min_lr / lr,
        backbone_lr_mult=float(bb_mult),
        weight_decay=float(opts.weight_decay if opts.weight_decay is not None else rt.weight_decay),
        device=opts.device,
        seed=int(opts.seed if opts.seed is not None else 0),
        eval_batch_size=int(opts.eval_batch_size or rt.eval_batch_size),
    )
    augment = None
    if opts.augment is not False:
        aug = AugmentConfig()
        if opts.flip:
            aug = aug.replace(flip_prob=0.5)
        augment = aug.to_dict()
    train_dict = dataclasses.asdict(tc)
    train_dict["milestones"] = list(tc.milestones)
    return RunConfig(
        data=str(opts.data or "digits"),
        family=family,
        backbone=backbone,
        res_fpn=res_fpn,
        image_size=image_size,
        num_classes=train_set.num_classes,
        categories=[dict(c) for c in train_set.categories],
        label_to_category_id=dict(train_set.label_to_category_id),
        epochs=int(epochs),
        batch_size=batch,
        iters_per_epoch=ipe,
        train_size=len(train_set),
        val_size=0,
        lr=lr,
        min_lr=min_lr,
        warmup_epochs=float(warmup),
        no_aug_epochs=int(no_aug),
        seed=tc.seed,
        train=train_dict,
        augment=augment,
        pretrained=opts.pretrained,
        finetune=str(Path(opts.finetune).expanduser()) if opts.finetune else None,
        model_kwargs={k: v for k, v in dict(meta_cfg.get("model_kwargs", {}) or recipe.model_kwargs).items()
                      if k != "res_fpn"},
    )


def _train_config(cfg: RunConfig, device: str, eval_batch_size: int | None) -> Any:
    from detgym.train import TrainConfig

    d = dict(cfg.train)
    d["milestones"] = tuple(d.get("milestones", ()))
    d["device"] = device
    if eval_batch_size:
        d["eval_batch_size"] = int(eval_batch_size)
    return TrainConfig(**d)


# ------------------------------------------------------------------------------------------ validation
@contextlib.contextmanager
def _frozen_norm_train_mode(model: nn.Module) -> Iterator[None]:
    """Train mode (losses are only computed there) with BatchNorm using, not updating, its statistics."""
    was = model.training
    model.train()
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.eval()
    try:
        yield
    finally:
        model.train(was)


@torch.no_grad()
def validation_loss(model: nn.Module, dataset: Any, *, batch_size: int, device: torch.device,
                    amp: bool = False, seed: int = 0) -> dict[str, float]:
    """Mean loss per term (and ``"total"``) over ``dataset``, weighted by batch size.

    Faster R-CNN samples anchors and RoIs at random to compute its loss; the sampling runs under a forked
    random state seeded with ``seed``, so the value is reproducible and the caller's random state is untouched.
    """
    sums: dict[str, float] = {}
    n = 0
    cuda = device.type == "cuda"
    with torch.random.fork_rng(devices=[device.index or 0] if cuda else []), _frozen_norm_train_mode(model):
        torch.manual_seed(seed)
        for start in range(0, len(dataset), batch_size):
            idx = list(range(start, min(start + batch_size, len(dataset))))
            images, targets = dataset.batch(idx, device=device)
            with torch.autocast(device.type, enabled=amp and cuda):
                losses = model.level_losses(images, targets)
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v.float().sum()) * len(idx)
            n += len(idx)
    out = {k: v / max(n, 1) for k, v in sums.items()}
    out["total"] = sum(out.values())
    return out


# ---------------------------------------------------------------------------------------- interruption
class _StopRequest:
    """SIGINT sets a flag that the loop checks between iterations; a second Ctrl-C interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._old: Any = None
        self._installed = False

    def __enter__(self) -> "_StopRequest":
        if threading.current_thread() is threading.main_thread():
            try:
                self._old = signal.signal(signal.SIGINT, self._handler)
                self._installed = True
            except ValueError:  # pragma: no cover - not the main interpreter
                self._installed = False
        return self

    def _handler(self, signum: int, frame: Any) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def __exit__(self, *exc: Any) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._old if self._old is not None else signal.default_int_handler)


class _Stop(Exception):
    pass


# ----------------------------------------------------------------------------------------------- train
def _check_resume_options(opts: TrainOptions, cfg: RunConfig, run: RunDir) -> None:
    given = [f.name for f in dataclasses.fields(opts)
             if f.name not in RESUME_OK and getattr(opts, f.name) is not None and f.default is None]
    if given:
        flags = ", ".join("--" + g.replace("_", "-") for g in given)
        raise ValueError(f"{flags} cannot be changed when resuming {run.path} (the run continues with the settings "
                         f"in {run.config_file.name}); start a new run instead, e.g. "
                         f"detgym train --out NEW_DIR --finetune {run.last} ...")
    if opts.data is not None and str(opts.data) != cfg.data:
        raise ValueError(f"--data {opts.data} differs from the run's data {cfg.data!r} ({run.config_file})")


def train_run(opts: TrainOptions, *, log: Callable[[str], None] = print) -> TrainOutcome:
    """Train (or resume) the run in ``opts.out``; see the module docstring.

    Raises:
        FileExistsError: ``opts.out`` already holds a run (and ``resume`` is not set) or is a non-empty
            directory of something else.
        FileNotFoundError: data, checkpoint or (with ``resume``) run files missing, naming the path.
        ValueError: bad option values or combinations, naming the option.
    """
    from detgym.data.augment import AugmentConfig, DetectionAugment
    from detgym.metrics import coco_evaluate, sequence_accuracy
    from detgym.train import Trainer, load_checkpoint_file
    from tqdm.auto import tqdm

    run = RunDir(opts.out)
    state: dict[str, Any] | None = None
    if opts.resume:
        cfg = run.read_config()
        _check_resume_options(opts, cfg, run)
        if not run.last.is_file():
            raise FileNotFoundError(f"nothing to resume in {run.path}: {run.last.name} is missing (the run saved no "
                                    f"checkpoint yet); start it again without --resume in an empty directory")
        train_set, val_set = _load_splits(cfg.data)
        if len(train_set) != cfg.train_size or len(val_set) != cfg.val_size:
            raise ValueError(f"the data {cfg.data!r} changed since the run started ({len(train_set)} train / "
                             f"{len(val_set)} val images now, {cfg.train_size} / {cfg.val_size} in {run.config_file})")
    else:
        if run.path.exists() and not run.path.is_dir():
            raise FileExistsError(f"--out {run.path} exists and is not a directory")
        if run.exists():
            raise FileExistsError(f"--out {run.path} already holds a run; pass --resume to continue it, or choose "
                                  f"another --out")
        if run.path.is_dir() and any(run.path.iterdir()):
            raise FileExistsError(f"--out {run.path} is a non-empty directory; choose a new or empty one")
        data = str(opts.data or "digits")
        from detgym.data import DATASET_NAMES

        if data.lower() not in DATASET_NAMES and Path(data).expanduser().exists():
            data = str(Path(data).expanduser().resolve())  # a resume from another working directory finds it too
        train_set, val_set = _load_splits(data)
        cfg = resolve_run_config(dataclasses.replace(opts, data=data), train_set)
        cfg.val_size = len(val_set)

    tcfg = _train_config(cfg, opts.device, opts.eval_batch_size)
    torch.manual_seed(cfg.seed)  # model initialisation
    model = build_run_model(cfg, pretrained=not opts.resume)
    if not opts.resume and cfg.finetune:
        load_model_weights(model, cfg.finetune)
    augment = DetectionAugment(AugmentConfig.from_dict(cfg.augment)) if cfg.augment else None
    run.path.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(model, train_set, val_set, tcfg, log_dir=run.tensorboard, augment=augment)
    history: list[dict[str, Any]] = []
    best_ap, best_epoch = -math.inf, None
    partial: dict[str, Any] = {"sums": {}, "count": 0, "time_s": 0.0}
    if opts.resume:
        state = load_checkpoint_file(run.last, map_location=trainer.device)
        trainer.load_state_dict(state)
        meta = state.get("pipeline", {})
        history = list(meta.get("history", []))
        best_ap = float(meta.get("best_ap", -math.inf))
        best_epoch = meta.get("best_epoch")
        partial = dict(meta.get("partial") or partial)
        log(f"resuming {run.path} at epoch {len(history) + 1}/{cfg.epochs}, iteration {trainer.iteration}")
    else:
        run.write_config(cfg)
        _log_plan(cfg, trainer, log)

    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(run.tensorboard), filename_suffix=".epochs")
    ipe = cfg.iters_per_epoch
    aug_off_epoch = cfg.epochs - cfg.no_aug_epochs + 1 if augment is not None else None
    val_gt = val_set.coco_gt()
    names = cfg.class_names
    true_strings = ground_truth_strings(val_set, names)

    def pipeline_meta(interrupted: bool) -> dict[str, Any]:
        return {"history": history, "best_ap": best_ap, "best_epoch": best_epoch, "partial": partial,
                "epochs_done": len(history), "interrupted": interrupted, "config": cfg.to_dict()}

    stop = _StopRequest()
    outcome = TrainOutcome(run, cfg, history, best_epoch, None)
    try:
        with stop:
            for epoch in range(len(history), cfg.epochs):
                use_aug = augment is not None and epoch < cfg.epochs - cfg.no_aug_epochs
                trainer.augment = augment if use_aug else None
                todo = (epoch + 1) * ipe - trainer.iteration
                t0 = time.perf_counter()
                with tqdm(total=ipe, initial=ipe - todo, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="it",
                          disable=not opts.progress, leave=False, dynamic_ncols=True) as bar:
                    for _ in range(todo):
                        r = trainer.step()
                        sums = partial["sums"]
                        for k, v in r.parts.items():
                            sums[k] = sums.get(k, 0.0) + float(np.sum(v))
                        sums["total"] = sums.get("total", 0.0) + float(np.sum(r.level_losses))
                        partial["count"] += 1
                        bar.update(1)
                        if r.iteration % 5 == 0 or r.iteration == (epoch + 1) * ipe:
                            bar.set_postfix(loss=f"{sums['total'] / partial['count']:.3f}", lr=f"{r.lr:.2e}")
                        if stop.requested:
                            partial["time_s"] += time.perf_counter() - t0
                            raise _Stop
                train_time = partial["time_s"] + time.perf_counter() - t0
                # ---- validation
                t1 = time.perf_counter()
                results = trainer.predict(val_set)
                stats = coco_evaluate(val_gt, results)
                table = DetectionTable(results, val_set.image_ids)
                acc = sequence_accuracy(table.strings(TRAIN_EVAL_THRESHOLD, names), true_strings)
                vloss = validation_loss(trainer.model, val_set, batch_size=tcfg.eval_batch_size,
                                        device=trainer.device, amp=tcfg.amp, seed=cfg.seed)
                count = max(partial["count"], 1)
                entry = {
                    "epoch": epoch + 1,
                    "iteration": trainer.iteration,
                    "lr": float(trainer.optimizer.param_groups[0]["lr"]),
                    "augment": use_aug,
                    "train_loss": {k: v / count for k, v in partial["sums"].items()},
                    "val_loss": vloss,
                    "val": {k: float(v) for k, v in stats.items()},
                    "val_accuracy": float(acc),
                    "train_time_s": float(train_time),
                    "val_time_s": float(time.perf_counter() - t1),
                }
                is_best = stats["AP"] > best_ap
                entry["best"] = bool(is_best)
                history.append(entry)
                partial = {"sums": {}, "count": 0, "time_s": 0.0}
                if is_best:
                    best_ap, best_epoch = float(stats["AP"]), epoch + 1
                    run.save_best(trainer.model.state_dict(), {**pipeline_meta(False), "epoch": epoch + 1,
                                                               "val": entry["val"], "val_accuracy": acc})
                run.save_last(trainer.state_dict(), pipeline_meta(False))
                run.write_history(history)
                _log_epoch(writer, entry)
                try:
                    from .plots import plot_history

                    plot_history(history, run.plots, aug_off_epoch=aug_off_epoch)
                except Exception as exc:  # a plotting problem must not lose a training run
                    log(f"warning: could not draw the plots ({exc})")
                line = (f"epoch {epoch + 1}/{cfg.epochs}: train loss {entry['train_loss']['total']:.4f} | "
                        f"val loss {vloss['total']:.4f} | val AP {stats['AP']:.4f} AP50 {stats['AP50']:.4f} "
                        f"acc@{TRAIN_EVAL_THRESHOLD} {acc:.4f} | lr {entry['lr']:.2e} | "
                        f"{train_time:.0f}+{entry['val_time_s']:.0f} s" + (" | aug" if use_aug else "")
                        + ("  *best*" if is_best else ""))
                if opts.progress:
                    tqdm.write(line)
                else:
                    log(line)
                if stop.requested and epoch + 1 < cfg.epochs:
                    raise _Stop
    except (_Stop, KeyboardInterrupt) as exc:
        outcome.interrupted = True
        if isinstance(exc, KeyboardInterrupt) and stop.requested:
            # Second Ctrl-C: the iteration in flight may be half applied; keep the last saved state.
            saved = f"{run.last} holds the last saved state" if run.last.is_file() else "no checkpoint was saved"
        else:
            run.save_last(trainer.state_dict(), pipeline_meta(True))
            saved = f"saved {run.last}"
        done = trainer.iteration - len(history) * ipe
        outcome.message = (f"training interrupted in epoch {len(history) + 1}/{cfg.epochs} "
                           f"({done}/{ipe} iterations of it done); {saved}. "
                           f"Resume with: detgym train --out {run.path} --resume")
    finally:
        writer.close()
        trainer.close()
    outcome.history = history
    outcome.best_epoch = best_epoch
    if best_epoch is not None:
        outcome.best_stats = history[best_epoch - 1]["val"] | {"accuracy": history[best_epoch - 1]["val_accuracy"]}
    if not outcome.interrupted:
        b = outcome.best_stats or {}
        outcome.message = (f"done: best epoch {best_epoch} (val AP {b.get('AP', float('nan')):.4f}, AP50 "
                           f"{b.get('AP50', float('nan')):.4f}, accuracy@{TRAIN_EVAL_THRESHOLD} "
                           f"{b.get('accuracy', float('nan')):.4f}) -> {run.best}; next: "
                           f"detgym find-threshold --run {run.path}")
    return outcome


def _log_plan(cfg: RunConfig, trainer: Any, log: Callable[[str], None]) -> None:
    tc = trainer.config
    aug = "off" if not cfg.augment else f"on except the last {cfg.no_aug_epochs} epoch(s)"
    log(f"run {cfg.family}/{cfg.backbone}{' + ResFPN' if cfg.res_fpn else ''} on {cfg.data!r} "
        f"({cfg.train_size} train / {cfg.val_size} val images, {cfg.num_classes} classes, image size "
        f"{cfg.image_size or 'torchvision default'}) on {trainer.device}")
    log(f"  {cfg.epochs} epochs x {cfg.iters_per_epoch} iterations (batch {cfg.batch_size}); {tc.optimizer} lr "
        f"{cfg.lr:g} -> {cfg.min_lr:g} (warmup {cfg.warmup_epochs:g} epochs = {tc.warmup_iters} it, cosine), "
        f"backbone x{tc.backbone_lr_mult:g}, weight decay {tc.weight_decay:g}; augmentation {aug}"
        + (f"; fine-tuning from {cfg.finetune}" if cfg.finetune else ""))


def _log_epoch(writer: Any, entry: dict[str, Any]) -> None:
    step = int(entry["epoch"])
    for k, v in entry["train_loss"].items():
        writer.add_scalar(f"epoch/train_{k}", v, step)
    for k, v in entry["val_loss"].items():
        writer.add_scalar(f"epoch/val_{k}", v, step)
    for k, v in entry["val"].items():
        writer.add_scalar(f"epoch/val_{k}", v, step)
    writer.add_scalar("epoch/val_accuracy", entry["val_accuracy"], step)
    writer.add_scalar("epoch/lr", entry["lr"], step)
    writer.flush()
