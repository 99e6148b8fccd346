"""The run directory of the digit pipeline (paper 004): layout, configuration, checkpoints.

One ``detgym train --out RUN_DIR`` run owns one directory::

    RUN_DIR/
      config.json      everything needed to rebuild the detector and the data (RunConfig), written first
      last.pt          full resume state after the last finished epoch (or at Ctrl-C, mid-epoch)
      best.pt          model weights of the epoch with the best val AP (+ that epoch's metrics)
      history.json     per-epoch train / val losses, val COCO stats, sequence accuracy, lr, time
      threshold.json   the confidence threshold chosen by ``detgym find-threshold``
      plots/loss.png   train vs val loss per term; plots/map.png val AP / AP50 / accuracy per epoch
      tb/              TensorBoard logs

Every file is written atomically (temporary sibling, then ``os.replace``), so an interrupted run
never leaves a half-written checkpoint or JSON. ``last.pt`` holds :meth:`Trainer.state_dict` at the top
level (so :meth:`Trainer.load_checkpoint` reads it) plus a ``"pipeline"`` entry (epoch history, best AP,
position inside the epoch). ``best.pt`` holds only ``"model"`` and ``"pipeline"``: prediction and
fine-tuning need the weights, not the optimizer, and this halves what a resnet50 run writes per epoch.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from detgym.data.io import atomic_write_json
from detgym.train.checkpoint import atomic_torch_save, load_plain

__all__ = ["RunConfig", "RunDir", "build_run_model", "set_score_threshold", "CHECKPOINT_CHOICES"]

#: Names accepted by ``--checkpoint`` besides a path.
CHECKPOINT_CHOICES = ("best", "last")


@dataclass
class RunConfig:
    """Everything a run needs besides its checkpoints (stored as ``config.json``).

    ``train`` is the :class:`detgym.train.TrainConfig` as a dict (iterations = epochs x
    iters_per_epoch, warmup and cosine in iterations), ``augment`` the
    :class:`detgym.data.augment.AugmentConfig` as a dict (None: augmentation off).
    """

    data: str
    family: str
    backbone: str
    res_fpn: bool
    image_size: int | None
    num_classes: int
    categories: list[dict[str, Any]]
    label_to_category_id: dict[int, int]
    epochs: int
    batch_size: int
    iters_per_epoch: int
    train_size: int
    val_size: int
    lr: float
    min_lr: float
    warmup_epochs: float
    no_aug_epochs: int
    seed: int
    train: dict[str, Any]
    augment: dict[str, Any] | None
    pretrained: str | None = None
    finetune: str | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    version: int = 1

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["label_to_category_id"] = {str(k): v for k, v in self.label_to_category_id.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> "RunConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        required = {f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
        if not isinstance(d, dict):
            raise ValueError(f"{source}: expected a JSON object, got {type(d).__name__}")
        missing = sorted(required - set(d))
        if missing:
            raise ValueError(f"{source}: missing key(s) {missing}; is this a detgym run's config.json?")
        kw = {k: v for k, v in d.items() if k in names}
        kw["label_to_category_id"] = {int(k): int(v) for k, v in d["label_to_category_id"].items()}
        return cls(**kw)

    @property
    def class_names(self) -> dict[int, str]:
        """COCO category id -> name (the digit, for digit sets)."""
        return {int(c["id"]): str(c.get("name", c["id"])) for c in self.categories}


class RunDir:
    """Paths and file access of one run directory (see the module docstring for the layout)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser()

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # -- paths
    @property
    def config_file(self) -> Path:
        return self.path / "config.json"

    @property
    def last(self) -> Path:
        return self.path / "last.pt"

    @property
    def best(self) -> Path:
        return self.path / "best.pt"

    @property
    def history_file(self) -> Path:
        return self.path / "history.json"

    @property
    def threshold_file(self) -> Path:
        return self.path / "threshold.json"

    @property
    def plots(self) -> Path:
        return self.path / "plots"

    @property
    def tensorboard(self) -> Path:
        return self.path / "tb"

    # -- state
    def exists(self) -> bool:
        """Whether this directory already holds (part of) a run."""
        return self.config_file.is_file() or self.last.is_file() or self.best.is_file()

    def write_config(self, config: RunConfig) -> None:
        atomic_write_json(self.config_file, config.to_dict(), indent=2)

    def read_config(self) -> RunConfig:
        """The run's :class:`RunConfig`; FileNotFoundError / ValueError naming the file when absent or broken."""
        f = self.config_file
        if not self.path.is_dir():
            raise FileNotFoundError(f"run directory not found: {self.path} (create one with `detgym train --out DIR`)")
        if not f.is_file():
            raise FileNotFoundError(f"{self.path} is not a detgym run directory: {f.name} is missing "
                                    f"(create a run with `detgym train --out {self.path}`)")
        try:
            d = json.loads(f.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{f}: malformed JSON ({exc})") from exc
        return RunConfig.from_dict(d, str(f))

    def checkpoint_path(self, which: str = "best") -> Path:
        """``best`` (falls back to ``last`` when there is no best yet), ``last``, or a file path.

        Raises FileNotFoundError naming the run directory when it holds no checkpoint.
        """
        if which not in CHECKPOINT_CHOICES:
            p = Path(which).expanduser()
            if not p.is_file():
                raise FileNotFoundError(f"checkpoint file not found: {p} (--checkpoint accepts "
                                        f"{', '.join(CHECKPOINT_CHOICES)} or a file path)")
            return p
        order = [self.best, self.last] if which == "best" else [self.last]
        for p in order:
            if p.is_file():
                return p
        raise FileNotFoundError(
            f"run directory {self.path} holds no checkpoint ({' or '.join(p.name for p in order)} missing); "
            f"train first: detgym train --out {self.path}"
        )

    def save_last(self, trainer_state: dict[str, Any], pipeline: dict[str, Any]) -> None:
        atomic_torch_save({**trainer_state, "pipeline": pipeline}, self.last)

    def save_best(self, model_state: dict[str, Any], pipeline: dict[str, Any]) -> None:
        atomic_torch_save({"model": model_state, "pipeline": pipeline}, self.best)

    def write_history(self, history: list[dict[str, Any]]) -> None:
        atomic_write_json(self.history_file, _finite(history), indent=1)

    def read_threshold(self) -> dict[str, Any] | None:
        f = self.threshold_file
        if not f.is_file():
            return None
        try:
            d = json.loads(f.read_text(encoding="utf-8"))
            float(d["threshold"])
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{f}: not a threshold file written by `detgym find-threshold` ({exc}); "
                             f"run find-threshold again or pass --threshold") from exc
        return d


def _finite(obj: Any) -> Any:
    """JSON has no NaN / inf: such floats (a diverged loss) are written as null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def build_run_model(config: RunConfig, *, pretrained: bool = True) -> nn.Module:
    """The run's detector, freshly initialised (``pretrained=False``: never download weights)."""
    from detgym.models import build_detector

    kw: dict[str, Any] = dict(config.model_kwargs)
    kw.pop("res_fpn", None)  # a recipe may name it; the run's own res_fpn decides
    if pretrained and config.pretrained == "coco":
        kw["weights"] = "DEFAULT"
    elif pretrained and config.pretrained == "imagenet":
        kw["weights_backbone"] = "DEFAULT"
    return build_detector(config.family, config.backbone, config.num_classes, res_fpn=config.res_fpn,
                          image_size=config.image_size, **kw)


def load_model_weights(model: nn.Module, path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """Load the ``"model"`` weights of a detgym checkpoint (or a bare state dict) into ``model``.

    Returns the checkpoint's ``"pipeline"`` metadata (empty when absent). Raises ValueError naming the
    file when the weights do not fit the model (another family / backbone / ResFPN / class count), and
    :class:`detgym.train.UnsafeCheckpointError` (a ValueError) when the file is not plain data: it is never run.
    """
    path = Path(path)
    raw = load_plain(path, map_location=map_location)  # plain data only: a crafted file is refused, never run
    if isinstance(raw, dict) and isinstance(raw.get("model"), dict):
        state, weights = raw, raw["model"]
    elif isinstance(raw, dict) and raw and all(isinstance(v, torch.Tensor) for v in raw.values()):
        state, weights = {}, raw  # a bare state dict (e.g. torch.save(model.state_dict())) is accepted too
    else:
        raise ValueError(f"checkpoint {path} is neither a detgym checkpoint nor a model state dict")
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise ValueError(f"checkpoint {path} does not fit this detector (family / backbone / --res-fpn / classes "
                         f"differ?): {first[0] if first else exc}") from exc
    meta = state.get("pipeline", {}) if isinstance(state, dict) else {}
    return meta if isinstance(meta, dict) else {}


def set_score_threshold(model: nn.Module, threshold: float) -> None:
    """Lower (or raise) the detector's own minimum score for detections it returns."""
    heads = getattr(model, "roi_heads", None)
    if heads is not None and hasattr(heads, "score_thresh"):
        heads.score_thresh = float(threshold)
    elif hasattr(model, "score_thresh"):
        model.score_thresh = float(threshold)


def score_threshold_of(model: nn.Module) -> float:
    """The detector's own minimum detection score (torchvision's default 0.05)."""
    heads = getattr(model, "roi_heads", None)
    if heads is not None and hasattr(heads, "score_thresh"):
        return float(heads.score_thresh)
    return float(getattr(model, "score_thresh", 0.0))
