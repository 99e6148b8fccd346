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
  A process started with SIGINT ignored (a shell's background job, some CI runners) keeps ignoring it:
  no handler is installed, and the handler from before is back when ``train_run`` returns.

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

from detgym.tensorboard import TensorBoardLogger

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

    names = ([f"{family}-{backbone}-resfpn"] if res_fpn else []) + [
        f"{family}-{backbone}", f"{family}-{backbone}-resfpn"
    ]
    for name in names:
        if name in RECIPES:
            return get_recipe(name), name
    return Recipe(family, backbone, 128 if backbone == "tiny" else None), None


def _load_train_val(data: str) -> tuple[Any, Any]:
    """The train and val splits of ``--data``, checked for what a pipeline run needs (both non-empty, same classes)."""
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


def _finetune_run_config(finetune: str | None) -> dict[str, Any]:
    """The run config stored in a ``--finetune`` checkpoint (it names the architecture); ``{}`` when it has none."""
    if finetune is None:
        return {}
    from detgym.train import UnsafeCheckpointError, load_checkpoint_file

    p = Path(finetune).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"--finetune checkpoint not found: {p}")
    try:
        return dict(load_checkpoint_file(p).get("pipeline", {}).get("config", {}) or {})
    except UnsafeCheckpointError:
        raise
    except ValueError:
        return {}  # a bare state dict: the options (or their defaults) name the architecture


def _architecture(opts: TrainOptions, meta_cfg: dict[str, Any]) -> tuple[str, str, bool]:
    """(family, backbone, res_fpn): the options, else the fine-tuned checkpoint's, else Faster R-CNN tiny."""
    from detgym.models import BACKBONES, FAMILIES

    family = opts.family or meta_cfg.get("family") or "fasterrcnn"
    backbone = opts.backbone or meta_cfg.get("backbone") or "tiny"
    res_fpn = bool(opts.res_fpn if opts.res_fpn is not None else meta_cfg.get("res_fpn", False))
    if family not in FAMILIES:
        raise ValueError(f"--family {family!r} is not supported; accepted: {', '.join(FAMILIES)}")
    if backbone not in BACKBONES:
        raise ValueError(f"--backbone {backbone!r} is not supported; accepted: {', '.join(BACKBONES)}")
    return family, backbone, res_fpn


@dataclass(frozen=True)
class _Schedule:
    """The epoch schedule of a run, in epochs (see the module docstring for the defaults)."""

    epochs: int
    batch_size: int
    iters_per_epoch: int
    lr: float
    min_lr: float
    warmup_epochs: float
    no_aug_epochs: int


def _schedule(opts: TrainOptions, rt: Any, train_size: int) -> _Schedule:
    """The options' schedule with the recipe's TrainConfig ``rt`` filling in what is not given."""
    batch = int(opts.batch_size or rt.batch_size)
    ipe = math.ceil(train_size / batch)
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
    return _Schedule(int(epochs), batch, ipe, lr, min_lr, float(warmup), int(no_aug))


def _backbone_lr_mult(opts: TrainOptions) -> float:
    """``--backbone-lr-mult``, else paper 004's 0.5 for a trained backbone and 1 for one trained from scratch."""
    mult = opts.backbone_lr_mult
    if mult is not None:
        if not (mult >= 0 and math.isfinite(mult)):
            raise ValueError(f"--backbone-lr-mult = {mult!r} is invalid; accepted: a number >= 0")
        return float(mult)
    # Paper 004 (2.3) trains the backbone at 0.5x to keep its pretrained features stable; a backbone that
    # starts from random weights has nothing to keep (tiny Faster R-CNN, 4 digits epochs: val AP50 0.39 at
    # 0.5x against 0.51 at 1x), so it trains at the head's rate.
    trained = opts.pretrained is not None or opts.finetune is not None
    return BACKBONE_LR_MULT if trained else 1.0


def _augment_dict(opts: TrainOptions) -> dict[str, Any] | None:
    """The AugmentConfig of the run as a dict (``None``: ``--no-augment``)."""
    from detgym.data.augment import AugmentConfig

    if opts.augment is False:
        return None
    aug = AugmentConfig()
    if opts.flip:
        aug = aug.replace(flip_prob=0.5)
    return aug.to_dict()


def _run_train_config(opts: TrainOptions, rt: Any, sched: _Schedule, bb_mult: float) -> dict[str, Any]:
    """The run's TrainConfig (the recipe's ``rt`` with the schedule in iterations) as a JSON-ready dict."""
    tc = rt.replace(
        iterations=sched.epochs * sched.iters_per_epoch,
        batch_size=sched.batch_size,
        lr=sched.lr,
        warmup_iters=int(round(sched.warmup_epochs * sched.iters_per_epoch)),
        schedule="cosine",
        min_lr_ratio=sched.min_lr / sched.lr,
        backbone_lr_mult=bb_mult,
        weight_decay=float(opts.weight_decay if opts.weight_decay is not None else rt.weight_decay),
        device=opts.device,
        seed=int(opts.seed if opts.seed is not None else 0),
        eval_batch_size=int(opts.eval_batch_size or rt.eval_batch_size),
    )
    train_dict = dataclasses.asdict(tc)
    train_dict["milestones"] = list(tc.milestones)
    return train_dict


def resolve_run_config(opts: TrainOptions, train_set: Any) -> RunConfig:
    """Fill in every default of a new run (see the module docstring) and validate the combination."""
    meta_cfg = _finetune_run_config(opts.finetune)
    family, backbone, res_fpn = _architecture(opts, meta_cfg)
    recipe, _ = _recipe_for(family, backbone, res_fpn)
    image_size = opts.image_size if opts.image_size is not None else meta_cfg.get("image_size", recipe.image_size)
    sched = _schedule(opts, recipe.train, len(train_set))
    bb_mult = _backbone_lr_mult(opts)
    if image_size is not None and (not isinstance(image_size, int) or image_size < 32):
        raise ValueError(f"--image-size = {image_size!r} is invalid; accepted: an integer >= 32 (pixels)")
    train_dict = _run_train_config(opts, recipe.train, sched, bb_mult)
    model_kwargs = dict(meta_cfg.get("model_kwargs", {}) or recipe.model_kwargs)
    return RunConfig(
        data=str(opts.data or "digits"),
        family=family,
        backbone=backbone,
        res_fpn=res_fpn,
        image_size=image_size,
        num_classes=train_set.num_classes,
        categories=[dict(c) for c in train_set.categories],
        label_to_category_id=dict(train_set.label_to_category_id),
        epochs=sched.epochs,
        batch_size=sched.batch_size,
        iters_per_epoch=sched.iters_per_epoch,
        train_size=len(train_set),
        val_size=0,
        lr=sched.lr,
        min_lr=sched.min_lr,
        warmup_epochs=sched.warmup_epochs,
        no_aug_epochs=sched.no_aug_epochs,
        seed=int(train_dict["seed"]),
        train=train_dict,
        augment=_augment_dict(opts),
        pretrained=opts.pretrained,
        finetune=str(Path(opts.finetune).expanduser()) if opts.finetune else None,
        model_kwargs={k: v for k, v in model_kwargs.items() if k != "res_fpn"},  # the run's own res_fpn decides
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
    """SIGINT sets a flag that the loop checks between iterations; a second Ctrl-C interrupts at once.

    A process that ignores SIGINT (started under ``nohup``, as a shell's background job, by some CI runners)
    was asked not to be interrupted: the ignored SIGINT stays ignored, no handler is installed. Whatever was
    installed before is installed again on exit.
    """

    def __init__(self) -> None:
        self.requested = False
        self._old: Any = None
        self._installed = False

    def __enter__(self) -> "_StopRequest":
        if threading.current_thread() is not threading.main_thread():
            return self  # signal handlers belong to the main thread
        if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
            return self
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
            # None: the handler before was not installed from Python; Python's default is the closest.
            signal.signal(signal.SIGINT, self._old if self._old is not None else signal.default_int_handler)
            self._installed = False


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


def _resume_setup(opts: TrainOptions, run: RunDir) -> tuple[RunConfig, Any, Any]:
    """(config, train split, val split) of the run to resume, after checking that it can be resumed."""
    cfg = run.read_config()
    _check_resume_options(opts, cfg, run)
    if not run.last.is_file():
        raise FileNotFoundError(f"nothing to resume in {run.path}: {run.last.name} is missing (the run saved no "
                                f"checkpoint yet); start it again without --resume in an empty directory")
    train_set, val_set = _load_train_val(cfg.data)
    if len(train_set) != cfg.train_size or len(val_set) != cfg.val_size:
        raise ValueError(f"the data {cfg.data!r} changed since the run started ({len(train_set)} train / "
                         f"{len(val_set)} val images now, {cfg.train_size} / {cfg.val_size} in {run.config_file})")
    return cfg, train_set, val_set


def _new_run_setup(opts: TrainOptions, run: RunDir) -> tuple[RunConfig, Any, Any]:
    """(config, train split, val split) of a new run in an empty (or new) ``--out`` directory."""
    from detgym.data import DATASET_NAMES

    if run.path.exists() and not run.path.is_dir():
        raise FileExistsError(f"--out {run.path} exists and is not a directory")
    if run.exists():
        raise FileExistsError(f"--out {run.path} already holds a run; pass --resume to continue it, or choose "
                              f"another --out")
    if run.path.is_dir() and any(run.path.iterdir()):
        raise FileExistsError(f"--out {run.path} is a non-empty directory; choose a new or empty one")
    data = str(opts.data or "digits")
    if data.lower() not in DATASET_NAMES and Path(data).expanduser().exists():
        data = str(Path(data).expanduser().resolve())  # a resume from another working directory finds it too
    train_set, val_set = _load_train_val(data)
    cfg = resolve_run_config(dataclasses.replace(opts, data=data), train_set)
    cfg.val_size = len(val_set)
    return cfg, train_set, val_set


def _build_trainer(opts: TrainOptions, cfg: RunConfig, run: RunDir, train_set: Any, val_set: Any) -> tuple[Any, Any]:
    """The run's Trainer (fresh, or with fine-tuned weights) and its augmentation (``None``: off)."""
    from detgym.data.augment import AugmentConfig, DetectionAugment
    from detgym.train import Trainer

    tcfg = _train_config(cfg, opts.device, opts.eval_batch_size)
    torch.manual_seed(cfg.seed)  # model initialisation
    model = build_run_model(cfg, pretrained=not opts.resume)
    if not opts.resume and cfg.finetune:
        load_model_weights(model, cfg.finetune)
    augment = DetectionAugment(AugmentConfig.from_dict(cfg.augment)) if cfg.augment else None
    run.path.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(model, train_set, val_set, tcfg, log_dir=run.tensorboard, augment=augment)
    return trainer, augment


def train_run(opts: TrainOptions, *, log: Callable[[str], None] = print) -> TrainOutcome:
    """Train (or resume) the run in ``opts.out``; see the module docstring.

    Raises:
        FileExistsError: ``opts.out`` already holds a run (and ``resume`` is not set) or is a non-empty
            directory of something else.
        FileNotFoundError: data, checkpoint or (with ``resume``) run files missing, naming the path.
        ValueError: bad option values or combinations, naming the option.
    """
    run = RunDir(opts.out)
    cfg, train_set, val_set = _resume_setup(opts, run) if opts.resume else _new_run_setup(opts, run)
    trainer, augment = _build_trainer(opts, cfg, run, train_set, val_set)
    loop = _EpochLoop(opts, run, cfg, trainer, val_set, augment, log)
    if opts.resume:
        loop.restore()
    else:
        run.write_config(cfg)
        _log_plan(cfg, trainer, log)
    outcome = TrainOutcome(run, cfg, loop.history, None, None)
    try:
        with loop.stop:
            loop.run_epochs()
    except (_Stop, KeyboardInterrupt) as exc:
        outcome.interrupted = True
        second_ctrl_c = isinstance(exc, KeyboardInterrupt) and loop.stop.requested
        outcome.message = loop.save_interrupted(second_ctrl_c=second_ctrl_c)
    finally:
        loop.tb.close()
        trainer.close()
    return loop.finish(outcome)


class _EpochLoop:
    """One run's epoch loop and the state that ``last.pt``'s ``"pipeline"`` entry keeps for a resume."""

    def __init__(self, opts: TrainOptions, run: RunDir, cfg: RunConfig, trainer: Any, val_set: Any, augment: Any,
                 log: Callable[[str], None]) -> None:
        self.opts, self.run, self.cfg, self.trainer, self.val_set, self.augment, self.log = (
            opts, run, cfg, trainer, val_set, augment, log)
        self.history: list[dict[str, Any]] = []
        self.best_ap, self.best_epoch = -math.inf, None
        self.partial = _empty_partial()
        self.tb = TensorBoardLogger(run.tensorboard, filename_suffix=".epochs")
        self.stop = _StopRequest()
        self.names = cfg.class_names
        self.val_gt = val_set.coco_gt()
        self.true_strings = ground_truth_strings(val_set, self.names)

    def restore(self) -> None:
        """Continue from ``last.pt``: the Trainer's state and the epoch history, best AP, position in the epoch."""
        from detgym.train import load_checkpoint_file

        state = load_checkpoint_file(self.run.last, map_location=self.trainer.device)
        self.trainer.load_state_dict(state)
        meta = state.get("pipeline", {})
        self.history[:] = list(meta.get("history", []))
        self.best_ap = float(meta.get("best_ap", -math.inf))
        self.best_epoch = meta.get("best_epoch")
        self.partial = dict(meta.get("partial") or self.partial)
        self.log(f"resuming {self.run.path} at epoch {len(self.history) + 1}/{self.cfg.epochs}, "
                 f"iteration {self.trainer.iteration}")

    def meta(self, interrupted: bool) -> dict[str, Any]:
        """The ``"pipeline"`` entry of the checkpoints."""
        return {"history": self.history, "best_ap": self.best_ap, "best_epoch": self.best_epoch,
                "partial": self.partial, "epochs_done": len(self.history), "interrupted": interrupted,
                "config": self.cfg.to_dict()}

    def run_epochs(self) -> None:
        """Train, validate and save every epoch left; raises _Stop after a Ctrl-C (see :class:`_StopRequest`)."""
        cfg = self.cfg
        for epoch in range(len(self.history), cfg.epochs):
            use_aug = self.augment is not None and epoch < cfg.epochs - cfg.no_aug_epochs
            self.trainer.augment = self.augment if use_aug else None
            train_time = self._train_epoch(epoch)
            entry = self._validate(epoch, use_aug, train_time)
            self._record(entry)
            self._report(entry)
            if self.stop.requested and epoch + 1 < cfg.epochs:
                raise _Stop

    def _train_epoch(self, epoch: int) -> float:
        """The epoch's remaining iterations; returns the epoch's training time (s), also before an interruption."""
        from tqdm.auto import tqdm

        ipe, trainer, partial = self.cfg.iters_per_epoch, self.trainer, self.partial
        todo = (epoch + 1) * ipe - trainer.iteration
        t0 = time.perf_counter()
        with tqdm(total=ipe, initial=ipe - todo, desc=f"epoch {epoch + 1}/{self.cfg.epochs}", unit="it",
                  disable=not self.opts.progress, leave=False, dynamic_ncols=True) as bar:
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
                if self.stop.requested:
                    partial["time_s"] += time.perf_counter() - t0
                    raise _Stop
        return partial["time_s"] + time.perf_counter() - t0

    def _validate(self, epoch: int, use_aug: bool, train_time: float) -> dict[str, Any]:
        """The history entry of a finished epoch: val COCO stats, sequence accuracy, val loss, mean train loss."""
        from detgym.metrics import coco_evaluate, sequence_accuracy

        trainer, val_set, tcfg = self.trainer, self.val_set, self.trainer.config
        t1 = time.perf_counter()
        results = trainer.predict(val_set)
        stats = coco_evaluate(self.val_gt, results)
        table = DetectionTable(results, val_set.image_ids)
        acc = sequence_accuracy(table.strings(TRAIN_EVAL_THRESHOLD, self.names), self.true_strings)
        vloss = validation_loss(trainer.model, val_set, batch_size=tcfg.eval_batch_size, device=trainer.device,
                                amp=tcfg.amp, seed=self.cfg.seed)
        count = max(self.partial["count"], 1)
        return {
            "epoch": epoch + 1,
            "iteration": trainer.iteration,
            "lr": float(trainer.optimizer.param_groups[0]["lr"]),
            "augment": use_aug,
            "train_loss": {k: v / count for k, v in self.partial["sums"].items()},
            "val_loss": vloss,
            "val": {k: float(v) for k, v in stats.items()},
            "val_accuracy": float(acc),
            "train_time_s": float(train_time),
            "val_time_s": float(time.perf_counter() - t1),
        }

    def _record(self, entry: dict[str, Any]) -> None:
        """Append ``entry`` to the history; save best.pt (val AP improved), last.pt, history, TensorBoard, plots."""
        run, epoch = self.run, int(entry["epoch"])
        entry["best"] = is_best = entry["val"]["AP"] > self.best_ap
        self.history.append(entry)
        self.partial = _empty_partial()
        if is_best:
            self.best_ap, self.best_epoch = entry["val"]["AP"], epoch
            run.save_best(self.trainer.model.state_dict(), {**self.meta(False), "epoch": epoch, "val": entry["val"],
                                                            "val_accuracy": entry["val_accuracy"]})
        run.save_last(self.trainer.state_dict(), self.meta(False))
        run.write_history(self.history)
        _log_epoch(self.tb, entry)
        try:
            from .plots import plot_history

            aug_off_epoch = self.cfg.epochs - self.cfg.no_aug_epochs + 1 if self.augment is not None else None
            plot_history(self.history, run.plots, aug_off_epoch=aug_off_epoch)
        except Exception as exc:  # a plotting problem must not lose a training run
            self.log(f"warning: could not draw the plots ({exc})")

    def _report(self, entry: dict[str, Any]) -> None:
        from tqdm.auto import tqdm

        val, vloss = entry["val"], entry["val_loss"]
        line = (f"epoch {entry['epoch']}/{self.cfg.epochs}: train loss {entry['train_loss']['total']:.4f} | "
                f"val loss {vloss['total']:.4f} | val AP {val['AP']:.4f} AP50 {val['AP50']:.4f} "
                f"acc@{TRAIN_EVAL_THRESHOLD} {entry['val_accuracy']:.4f} | lr {entry['lr']:.2e} | "
                f"{entry['train_time_s']:.0f}+{entry['val_time_s']:.0f} s" + (" | aug" if entry["augment"] else "")
                + ("  *best*" if entry["best"] else ""))
        if self.opts.progress:
            tqdm.write(line)
        else:
            self.log(line)

    def save_interrupted(self, *, second_ctrl_c: bool) -> str:
        """Save ``last.pt`` after a Ctrl-C (not after a second one: that iteration may be half applied); the message."""
        run, ipe = self.run, self.cfg.iters_per_epoch
        if second_ctrl_c:
            saved = f"{run.last} holds the last saved state" if run.last.is_file() else "no checkpoint was saved"
        else:
            run.save_last(self.trainer.state_dict(), self.meta(True))
            saved = f"saved {run.last}"
        done = self.trainer.iteration - len(self.history) * ipe
        return (f"training interrupted in epoch {len(self.history) + 1}/{self.cfg.epochs} "
                f"({done}/{ipe} iterations of it done); {saved}. "
                f"Resume with: detgym train --out {run.path} --resume")

    def finish(self, outcome: TrainOutcome) -> TrainOutcome:
        """Fill in the outcome's history, best epoch and (when the run finished) its closing message."""
        history, best_epoch = self.history, self.best_epoch
        outcome.history, outcome.best_epoch = history, best_epoch
        if best_epoch is not None:
            best = history[best_epoch - 1]
            outcome.best_stats = best["val"] | {"accuracy": best["val_accuracy"]}
        if not outcome.interrupted:
            b = outcome.best_stats or {}
            outcome.message = (f"done: best epoch {best_epoch} (val AP {b.get('AP', float('nan')):.4f}, AP50 "
                               f"{b.get('AP50', float('nan')):.4f}, accuracy@{TRAIN_EVAL_THRESHOLD} "
                               f"{b.get('accuracy', float('nan')):.4f}) -> {self.run.best}; next: "
                               f"detgym find-threshold --run {self.run.path}")
        return outcome


def _empty_partial() -> dict[str, Any]:
    """Loss sums, iteration count and training time of the epoch in progress."""
    return {"sums": {}, "count": 0, "time_s": 0.0}


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


def _log_epoch(tb: TensorBoardLogger, entry: dict[str, Any]) -> None:
    step = int(entry["epoch"])
    tb.scalars("epoch/train", entry["train_loss"], step, sep="_")
    tb.scalars("epoch/val", entry["val_loss"], step, sep="_")
    tb.scalars("epoch/val", entry["val"], step, sep="_")
    tb.scalar("epoch/val_accuracy", entry["val_accuracy"], step)
    tb.scalar("epoch/lr", entry["lr"], step)
    tb.flush()
