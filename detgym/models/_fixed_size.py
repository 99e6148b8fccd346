"""Fast paths for fixed-size inputs (every image of a batch already at the model's input size).

The digits set is square at the detector's size, so two things torchvision recomputes every iteration are
constants or identities there:

* :class:`CachedAnchorGenerator`: the anchors depend only on the input size and the feature-map sizes; they are
  computed once per such key and reused (torchvision's ``AnchorGenerator`` rebuilds them on every call).
* :class:`FixedSizeTransform`: resizing an image to its own size is the identity (bilinear interpolation at
  scale 1 reads every pixel with weight 1; boxes are multiplied by 1), so it is skipped, and the normalisation
  runs once on the stacked batch instead of once per image. Same values, bit for bit; any other batch takes
  torchvision's path. In training mode torchvision draws one random number per image to pick the size from
  ``min_size``; the fast path draws the same numbers, so the random stream (Faster R-CNN's samplers) is unchanged.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.transform import GeneralizedRCNNTransform

__all__ = ["CachedAnchorGenerator", "FixedSizeTransform"]

_CACHE_ENTRIES = 8


class CachedAnchorGenerator(AnchorGenerator):
    """torchvision's ``AnchorGenerator`` that remembers its output per (input size, feature sizes, dtype, device).

    Every image of a call gets the same anchor tensor (torchvision returns equal copies); nothing downstream
    writes into anchors. The cache holds a few entries and is not part of the state dict.
    """

    @classmethod
    def from_generator(cls, generator: Any) -> Any:
        """A caching generator with ``generator``'s sizes and aspect ratios (same cell anchors); any generator
        other than torchvision's own ``AnchorGenerator`` is returned unchanged (its output may not be a constant)."""
        if type(generator) is not AnchorGenerator:
            return generator
        return cls(generator.sizes, generator.aspect_ratios)

    def forward(self, image_list: ImageList, feature_maps: list[Tensor]) -> list[Tensor]:
        key = (
            tuple(image_list.tensors.shape[-2:]),
            tuple(tuple(f.shape[-2:]) for f in feature_maps),
            feature_maps[0].dtype,
            feature_maps[0].device,
        )
        cache: dict = self.__dict__.setdefault("_anchor_cache", {})
        anchors = cache.get(key)
        if anchors is None:
            probe = ImageList(image_list.tensors[:1], image_list.image_sizes[:1])
            anchors = super().forward(probe, feature_maps)[0]
            if len(cache) >= _CACHE_ENTRIES:
                cache.clear()
            cache[key] = anchors
        return [anchors] * len(image_list.image_sizes)


class FixedSizeTransform(GeneralizedRCNNTransform):
    """torchvision's detection transform with the fixed-size fast path described in the module docstring."""

    @classmethod
    def from_transform(cls, transform: Any) -> Any:
        """The same transform settings with the fast path; anything but torchvision's own transform is returned
        unchanged."""
        if type(transform) is not GeneralizedRCNNTransform:
            return transform
        new = cls(
            transform.min_size,
            transform.max_size,
            transform.image_mean,
            transform.image_std,
            size_divisible=transform.size_divisible,
            fixed_size=transform.fixed_size,
            _skip_resize=getattr(transform, "_skip_resize", False),
        )
        new.train(transform.training)
        return new

    def _fixed_size(self, images: list[Tensor]) -> bool:
        size = self.max_size
        return (
            self.fixed_size is None
            and not getattr(self, "_skip_resize", False)
            and tuple(self.min_size) == (size,)
            and size % self.size_divisible == 0
            and all(
                img.dim() == 3 and img.shape[-2] == size and img.shape[-1] == size and img.dtype == images[0].dtype
                for img in images
            )
            and images[0].is_floating_point()
        )

    def forward(
        self, images: list[Tensor], targets: Optional[list[dict[str, Tensor]]] = None
    ) -> tuple[ImageList, Optional[list[dict[str, Tensor]]]]:
        if not images or not self._fixed_size(images):
            return super().forward(images, targets)
        if self.training:
            for _ in images:  # the random size pick of torchvision's resize (one choice: always the same size)
                self.torch_choice(self.min_size)
        batch = torch.stack(list(images))
        mean = torch.as_tensor(self.image_mean, dtype=batch.dtype, device=batch.device)
        std = torch.as_tensor(self.image_std, dtype=batch.dtype, device=batch.device)
        batch = (batch - mean[None, :, None, None]) / std[None, :, None, None]
        out: Optional[list[dict[str, Any]]] = None
        if targets is not None:
            # torchvision's resize returns new box tensors; copies keep callers' targets safe from in-place edits
            out = [{**t, "boxes": t["boxes"].clone()} for t in targets]
        size = (int(batch.shape[-2]), int(batch.shape[-1]))
        return ImageList(batch, [size] * len(images)), out
