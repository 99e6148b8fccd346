"""One forward and one backward for all members of a :class:`~detgym.train.VectorTrainer` (``batching="vmap"``).

The members' parameters and buffers live stacked, ``[N, ...]`` per tensor (``torch.func.stack_module_state``);
every member detector's own parameters are views into them, so evaluating or exporting a member needs no copy.
One training iteration runs the backbone and head of all N members as one ``torch.func.vmap`` over
``functional_call`` (convolutions become grouped convolutions over N x C channels, BatchNorm / GroupNorm stay per
member), the head's loss member by member on slices of the stacked outputs (anchors and matching computed once;
torchvision's GIoU loss indexes with boolean masks, which ``vmap`` cannot batch), one backward, and the optimizer
as element-wise tensor ops over the stacked tensors with a per-member learning rate, step count and gradient-norm
clip. AdamW and SGD follow torch's update formulas (``torch.optim.AdamW`` /
``SGD`` with momentum), so a member matches a loop-mode member to float tolerance, not bit for bit (summation
order); under AMP one dynamic loss scale serves all members (a member whose gradients overflow skips that update,
as torch's ``GradScaler`` skips a step).

This is the GPU path: a tiny detector leaves a GPU idle between kernel launches, and here the launches are shared
by N members. On the CPU, oneDNN's grouped convolutions are slower than the per-member ones for these shapes, so
``VectorTrainer`` uses the loop there (see its module docstring).
"""

from __future__ import annotations

import copy
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from .config import TrainConfig
from .trainer import NonFiniteLossError, StepResult, Trainer, backbone_trunk

__all__ = ["StackedMembers"]

_BETAS = (0.9, 0.999)  # torch.optim.AdamW's defaults, which Trainer uses
_EPS = 1e-8
_SCALE = {"init": 2.0**16, "growth": 2.0, "backoff": 0.5, "interval": 2000}  # torch GradScaler's defaults


def _sub(tensors: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


class StackedMembers:
    """Stacked parameters, the vmapped training pass and the vectorised optimizer of N dense detectors.

    Args:
        trainers: the members (:class:`Trainer` objects: detector, schedule, iteration count); their detectors'
            parameters and buffers become views into the stacked tensors.
        config: the members' :class:`TrainConfig` (optimizer, lr, weight decay, grad clip, AMP).
    """

    def __init__(self, trainers: Sequence[Trainer], config: TrainConfig) -> None:
        self.trainers = list(trainers)
        self.config = config
        models = [t.model for t in self.trainers]
        self.device = self.trainers[0].device
        self.base = copy.deepcopy(models[0]).to("meta")  # the structure functional_call runs with stacked tensors
        params, buffers = stack_module_state(models)
        self.params: dict[str, Tensor] = params
        self.buffers: dict[str, Tensor] = buffers
        trunk = backbone_trunk(models[0])
        trunk_ids = {id(p) for p in trunk.parameters()} if trunk is not None else set()
        #: Parameters of the CNN trunk (learning rate x ``backbone_lr_mult``), as in Trainer's parameter groups.
        self.trunk = {name for name, p in models[0].named_parameters() if id(p) in trunk_ids}
        n = len(models)
        self.steps = np.zeros(n, dtype=np.int64)
        self.state: dict[str, list[Tensor]] = {
            name: [torch.zeros_like(p) for _ in range(2 if config.optimizer == "adamw" else 1)]
            for name, p in self.params.items()
        }
        self.amp = config.amp and self.device.type == "cuda"
        self.scale = _SCALE["init"] if self.amp else 1.0
        self._good_steps = 0
        for index, model in enumerate(models):
            self._attach(index, model)

    # ------------------------------------------------------------------ members
    def _attach(self, index: int, model: nn.Module) -> None:
        """Make ``model``'s parameters and buffers views of slice ``index`` of the stacked tensors."""
        for name, p in model.named_parameters():
            p.data = self.params[name].detach()[index]
        for name, _ in model.named_buffers():
            owner, _, leaf = name.rpartition(".")
            module = model.get_submodule(owner) if owner else model
            module._buffers[leaf] = self.buffers[name][index]

    def replace(self, index: int, trainer: Trainer) -> None:
        """Member ``index`` becomes ``trainer``'s fresh detector: its weights are copied in, its optimizer state
        and step count cleared."""
        model = trainer.model
        with torch.no_grad():
            for name, p in model.named_parameters():
                self.params[name][index].copy_(p)
            for name, b in model.named_buffers():
                self.buffers[name][index].copy_(b)
            for slots in self.state.values():
                for s in slots:
                    s[index].zero_()
        self.steps[index] = 0
        self.trainers[index] = trainer
        self._attach(index, model)

    # ------------------------------------------------------------------ one iteration
    def step(self, batch: Any, weights: np.ndarray, active: np.ndarray) -> tuple[list, list]:
        """One iteration of the active members on a prepared dense batch (``DenseTrainingBatch``).

        Returns per member ``(StepResult or None, NonFiniteLossError or None)`` lists, as ``VectorTrainer.step``.
        """
        n = len(self.trainers)
        first = self.trainers[0].model
        self.base.train()
        with torch.autocast(self.device.type, enabled=self.amp):
            features, head_outputs = self._forward(batch.images.tensors)
            if batch.matched_idxs is None:
                batch.anchors = first.anchor_generator(batch.images, [f[0] for f in features])
                sizes = [f.shape[-2] * f.shape[-1] for f in features]
                batch.matched_idxs = first.match_targets(batch.targets, batch.anchors, sizes)
            per_term = self._losses(batch, head_outputs)
        stacked = torch.stack([v.float() for v in per_term.values()], dim=1)  # [N, terms, levels]
        values = stacked.detach().cpu().double().numpy()
        finite = np.isfinite(values).all(axis=(1, 2))
        train = active & finite
        w = torch.as_tensor(weights * train[:, None], dtype=torch.float32, device=self.device)
        # members that do not train contribute 0 (their grads are cleared below, whatever NaN they carry)
        total = (w * torch.nan_to_num(stacked.sum(1), nan=0.0, posinf=0.0, neginf=0.0)).sum()
        for p in self.params.values():
            p.grad = None
        (total * self.scale).backward()
        self._update(train)
        results: list[StepResult | None] = [None] * n
        errors: list[NonFiniteLossError | None] = [None] * n
        keys = list(per_term)
        for i in np.flatnonzero(active):
            trainer = self.trainers[i]
            parts = dict(zip(keys, values[i]))
            if not finite[i]:
                errors[i] = NonFiniteLossError(trainer.iteration + 1, parts)
                continue
            lr = trainer.lr
            trainer.iteration += 1
            trainer._set_lr(trainer.iteration)
            results[i] = StepResult(
                level_losses=values[i].sum(0), parts=parts,
                total=float((weights[i] * values[i].sum(0)).sum()),
                weights=np.asarray(weights[i], dtype=np.float64), lr=lr, iteration=trainer.iteration,
            )
        return results, errors

    def _forward(self, images: Tensor) -> tuple[list[Tensor], dict[str, Tensor]]:
        base = self.base

        def one(params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor) -> tuple:
            feats = functional_call(base.backbone, (_sub(params, "backbone."), _sub(buffers, "backbone.")), (x,))
            feats = list(feats.values())
            out = functional_call(base.head, (_sub(params, "head."), _sub(buffers, "head.")), (feats,))
            return feats, out

        return vmap(one, in_dims=(0, 0, None))(self.params, self.buffers, images)

    def _losses(self, batch: Any, head_outputs: dict[str, Tensor]) -> dict[str, Tensor]:
        """``{term: [N, levels]}``: the head's per-level loss of every member on its slice of the outputs.

        A loop: the box losses index with boolean masks (torchvision's GIoU), which ``vmap`` cannot batch; the
        matching they index with is computed once for all members.
        """
        head = self.base.head
        per_member = [
            head.compute_loss(batch.targets, {k: v[i] for k, v in head_outputs.items()}, batch.anchors,
                              batch.matched_idxs)
            for i in range(len(self.trainers))
        ]
        return {k: torch.stack([m[k] for m in per_member]) for k in per_member[0]}

    # ------------------------------------------------------------------ optimizer
    def _member_view(self, values: Any, like: Tensor, dtype: torch.dtype | None = None) -> Tensor:
        """Per-member ``values`` shaped ``[N, 1, ...]`` to broadcast against the stacked tensor ``like``."""
        out = torch.as_tensor(values, dtype=dtype or like.dtype, device=like.device)
        return out.view(-1, *([1] * (like.dim() - 1)))

    def _update(self, train: np.ndarray) -> np.ndarray:
        """Unscale, clear the gradients of members that do not train, clip per member, and apply the optimizer to
        the members whose gradients are finite. Returns the mask of members updated."""
        cfg = self.config
        grads = {name: p.grad for name, p in self.params.items() if p.grad is not None}
        if self.scale != 1.0:
            for g in grads.values():
                g.div_(self.scale)
        sq = torch.zeros(len(self.trainers), dtype=torch.float64, device=self.device)
        for g in grads.values():
            sq += g.detach().double().pow(2).flatten(1).sum(1)
        grad_ok = torch.isfinite(sq).cpu().numpy()
        update = train & grad_ok
        if self.amp:
            self._update_scale(bool((train & ~grad_ok).any()))
        for name, g in grads.items():
            keep = self._member_view(update, g, torch.bool)
            grads[name] = torch.where(keep, g, torch.zeros((), dtype=g.dtype, device=g.device))
        if cfg.grad_clip is not None:
            norm = torch.where(torch.as_tensor(update, device=self.device), sq, torch.zeros_like(sq)).sqrt()
            coef = (cfg.grad_clip / (norm + 1e-6)).clamp(max=1.0)
            for g in grads.values():
                g.mul_(self._member_view(coef, g))
        self.steps += update
        lrs = {kind: np.array([t.optimizer.param_groups[min(kind, len(t.optimizer.param_groups) - 1)]["lr"]
                               for t in self.trainers]) for kind in (0, 1)}
        with torch.no_grad():
            for name, p in self.params.items():
                if name not in grads:
                    continue
                lr = np.where(update, lrs[1 if name in self.trunk else 0], 0.0)
                if cfg.optimizer == "adamw":
                    self._adamw(p, grads[name], self.state[name], lr, update)
                else:
                    self._sgd(p, grads[name], self.state[name][0], lr, update)
        return update

    def _adamw(self, p: Tensor, g: Tensor, state: list[Tensor], lr: np.ndarray, update: np.ndarray) -> None:
        """torch's AdamW (single-tensor formula) with per-member lr and step; members with lr 0 / no update keep
        their parameters and moments."""
        exp_avg, exp_avg_sq = state
        b1, b2 = _BETAS
        m = self._member_view(update, p, torch.bool)
        steps = np.maximum(self.steps, 1).astype(np.float64)
        p.mul_(self._member_view(1.0 - lr * self.config.weight_decay, p))
        exp_avg.lerp_(g, self._member_view(np.where(update, 1.0 - b1, 0.0), p))
        exp_avg_sq.mul_(self._member_view(np.where(update, b2, 1.0), p)).add_(
            g * g * self._member_view(np.where(update, 1.0 - b2, 0.0), p))
        step_size = self._member_view(lr / (1.0 - b1**steps), p)
        denom = (exp_avg_sq.sqrt() / self._member_view(np.sqrt(1.0 - b2**steps), p)).add_(_EPS)
        p.sub_(torch.where(m, exp_avg / denom * step_size, torch.zeros((), dtype=p.dtype, device=p.device)))

    def _sgd(self, p: Tensor, g: Tensor, buf: Tensor, lr: np.ndarray, update: np.ndarray) -> None:
        """torch's SGD with momentum (dampening 0, the first step's buffer = the gradient), per-member lr."""
        cfg = self.config
        d_p = g + cfg.weight_decay * p
        first = self._member_view(update & (self.steps == 1), p, torch.bool)
        m = self._member_view(update, p, torch.bool)
        buf.copy_(torch.where(first, d_p, torch.where(m, buf * cfg.momentum + d_p, buf)))
        p.sub_(torch.where(m, buf * self._member_view(lr, p), torch.zeros((), dtype=p.dtype, device=p.device)))

    def _update_scale(self, overflow: bool) -> None:
        if overflow:
            self.scale *= _SCALE["backoff"]
            self._good_steps = 0
            return
        self._good_steps += 1
        if self._good_steps >= _SCALE["interval"]:
            self.scale *= _SCALE["growth"]
            self._good_steps = 0
