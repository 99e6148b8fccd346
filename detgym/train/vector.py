"""VectorTrainer: N detectors of one recipe trained in lockstep on one minibatch sequence.

Every member is a full :class:`~detgym.train.Trainer` (its own detector, optimizer, learning-rate schedule and
random state, seeded like a single trainer), so a member computes exactly what a single trainer with the same
seeds computes, bit for bit, on the CPU. What the members share is what does not depend on their weights: the
minibatch sequence (one :class:`~detgym.train.trainer.MinibatchOrder`: common random numbers, which pairs any
comparison of the members' level weights), the batch itself, and for the dense detectors (RetinaNet, FCOS) the
transformed batch, the anchors and the ground-truth matching, computed once per iteration
(``prepare_batch`` / ``batch_level_losses``). Faster R-CNN's matching depends on each member's proposals, so its
members run their whole training pass each.

Why the members' convolutions are not fused into one grouped convolution (or ``torch.func.vmap``, which lowers to
the same grouped kernel): on the CPU, oneDNN's grouped convolutions of these shapes measured 0.5-1.2x the speed of
the same convolutions run model by model (``benchmarks/profile_step.py``), and
convolutions are 85% of a tiny detector's iteration there, so fusing would cost time and exactness. On a GPU
the opposite holds (a tiny detector leaves it idle between kernel launches): ``batching="vmap"`` (the default on
CUDA) runs all members' backbones and heads as one ``torch.func.vmap`` (:mod:`detgym.train.stacked`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import partial
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from .config import TrainConfig
from .trainer import MinibatchOrder, NonFiniteLossError, StepResult, Trainer, resolve_device

__all__ = ["BATCHINGS", "VectorStep", "VectorTrainer", "available_memory", "member_memory_bytes", "resolve_batching"]


@dataclass(frozen=True)
class VectorStep:
    """One lockstep iteration: per member its :class:`StepResult`, or ``None`` (inactive, or diverged: then its
    :class:`NonFiniteLossError` is in ``errors``)."""

    results: list[StepResult | None]
    errors: list[NonFiniteLossError | None]


class VectorTrainer:
    """Train several detectors of one recipe on one minibatch sequence (see the module docstring).

    Args:
        models: the members' detectors (same recipe: same family, input size, anchors and matching settings).
        train_set: the dataset all members train on.
        val_set: the dataset :meth:`evaluate` uses by default.
        config: the :class:`TrainConfig` of every member; ``config.seed`` seeds the shared minibatch sequence and
            every member's own random state exactly as it seeds a single :class:`Trainer`.
        batching: ``"loop"`` (members one after the other: exact, the CPU's choice), ``"vmap"`` (one forward and
            backward for all members, :mod:`detgym.train.stacked`: dense detectors, the GPU's choice) or
            ``"auto"`` (vmap for dense detectors on CUDA, else loop).
    """

    def __init__(
        self,
        models: Sequence[nn.Module],
        train_set: Any,
        val_set: Any | None = None,
        config: TrainConfig | None = None,
        batching: str = "auto",
    ) -> None:
        if len(models) < 1:
            raise ValueError("models must hold at least one detector")
        self.config = config or TrainConfig()
        self.device = resolve_device(self.config.device)
        self.train_set, self.val_set = train_set, val_set
        self.batching = resolve_batching(batching, self.device, all(hasattr(m, "prepare_batch") for m in models))
        self.members: list[Trainer] = []
        self._stacked: Any = None
        self.restart(models, self.config.seed)

    @property
    def num_members(self) -> int:
        return len(self.members)

    def restart(self, models: Sequence[nn.Module], seed: int) -> None:
        """New members on ``models`` and a new minibatch sequence from ``seed`` (every member starts at iteration 0)."""
        if len(models) != len(self.members) and self.members:
            raise ValueError(f"restart needs {len(self.members)} models (one per member), got {len(models)}")
        self.close()
        self.config = self.config.replace(seed=int(seed))
        self.members = [self._member(m) for m in models]
        self.order = MinibatchOrder(len(self.train_set), self.config.batch_size, self.config.seed)
        self._shared = all(hasattr(m.model, "prepare_batch") for m in self.members)
        self._rng_state = torch.Generator().manual_seed(self.config.seed + 1).get_state()
        if self.batching == "vmap":
            from .stacked import StackedMembers

            self._stacked = StackedMembers(self.members, self.config)

    def replace_member(self, index: int, model: nn.Module) -> Trainer:
        """Member ``index`` starts over on ``model`` (new optimizer, schedule at iteration 0, random state from the
        sequence's seed) and joins the shared minibatch sequence where it is."""
        self.members[index].close()
        self.members[index] = self._member(model)
        if self._stacked is not None:
            self._stacked.replace(index, self.members[index])
        return self.members[index]

    def step(self, level_weights: Any, active: Any = None) -> VectorStep:
        """One iteration of every active member on the next minibatch of the shared sequence.

        Args:
            level_weights: ``[num_members, num_levels]`` weights (row ``n`` for member ``n``).
            active: ``[num_members]`` bools, the members that train (default: all). Inactive members skip the
                minibatch: the sequence moves on for everybody.

        A member whose loss is not finite raises nothing here: its error is in the result, its parameters are
        left as they were (as :meth:`Trainer.step` leaves them), the others train on.
        """
        n = self.num_members
        weights = np.asarray(level_weights, dtype=np.float32)
        levels = self.members[0].num_levels
        if weights.shape != (n, levels):
            raise ValueError(f"level_weights must have shape ({n}, {levels}) (one row per member), got {weights.shape}")
        on = np.ones(n, dtype=bool) if active is None else np.asarray(active, dtype=bool)
        if on.shape != (n,):
            raise ValueError(f"active must have shape ({n},) (one flag per member), got {on.shape}")
        images, targets = self.train_set.batch(self.order.next(), device=self.device)
        if self._stacked is not None:
            batch = self._shared_batch(images, targets, on)
            if batch is None:
                return VectorStep([None] * n, [None] * n)
            return VectorStep(*self._stacked.step(batch, weights, on))
        losses = self._shared_losses(images, targets, on)
        results: list[StepResult | None] = [None] * n
        errors: list[NonFiniteLossError | None] = [None] * n
        for i in np.flatnonzero(on):
            try:
                results[i] = self.members[i].train_batch(images, targets, weights[i], losses=losses[i])
            except NonFiniteLossError as err:
                errors[i] = err
        return VectorStep(results, errors)

    def evaluate(self, index: int, dataset: Any | None = None) -> dict[str, float]:
        """COCO stats of member ``index`` (see :meth:`Trainer.evaluate`)."""
        return self.members[index].evaluate(dataset)

    def close(self) -> None:
        for member in self.members:
            member.close()

    # ------------------------------------------------------------------ internals
    def _member(self, model: nn.Module) -> Trainer:
        return Trainer(model, self.train_set, self.val_set, self.config)

    def _shared_losses(self, images: list, targets: list, on: np.ndarray) -> list[Any]:
        """Per member the loss function on the batch that the dense members share (``None``: its own pass)."""
        batch = self._shared_batch(images, targets, on) if self._shared else None
        if batch is None:
            return [None] * self.num_members
        return [partial(m.model.batch_level_losses, batch) for m in self.members]

    def _shared_batch(self, images: list, targets: list, on: np.ndarray) -> Any:
        """The transformed batch the dense members share (``None`` when no member trains)."""
        if not on.any():
            return None
        from detgym.models._utils import check_targets

        first = self.members[int(np.flatnonzero(on)[0])].model.train()
        check_targets(images, targets, first.num_object_classes)
        # the transform draws torchvision's random size pick; it changes nothing at a fixed size, but its draws
        # come from this trainer's own stream, never from the caller's
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self._rng_state)
            batch = first.prepare_batch(images, targets)
            self._rng_state = torch.get_rng_state()
        return batch


BATCHINGS = ("auto", "loop", "vmap")


def resolve_batching(batching: str, device: torch.device, dense: bool) -> str:
    """``"loop"`` or ``"vmap"``: ``"auto"`` picks vmap for dense detectors on CUDA, the loop everywhere else.

    Raises:
        ValueError: an unknown name, or ``"vmap"`` for a detector whose matching depends on its weights (Faster
            R-CNN: proposals).
    """
    from detgym._validation import check_choice

    check_choice("batching", batching, BATCHINGS)
    if batching == "auto":
        return "vmap" if dense and device.type == "cuda" else "loop"
    if batching == "vmap" and not dense:
        raise ValueError("batching='vmap' needs a dense detector (RetinaNet, FCOS); Faster R-CNN runs batching='loop'")
    return batching


# ------------------------------------------------------------------------------------------------- memory
def member_memory_bytes(model: nn.Module, images: list, targets: list, optimizer: str = "adamw") -> int:
    """Estimated bytes one member needs: parameters, gradients, optimizer state and the activations that one
    training pass on ``images`` keeps for its backward (measured with saved-tensor hooks, shared storages once)."""
    params = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    states = 2 if optimizer == "adamw" else 1
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    was_training = model.training
    model.train()
    # the caller's random stream is left alone (Faster R-CNN samples anchors and RoIs)
    with torch.random.fork_rng(devices=[]), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        losses = model.level_losses(images, targets)
    del losses
    model.train(was_training)
    return int(params * (2 + states) + sum(seen.values()))


def available_memory(device: torch.device) -> int | None:
    """Free bytes on ``device`` (CUDA: the driver's figure; CPU: ``MemAvailable``), ``None`` when unknown."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None
