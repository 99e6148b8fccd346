"""The Trainer: one call trains one iteration of a level-aware detector with given per-level loss weights."""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from detgym.tensorboard import TensorBoardLogger

from .checkpoint import atomic_torch_save, load_checkpoint_file
from .config import TrainConfig
from .detections import predict_coco
from .schedule import lr_factor

__all__ = [
    "MinibatchOrder", "NonFiniteLossError", "StepResult", "Trainer", "backbone_trunk", "predict_coco", "resolve_device"
]


class NonFiniteLossError(ValueError):
    """Raised by :meth:`Trainer.step` when the loss of an iteration is NaN or infinite."""

    def __init__(self, iteration: int, parts: dict[str, np.ndarray]) -> None:
        self.iteration = iteration
        self.parts = parts
        bad = [k for k, v in parts.items() if not np.all(np.isfinite(v))]
        super().__init__(
            f"non-finite training loss at iteration {iteration} (terms {bad or 'weighted total'}); "
            "the detector diverged: lower TrainConfig.lr, enable grad_clip or check the level weights and data"
        )


@dataclass(frozen=True)
class StepResult:
    """What one training iteration returns.

    ``level_losses`` are the raw (unweighted) per-level losses ``L_i`` of eq. 1 of paper 000, summed over the
    loss terms; ``parts`` splits them by term (torchvision's loss names); ``total`` is the weighted loss that
    was back-propagated; ``iteration`` counts completed iterations (1 after the first call).
    """

    level_losses: np.ndarray
    parts: dict[str, np.ndarray]
    total: float
    weights: np.ndarray
    lr: float
    iteration: int


def resolve_device(device: str) -> torch.device:
    """``"auto"`` picks CUDA when it is available, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("TrainConfig.device='cuda' but CUDA is not available; use 'auto' or 'cpu'")
    return torch.device(device)


def backbone_trunk(model: nn.Module) -> nn.Module | None:
    """The CNN trunk of a detector's backbone: what ``TrainConfig.backbone_lr_mult`` scales.

    torchvision's ``BackboneWithFPN`` keeps the trunk in ``backbone.body`` and the FPN in ``backbone.fpn``;
    :class:`detgym.models.ResFPN` wraps such a backbone as its own ``body`` (beside its residual ``blocks``),
    so there the trunk is ``backbone.body.body``. The FPN and the ResFPN blocks belong to the head's group.
    ``None`` when the model has no such backbone.
    """
    from detgym.models.res_fpn import ResFPN

    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, ResFPN):
        backbone = backbone.body
    return getattr(backbone, "body", None)


class MinibatchOrder:
    """Minibatch indices: epochs of seeded random permutations of ``0..size-1``; batches may straddle epochs.

    The trainer's data order depends on ``seed`` only; a :class:`~detgym.train.VectorTrainer` draws one such
    sequence for all its detectors (common random numbers).
    """

    def __init__(self, size: int, batch_size: int, seed: int) -> None:
        self.size, self.batch_size = int(size), int(batch_size)
        self._generator = torch.Generator().manual_seed(int(seed))
        self._order = torch.empty(0, dtype=torch.long)
        self._cursor = 0
        #: Batches drawn so far.
        self.drawn = 0

    def next(self) -> list[int]:
        """The indices of the next minibatch."""
        out: list[int] = []
        while len(out) < self.batch_size:
            if self._cursor >= len(self._order):
                self._order = torch.randperm(self.size, generator=self._generator)
                self._cursor = 0
            take = min(self.batch_size - len(out), len(self._order) - self._cursor)
            out.extend(self._order[self._cursor : self._cursor + take].tolist())
            self._cursor += take
        self.drawn += 1
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self._generator.get_state(), "order": self._order, "cursor": self._cursor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._generator.set_state(state["generator"])
        self._order = state["order"]
        self._cursor = int(state["cursor"])


class Trainer:
    """Trains a level-aware detector (see :func:`detgym.models.build_detector`) one iteration at a time.

    Each :meth:`step` draws one minibatch, computes the per-level losses ``L_i`` and back-propagates
    ``L_total = Σ_i w_i L_i`` (eq. 1 of paper 000) with the given weights (all ones by default).
    The trainer owns its random state (batch order, and the samplers inside Faster R-CNN), so a run depends
    only on ``config.seed``, whatever else the process draws from torch's global generator in between:
    on the CPU the same seed and the same weights give the same losses.

    Args:
        model: a detector from :func:`detgym.models.build_detector` (anything with ``level_losses`` and
            ``num_levels``).
        train_set: a :class:`detgym.data.DetectionDataset`.
        val_set: the dataset :meth:`evaluate` uses by default.
        config: the :class:`TrainConfig`.
        log_dir: TensorBoard directory; ``None`` logs nothing.
        augment: optional ``augment(images, targets) -> (images, targets)`` applied to every training
            minibatch (float images in 0..1 on the device); it runs under the trainer's own random state,
            so augmented runs are reproducible too. Set ``trainer.augment = None`` to switch it off.
    """

    def __init__(
        self,
        model: nn.Module,
        train_set: Any,
        val_set: Any | None = None,
        config: TrainConfig | None = None,
        log_dir: str | os.PathLike | None = None,
        augment: Callable[[list[torch.Tensor], list[dict]], tuple[list[torch.Tensor], list[dict]]] | None = None,
    ) -> None:
        if not hasattr(model, "level_losses"):
            raise ValueError("model must be a level-aware detector from detgym.models.build_detector")
        if len(train_set) == 0:
            raise ValueError("train_set is empty")
        self.config = config or TrainConfig()
        self.device = resolve_device(self.config.device)
        self.model = model.to(self.device)
        self.train_set = train_set
        self.val_set = val_set
        self.augment = augment
        self.num_levels: int = int(model.num_levels)
        self.iteration = 0
        self._amp = self.config.amp and self.device.type == "cuda"
        self._scaler = torch.amp.GradScaler("cuda", enabled=self._amp)
        self.optimizer = self._build_optimizer()
        self._base_lrs = [g["lr"] for g in self.optimizer.param_groups]
        self._set_lr(0)
        self._batches = MinibatchOrder(len(train_set), self.config.batch_size, self.config.seed)
        self._rng_state = torch.Generator().manual_seed(self.config.seed + 1).get_state()
        self._cuda_rng_state: torch.Tensor | None = None
        self._ones = torch.ones(self.num_levels, device=self.device)
        self._tb = TensorBoardLogger(log_dir)
        self.model.train()

    # ------------------------------------------------------------------ training
    def step(self, level_weights: Sequence[float] | np.ndarray | torch.Tensor | None = None) -> StepResult:
        """Train one iteration with ``L_total = Σ_i w_i L_i`` and return the raw per-level losses.

        Args:
            level_weights: ``num_levels`` finite weights ``w_i`` (``None``: all ones).

        Raises:
            NonFiniteLossError: the loss is NaN or infinite; the parameters are left as they were.
        """
        self._weights_tensor(level_weights)  # bad weights fail before a batch is drawn
        indices = self._next_indices()
        images, targets = self.train_set.batch(indices, device=self.device)
        return self.train_batch(images, targets, level_weights)

    def train_batch(
        self,
        images: list[torch.Tensor],
        targets: list[dict],
        level_weights: Sequence[float] | np.ndarray | torch.Tensor | None = None,
        *,
        losses: Callable[[], dict[str, torch.Tensor]] | None = None,
    ) -> StepResult:
        """One iteration on a given minibatch (what :meth:`step` does after drawing its batch).

        Args:
            images, targets: the minibatch, on the trainer's device.
            level_weights: as in :meth:`step`.
            losses: computes the per-level loss dict in place of ``model.level_losses(images, targets)`` (a
                :class:`~detgym.train.VectorTrainer` passes the detector's loss on a batch its members share).

        Raises:
            NonFiniteLossError: as :meth:`step`.
        """
        weights = self._weights_tensor(level_weights)
        self.model.train()
        with self._own_rng():
            if self.augment is not None:
                images, targets = self.augment(images, targets)
            with torch.autocast(self.device.type, enabled=self._amp):
                per_term = losses() if losses is not None else self.model.level_losses(images, targets)
            stacked = torch.stack([v.float() for v in per_term.values()])  # [terms, levels]
            per_level = stacked.sum(0)
            total = (weights * per_level).sum()
            values = stacked.detach().cpu().double().numpy()
            parts = dict(zip(per_term.keys(), values))
            if not np.isfinite(values).all() or not torch.isfinite(total):
                raise NonFiniteLossError(self.iteration + 1, parts)
            self.optimizer.zero_grad(set_to_none=True)
            self._scaler.scale(total).backward()
            if self.config.grad_clip is not None:
                self._scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
            self._scaler.step(self.optimizer)
            self._scaler.update()
        lr = self.optimizer.param_groups[0]["lr"]
        self.iteration += 1
        self._set_lr(self.iteration)
        result = StepResult(
            level_losses=values.sum(0),
            parts=parts,
            total=float(total.detach()),
            weights=weights.detach().cpu().double().numpy(),
            lr=lr,
            iteration=self.iteration,
        )
        if self._tb.enabled:
            self._log_step(result)
        return result

    def fit(
        self,
        iterations: int | None = None,
        *,
        time_budget_s: float | None = None,
        progress: bool = True,
        level_weights: Sequence[float] | None = None,
    ) -> list[StepResult]:
        """Run :meth:`step` until ``iterations`` (default: the rest of the schedule) or ``time_budget_s`` runs out."""
        from tqdm.auto import tqdm

        todo = self.config.iterations - self.iteration if iterations is None else iterations
        results = []
        start = time.perf_counter()
        with tqdm(total=todo, disable=not progress, desc="train", unit="it") as bar:
            for _ in range(todo):
                result = self.step(level_weights)
                results.append(result)
                bar.update(1)
                if result.iteration % 10 == 0:
                    bar.set_postfix(loss=f"{result.level_losses.sum():.3f}", lr=f"{result.lr:.2e}")
                if time_budget_s is not None and time.perf_counter() - start >= time_budget_s:
                    break
        return results

    # ---------------------------------------------------------------- evaluation
    @torch.inference_mode()
    def predict(self, dataset: Any | None = None, *, batch_size: int | None = None) -> list[dict[str, Any]]:
        """Detections of the current model on ``dataset`` (default: the val set) as a COCO results list."""
        dataset = self._eval_set(dataset)
        batch_size = batch_size or self.config.eval_batch_size
        return predict_coco(self.model, dataset, batch_size=batch_size, device=self.device)

    def evaluate(self, dataset: Any | None = None, *, batch_size: int | None = None) -> dict[str, float]:
        """COCO stats (AP, AP50, ..., ARl) of the current model on ``dataset`` (default: the val set)."""
        from detgym.metrics import coco_evaluate

        dataset = self._eval_set(dataset)
        stats = coco_evaluate(dataset.coco_gt(), self.predict(dataset, batch_size=batch_size))
        self._tb.scalars("val", stats, self.iteration)
        return stats

    # --------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: model, optimizer, scaler, iteration, data order and random state."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self._scaler.state_dict(),
            "iteration": self.iteration,
            "config": asdict(self.config),
            **self._batches.state_dict(),
            "rng_state": self._rng_state,
            "cuda_rng_state": self._cuda_rng_state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self._scaler.load_state_dict(state["scaler"])
        self.iteration = int(state["iteration"])
        self._batches.load_state_dict(state)
        self._rng_state = state["rng_state"]
        self._cuda_rng_state = state.get("cuda_rng_state")
        self._set_lr(self.iteration)

    def save_checkpoint(self, path: str | os.PathLike) -> None:
        """Write :meth:`state_dict` atomically (temporary file, then rename)."""
        atomic_torch_save(self.state_dict(), path)

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Resume from a file written by :meth:`save_checkpoint`."""
        self.load_state_dict(load_checkpoint_file(path, map_location=self.device))

    def close(self) -> None:
        """Close the TensorBoard event file (safe to call twice)."""
        self._tb.close()

    # ------------------------------------------------------------------ internals
    def _build_optimizer(self) -> torch.optim.Optimizer:
        cfg = self.config
        backbone = backbone_trunk(self.model)
        backbone_ids = {id(p) for p in backbone.parameters()} if backbone is not None else set()
        head = [p for p in self.model.parameters() if p.requires_grad and id(p) not in backbone_ids]
        body = [p for p in self.model.parameters() if p.requires_grad and id(p) in backbone_ids]
        groups = [{"params": head, "lr": cfg.lr}]
        if body:
            groups.append({"params": body, "lr": cfg.lr * cfg.backbone_lr_mult})
        # foreach: one multi-tensor call per group instead of a Python loop over ~100 parameters (on the CPU torch
        # defaults to the loop); the update is the same, bit for bit
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(
                groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, foreach=True
            )
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)

    def _set_lr(self, iteration: int) -> None:
        factor = lr_factor(iteration, self.config)
        for group, base in zip(self.optimizer.param_groups, self._base_lrs):
            group["lr"] = base * factor

    def _next_indices(self) -> list[int]:
        return self._batches.next()

    @property
    def lr(self) -> float:
        """The learning rate of the next iteration (of the first parameter group: the head's)."""
        return float(self.optimizer.param_groups[0]["lr"])

    def _weights_tensor(self, level_weights: Any) -> torch.Tensor:
        if level_weights is None:
            return self._ones
        if isinstance(level_weights, torch.Tensor):
            w = level_weights.detach().to(device=self.device, dtype=torch.float32)
        else:
            w = torch.as_tensor(np.asarray(level_weights, dtype=np.float32), device=self.device)
        if w.shape != (self.num_levels,):
            raise ValueError(
                f"level_weights must have shape ({self.num_levels},) (one weight per level "
                f"{getattr(self.model, 'level_names', '')}), got {tuple(w.shape)}"
            )
        if not torch.isfinite(w).all():
            raise ValueError(f"level_weights must be finite, got {w.tolist()}")
        return w

    @contextlib.contextmanager
    def _own_rng(self) -> Iterator[None]:
        """Run with the trainer's own torch random state, so that the caller's draws never change training."""
        cuda = self.device.type == "cuda"
        devices = [self.device.index or 0] if cuda else []
        with torch.random.fork_rng(devices=devices):
            torch.set_rng_state(self._rng_state)
            if cuda and self._cuda_rng_state is not None:
                torch.cuda.set_rng_state(self._cuda_rng_state, self.device)
            try:
                yield
            finally:
                self._rng_state = torch.get_rng_state()
                if cuda:
                    self._cuda_rng_state = torch.cuda.get_rng_state(self.device)

    def _eval_set(self, dataset: Any | None) -> Any:
        dataset = dataset if dataset is not None else self.val_set
        if dataset is None:
            raise ValueError("no dataset to evaluate: pass one or give the Trainer a val_set")
        return dataset

    def _log_step(self, r: StepResult) -> None:
        tb, step = self._tb, r.iteration
        names = getattr(self.model, "level_names", [str(i) for i in range(self.num_levels)])
        tb.scalar("train/loss_total", r.total, step)
        tb.scalar("train/lr", r.lr, step)
        tb.scalars("train/level_loss", dict(zip(names, r.level_losses)), step)
        tb.scalars("train/level_weight", dict(zip(names, r.weights)), step)
        tb.scalars("train", {term: v.sum() for term, v in r.parts.items()}, step)
