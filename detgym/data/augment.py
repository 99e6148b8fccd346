"""Training-time augmentation of paper 004 (section 2.1 (2)), on batched float tensors, boxes included.

:class:`DetectionAugment` is a callable ``augment(images, targets) -> (images, targets)`` that plugs
into :class:`detgym.train.Trainer` (``Trainer(..., augment=DetectionAugment())``). It applies, per
image, in this order:

1. **ColorJitter** (paper 004, 2.1 (2) a): brightness, contrast, saturation and hue factors drawn
   uniformly, applied when a uniform draw falls below ``color_jitter_prob`` (the paper's "HSV
   probability").
2. **SVHN colour policy** (2.1 (2) d, after AutoAugment [1] of paper 004): one :class:`SubPolicy` of
   two colour operations (each with its own probability and magnitude) is drawn per image from
   :class:`SVHNColorPolicy`. The default sub-policies are AutoAugment's SVHN policy with its
   geometric operations (ShearX/Y, TranslateX/Y, Rotate) removed: the paper keeps this component
   colour-only, and geometry is the affine step's job, which moves the boxes with the pixels.
3. **Horizontal flip** (2.1 (2) b): only when ``flip_prob > 0``. Off by default: a mirrored digit is
   not the same digit (and the digit string would read backwards).
4. **Random affine** (2.1 (2) c): rotation, scale, translation and shear about the image centre.
   Every box is mapped through its four corners, replaced by their enclosing axis-aligned
   rectangle, and clipped to the image; boxes that end up degenerate (narrower or lower than
   ``min_box_size`` px, or with less than ``min_visibility`` of the mapped box inside the image) are
   dropped together with their labels (and any other per-box entry of the target).

Colour operations come first so that the constant ``fill`` of the affine border stays a neutral
grey that no Invert / Solarize turns into a signal.

Everything runs on the images' device, vectorised over images of the same size (images of different
sizes are processed in groups). All random numbers are drawn on the CPU from torch's global
generator (or the ``generator`` passed in), so the result depends only on that generator's state,
not on the device: under ``torch.manual_seed(s)`` (or inside :class:`~detgym.train.Trainer`, which runs
augmentation under its own random state) the same inputs give the same outputs.

Coordinates: boxes are xyxy in continuous pixel coordinates (pixel column c covers x in [c, c+1)),
the convention of :mod:`detgym.data`; the image is resampled with ``grid_sample(align_corners=False)``
which uses the same convention, so a box follows its pixels exactly (up to interpolation).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.nn.functional as nnf
from torchvision.transforms.v2 import functional as TF

__all__ = [
    "COLOR_OPS",
    "AugmentConfig",
    "DetectionAugment",
    "SubPolicy",
    "SVHNColorPolicy",
    "SVHN_COLOR_SUBPOLICIES",
    "affine_matrix",
    "transform_boxes",
]

Target = dict[str, torch.Tensor]

# ----------------------------------------------------------------------------------------- colour ops
# Every op maps (x [n, 3, H, W] float in 0..1, magnitude index m [n] long in 0..9, sign [n] +-1) -> same shape.
# Magnitude bins follow AutoAugment (10 bins) as torchvision implements them.
_NUM_BINS = 10


def _gray(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601-2 luma, as PIL's ``convert("L")`` and torchvision's ``rgb_to_grayscale``; [n, 1, H, W]."""
    return (0.2989 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    f = factor.to(x.dtype).view(-1, 1, 1, 1)
    return (f * x + (1 - f) * other).clamp_(0.0, 1.0)


def _brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return _blend(x, torch.zeros_like(x), factor)


def _contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    mean = _gray(x).mean(dim=(1, 2, 3), keepdim=True)
    return _blend(x, mean.expand_as(x), factor)


def _saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return _blend(x, _gray(x).expand_as(x), factor)


def _rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    maxc, _ = x.max(dim=1)
    minc, _ = x.min(dim=1)
    delta = maxc - minc
    s = torch.where(maxc > 0, delta / maxc.clamp_min(1e-12), torch.zeros_like(maxc))
    d = delta.clamp_min(1e-12)
    h = torch.where(
        maxc == r, ((g - b) / d) % 6.0, torch.where(maxc == g, (b - r) / d + 2.0, (r - g) / d + 4.0)
    )
    h = torch.where(delta > 0, h / 6.0, torch.zeros_like(h))
    return torch.stack([h, s, maxc], dim=1)


def _hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    h, s, v = x.unbind(1)
    k = torch.stack([(5.0 + h * 6.0) % 6.0, (3.0 + h * 6.0) % 6.0, (1.0 + h * 6.0) % 6.0], dim=1)
    return v.unsqueeze(1) - (v * s).unsqueeze(1) * torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0)


def _hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue by ``shift`` (fraction of the colour circle, per image), as ColorJitter's hue."""
    hsv = _rgb_to_hsv(x)
    hsv[:, 0] = (hsv[:, 0] + shift.to(x.dtype).view(-1, 1, 1)) % 1.0
    return _hsv_to_rgb(hsv).clamp_(0.0, 1.0)


def _op_invert(x: torch.Tensor, m: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    return 1.0 - x


def _op_equalize(x: torch.Tensor, m: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    return TF.equalize(x)


def _op_autocontrast(x: torch.Tensor, m: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    return TF.autocontrast(x)


def _op_solarize(x: torch.Tensor, m: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    # AutoAugment: threshold linspace(1, 0, 10)[m] of the intensity range; pixels >= threshold are inverted.
    thr = (1.0 - m.to(x.dtype) / (_NUM_BINS - 1)).view(-1, 1, 1, 1)
    return torch.where(x >= thr, 1.0 - x, x)


def _op_posterize(x: torch.Tensor, m: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    # AutoAugment: bits = 8 - round(m / ((bins - 1) / 4)), i.e. 8 bits at m=0 down to 4 bits at m=9.
    bits = 8 - torch.round(m.to(torch.float64) / ((_NUM_BINS - 1) / 4)).long()
    q = (2.0 ** (8 - bits)).to(x.dtype).view(-1, 1, 1, 1)
    return torch.floor(torch.floor(x * 255.0 + 0.5) / q) * q / 255.0


def _enhance(fn: Any) -> Any:
    def op(x: torch.Tensor, m: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
        # AutoAugment's Brightness / Color / Contrast: factor 1 +- linspace(0, 0.9, 10)[m], random sign.
        factor = 1.0 + sign.to(x.dtype) * 0.9 * m.to(x.dtype) / (_NUM_BINS - 1)
        return fn(x, factor)

    return op


#: Colour operations usable in a :class:`SubPolicy` (AutoAugment names; ``Color`` is saturation).
COLOR_OPS: dict[str, Any] = {
    "Invert": _op_invert,
    "Equalize": _op_equalize,
    "AutoContrast": _op_autocontrast,
    "Solarize": _op_solarize,
    "Posterize": _op_posterize,
    "Contrast": _enhance(_contrast),
    "Brightness": _enhance(_brightness),
    "Color": _enhance(_saturation),
}


@dataclass(frozen=True)
class SubPolicy:
    """Two colour operations applied one after the other, each with its probability and magnitude.

    ``ops`` is a sequence of ``(name, probability, magnitude)`` with ``name`` in :data:`COLOR_OPS`,
    probability in [0, 1] and magnitude an AutoAugment bin 0..9 (ignored by Invert, Equalize and
    AutoContrast). Paper 004 uses two operations per sub-policy; any number >= 1 is accepted.
    """

    ops: tuple[tuple[str, float, int], ...]

    def __post_init__(self) -> None:
        ops = tuple(tuple(o) for o in self.ops)
        if not ops:
            raise ValueError("SubPolicy.ops must hold at least one (name, probability, magnitude) entry")
        for o in ops:
            if len(o) != 3:
                raise ValueError(f"SubPolicy op {o!r} must be (name, probability, magnitude)")
            name, p, mag = o
            if name not in COLOR_OPS:
                raise ValueError(f"SubPolicy op name {name!r} is not a colour op; accepted: {', '.join(COLOR_OPS)}")
            if not 0.0 <= float(p) <= 1.0:
                raise ValueError(f"SubPolicy op {name} probability {p!r} must be in [0, 1]")
            if not (isinstance(mag, int) and 0 <= mag < _NUM_BINS):
                raise ValueError(f"SubPolicy op {name} magnitude {mag!r} must be an integer bin 0..{_NUM_BINS - 1}")
        object.__setattr__(self, "ops", tuple((str(n), float(p), int(m)) for n, p, m in ops))


#: AutoAugment's SVHN policy (Cubuk et al. 2018, reference [1] of paper 004) with the geometric
#: operations removed; sub-policies left without a colour op are dropped (2 of 25).
SVHN_COLOR_SUBPOLICIES: tuple[SubPolicy, ...] = tuple(
    SubPolicy(ops)
    for ops in (
        (("Invert", 0.2, 0),),
        (("Invert", 0.7, 0),),
        (("Equalize", 0.6, 0), ("Solarize", 0.6, 6)),
        (("Invert", 0.9, 0), ("Equalize", 0.6, 0)),
        (("Equalize", 0.6, 0),),
        (("AutoContrast", 0.8, 0),),
        (("Invert", 0.4, 0),),
        (("Solarize", 0.2, 6),),
        (("Invert", 0.9, 0), ("AutoContrast", 0.8, 0)),
        (("Equalize", 0.6, 0),),
        (("Solarize", 0.3, 3),),
        (("Invert", 0.7, 0),),
        (("Equalize", 0.9, 0),),
        (("Invert", 0.9, 0), ("Equalize", 0.6, 0)),
        (("Contrast", 0.3, 3),),
        (("Invert", 0.8, 0),),
        (("Solarize", 0.4, 8),),
        (("Invert", 0.6, 0),),
        (("Invert", 0.6, 0),),
        (("Solarize", 0.7, 2),),
        (("Invert", 0.8, 0),),
        (("AutoContrast", 0.7, 0),),
        (("Invert", 0.1, 0),),
    )
)


class SVHNColorPolicy:
    """Draws one :class:`SubPolicy` per image and applies it (paper 004, 2.1 (2) d).

    Args:
        subpolicies: the sub-policies to draw from uniformly (default :data:`SVHN_COLOR_SUBPOLICIES`).
    """

    def __init__(self, subpolicies: Sequence[SubPolicy] | None = None) -> None:
        subs = tuple(SVHN_COLOR_SUBPOLICIES if subpolicies is None else subpolicies)
        if not subs or not all(isinstance(s, SubPolicy) for s in subs):
            raise ValueError("SVHNColorPolicy needs a non-empty sequence of SubPolicy")
        self.subpolicies = subs
        self._width = max(len(s.ops) for s in subs)

    def __len__(self) -> int:
        return len(self.subpolicies)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None,
                 apply: torch.Tensor | None = None) -> torch.Tensor:
        """Apply to a batch ``x`` [n, 3, H, W] in 0..1 (``apply`` [n] bool: which images take part)."""
        n = x.shape[0]
        choice = torch.randint(len(self.subpolicies), (n,), generator=generator)
        coins = torch.rand((n, self._width), generator=generator)
        signs = torch.where(torch.rand((n, self._width), generator=generator) < 0.5, -1.0, 1.0)
        if apply is None:
            apply = torch.ones(n, dtype=torch.bool)
        for slot in range(self._width):
            # Group images by the op that their sub-policy puts in this slot, so every op runs once, batched.
            names: dict[str, list[tuple[int, int]]] = {}
            for i in range(n):
                ops = self.subpolicies[int(choice[i])].ops
                if not bool(apply[i]) or slot >= len(ops):
                    continue
                name, p, mag = ops[slot]
                if float(coins[i, slot]) < p:
                    names.setdefault(name, []).append((i, mag))
            for name, members in names.items():
                idx = torch.tensor([i for i, _ in members], dtype=torch.long)
                mags = torch.tensor([m for _, m in members], dtype=torch.long, device=x.device)
                sgn = signs[idx, slot].to(x.device)
                dev_idx = idx.to(x.device)
                x[dev_idx] = COLOR_OPS[name](x[dev_idx], mags, sgn).clamp_(0.0, 1.0)
        return x


# ------------------------------------------------------------------------------------------ geometry
def affine_matrix(
    width: float,
    height: float,
    angle: torch.Tensor | float,
    scale: torch.Tensor | float = 1.0,
    translate: tuple[torch.Tensor | float, torch.Tensor | float] = (0.0, 0.0),
    shear: tuple[torch.Tensor | float, torch.Tensor | float] = (0.0, 0.0),
) -> torch.Tensor:
    """Forward affine matrices [n, 3, 3] in pixel coordinates, about the image centre.

    ``M = T(centre + translate) · R(angle) · Sh(shear_x, shear_y) · S(scale) · T(-centre)``: a point p of
    the input goes to ``M p`` in the output. Angles in degrees (counter-clockwise on screen, i.e. a
    positive angle turns +x towards -y as torchvision's ``affine``); shear in degrees
    (x' = x + tan(shear_x) y, y' = y + tan(shear_y) x); translate in pixels.
    """
    a = torch.as_tensor(angle, dtype=torch.float64).reshape(-1)
    n = a.shape[0]

    def vec(v: Any) -> torch.Tensor:
        return torch.as_tensor(v, dtype=torch.float64).reshape(-1).expand(n)

    s, tx, ty = vec(scale), vec(translate[0]), vec(translate[1])
    shx, shy = torch.tan(torch.deg2rad(vec(shear[0]))), torch.tan(torch.deg2rad(vec(shear[1])))
    rad = torch.deg2rad(a)
    cos, sin = torch.cos(rad), torch.sin(rad)
    eye = torch.eye(3, dtype=torch.float64).expand(n, 3, 3).clone()
    rot = eye.clone()
    rot[:, 0, 0], rot[:, 0, 1], rot[:, 1, 0], rot[:, 1, 1] = cos, sin, -sin, cos
    sh = eye.clone()
    sh[:, 0, 1], sh[:, 1, 0] = shx, shy
    sc = eye.clone()
    sc[:, 0, 0], sc[:, 1, 1] = s, s
    pre = eye.clone()
    pre[:, 0, 2], pre[:, 1, 2] = -width / 2.0, -height / 2.0
    post = eye.clone()
    post[:, 0, 2], post[:, 1, 2] = width / 2.0 + tx, height / 2.0 + ty
    return post @ rot @ sh @ sc @ pre


def transform_boxes(boxes: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Map xyxy ``boxes`` [N, 4] through the 3x3 ``matrix``: all four corners, then their enclosing box."""
    if boxes.numel() == 0:
        return boxes.reshape(0, 4)
    m = matrix.to(torch.float64).to(boxes.device)
    b = boxes.to(torch.float64)
    x1, y1, x2, y2 = b.unbind(1)
    xs = torch.stack([x1, x2, x2, x1], 1)
    ys = torch.stack([y1, y1, y2, y2], 1)
    nx = m[0, 0] * xs + m[0, 1] * ys + m[0, 2]
    ny = m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
    out = torch.stack([nx.min(1).values, ny.min(1).values, nx.max(1).values, ny.max(1).values], 1)
    return out.to(boxes.dtype)


def _warp(x: torch.Tensor, matrices: torch.Tensor, fill: float) -> torch.Tensor:
    """Resample ``x`` [n, 3, H, W] so that output pixel p shows input pixel M^-1 p (bilinear, constant fill)."""
    n, _, H, W = x.shape
    # Normalised coordinates of grid_sample(align_corners=False): u = 2 x / W - 1 for pixel coordinate x.
    norm = torch.tensor([[2.0 / W, 0.0, -1.0], [0.0, 2.0 / H, -1.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    theta = norm @ torch.linalg.inv(matrices) @ torch.linalg.inv(norm)
    grid = nnf.affine_grid(theta[:, :2].to(x.dtype).to(x.device), [n, 3, H, W], align_corners=False)
    # Sample x - fill and add it back: zero padding then equals a constant `fill` border.
    out = nnf.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill
    return out.clamp_(0.0, 1.0)


# ------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class AugmentConfig:
    """Knobs of :class:`DetectionAugment`. Defaults follow paper 004 where it gives numbers.

    Paper values: rotation +-10 degrees, translation up to 10 % of width / height, shear +-2 (degrees,
    as in YOLOX, which the paper's pipeline follows), no flip for digits. Values the paper does not
    state and that are chosen here: the ColorJitter strengths (moderate, torchvision-style), the
    probabilities, the scale range and the degenerate-box rules (YOLOX's ``box_candidates`` keeps
    boxes > 2 px; here >= ``min_box_size`` px and >= ``min_visibility`` of the mapped box visible).
    """

    #: ColorJitter: probability per image, and ranges ``1 +- brightness`` etc., hue shift ``+- hue``.
    color_jitter_prob: float = 0.5
    brightness: float = 0.3
    contrast: float = 0.3
    saturation: float = 0.3
    hue: float = 0.05
    #: Probability that an image goes through the SVHN colour policy (its ops have their own probabilities).
    svhn_policy_prob: float = 0.5
    #: Horizontal flip probability (0: off; digits must not be mirrored).
    flip_prob: float = 0.0
    #: Random affine: probability per image, rotation (deg), translation (fraction of W / H), scale range,
    #: shear (deg, x and y drawn independently).
    affine_prob: float = 0.5
    rotation: float = 10.0
    translate: float = 0.1
    scale: tuple[float, float] = (0.9, 1.1)
    shear: float = 2.0
    #: Constant value (0..1) of the border that the affine transform uncovers (AutoAugment: grey 128).
    fill: float = 0.5
    #: A transformed, clipped box is dropped when its width or height is below this many pixels ...
    min_box_size: float = 2.0
    #: ... or when less than this fraction of the transformed box's area lies inside the image.
    min_visibility: float = 0.3
    #: The colour sub-policies (default: :data:`SVHN_COLOR_SUBPOLICIES`).
    subpolicies: tuple[SubPolicy, ...] = field(default=SVHN_COLOR_SUBPOLICIES)

    def __post_init__(self) -> None:
        def bad(name: str, accepted: str) -> ValueError:
            return ValueError(f"AugmentConfig.{name} = {getattr(self, name)!r} is invalid; accepted: {accepted}")

        for name in ("color_jitter_prob", "svhn_policy_prob", "flip_prob", "affine_prob", "min_visibility", "fill"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise bad(name, "a number in [0, 1]")
        for name in ("brightness", "contrast", "saturation", "rotation", "translate", "shear", "min_box_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v >= 0 and math.isfinite(v)):
                raise bad(name, "a finite number >= 0")
        if self.brightness > 1 or self.contrast > 1 or self.saturation > 1:
            raise ValueError("AugmentConfig.brightness / contrast / saturation must be <= 1 (factors 1 +- value >= 0)")
        if not 0.0 <= self.hue <= 0.5:
            raise bad("hue", "a number in [0, 0.5]")
        if self.translate > 1:
            raise bad("translate", "a fraction in [0, 1]")
        if self.rotation > 180 or self.shear >= 90:
            raise ValueError("AugmentConfig.rotation must be <= 180 and shear < 90 (degrees)")
        sc = self.scale
        if not (isinstance(sc, (tuple, list)) and len(sc) == 2 and 0 < sc[0] <= sc[1] and math.isfinite(sc[1])):
            raise bad("scale", "a pair (low, high) with 0 < low <= high")
        object.__setattr__(self, "scale", (float(sc[0]), float(sc[1])))
        object.__setattr__(self, "subpolicies", tuple(self.subpolicies))
        if not self.subpolicies or not all(isinstance(s, SubPolicy) for s in self.subpolicies):
            raise bad("subpolicies", "a non-empty sequence of SubPolicy")

    def replace(self, **changes: Any) -> "AugmentConfig":
        """A copy with some fields changed (validated again)."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown AugmentConfig field(s) {sorted(unknown)}; accepted: "
                             f"{[f.name for f in dataclasses.fields(self)]}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (sub-policies as lists of [name, probability, magnitude])."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["scale"] = list(self.scale)
        d["subpolicies"] = [[list(o) for o in s.ops] for s in self.subpolicies]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AugmentConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise ValueError naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown AugmentConfig parameters {unknown}; accepted: {sorted(names)}")
        kw = dict(d)
        if "scale" in kw:
            kw["scale"] = tuple(kw["scale"])
        if "subpolicies" in kw:
            kw["subpolicies"] = tuple(SubPolicy(tuple(tuple(o) for o in s)) for s in kw["subpolicies"])
        return cls(**kw)


# ------------------------------------------------------------------------------------------ pipeline
class DetectionAugment:
    """The paper-004 augmentation as ``augment(images, targets) -> (images, targets)``.

    Args:
        config: :class:`AugmentConfig` (default: the paper's values).
        flip: shorthand to switch the horizontal flip on with probability 0.5 (ignored when
            ``config.flip_prob`` is already > 0).

    Call with a list of float images [3, H, W] in 0..1 (any device, sizes may differ) and their
    targets (``boxes`` xyxy float [N, 4], ``labels`` [N], optional other per-box tensors), or with a
    batch tensor [B, 3, H, W]. Returns new images (the inputs are not modified) and new target dicts.
    """

    def __init__(self, config: AugmentConfig | None = None, *, flip: bool = False) -> None:
        cfg = config or AugmentConfig()
        if flip and cfg.flip_prob == 0.0:
            cfg = cfg.replace(flip_prob=0.5)
        self.config = cfg
        self.policy = SVHNColorPolicy(cfg.subpolicies)

    def __repr__(self) -> str:
        return f"DetectionAugment({self.config!r})"

    def __call__(
        self,
        images: Sequence[torch.Tensor] | torch.Tensor,
        targets: Sequence[Target],
        *,
        generator: torch.Generator | None = None,
    ) -> tuple[list[torch.Tensor] | torch.Tensor, list[Target]]:
        batched = isinstance(images, torch.Tensor)
        if batched and images.ndim != 4:
            raise ValueError(f"images must be a list of [3, H, W] tensors or one [B, 3, H, W] tensor, "
                             f"got shape {tuple(images.shape)}")
        imgs = list(images.unbind(0)) if batched else list(images)
        if len(imgs) != len(targets):
            raise ValueError(f"got {len(imgs)} images but {len(targets)} targets")
        for i, im in enumerate(imgs):
            if im.ndim != 3 or im.shape[0] != 3 or not im.is_floating_point():
                raise ValueError(
                    f"images[{i}] must be a float tensor [3, H, W] in 0..1, got {im.dtype} {tuple(im.shape)}"
                )
        out_imgs: list[torch.Tensor] = [im for im in imgs]
        out_tgts: list[Target] = [dict(t) for t in targets]
        # Group equal sizes so that every op runs once per group; the draws are made per group in a fixed
        # order (first appearance of each size), so a batch of one size draws exactly as documented.
        groups: dict[tuple[int, int], list[int]] = {}
        for i, im in enumerate(imgs):
            groups.setdefault((int(im.shape[1]), int(im.shape[2])), []).append(i)
        for (H, W), idx in groups.items():
            x = torch.stack([imgs[i] for i in idx]).clone()
            boxes = [out_tgts[i]["boxes"] for i in idx]
            x, boxes, keeps = self._augment_group(x, boxes, H, W, generator)
            for k, i in enumerate(idx):
                out_imgs[i] = x[k]
                out_tgts[i] = _filter_target(out_tgts[i], boxes[k], keeps[k])
        if batched:
            return torch.stack(out_imgs), out_tgts
        return out_imgs, out_tgts

    # ------------------------------------------------------------------ internals
    def _augment_group(
        self, x: torch.Tensor, boxes: list[torch.Tensor], H: int, W: int, gen: torch.Generator | None
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor | None]]:
        cfg = self.config
        n = x.shape[0]
        dev = x.device
        # 1. ColorJitter (brightness, contrast, saturation, hue; fixed order).
        jit = torch.rand(n, generator=gen) < cfg.color_jitter_prob
        u = torch.rand((n, 4), generator=gen) * 2 - 1
        if jit.any():
            j = jit.nonzero().squeeze(1)
            jd = j.to(dev)
            sub = x[jd]
            sub = _brightness(sub, (1 + cfg.brightness * u[j, 0]).to(dev))
            sub = _contrast(sub, (1 + cfg.contrast * u[j, 1]).to(dev))
            sub = _saturation(sub, (1 + cfg.saturation * u[j, 2]).to(dev))
            if cfg.hue > 0:
                sub = _hue(sub, (cfg.hue * u[j, 3]).to(dev))
            x[jd] = sub
        # 2. SVHN colour sub-policy, one per image.
        pol = torch.rand(n, generator=gen) < cfg.svhn_policy_prob
        x = self.policy(x, gen, apply=pol)
        # 3. Horizontal flip (only when asked).
        flip = torch.rand(n, generator=gen) < cfg.flip_prob
        # 4. Random affine.
        aff = torch.rand(n, generator=gen) < cfg.affine_prob
        r = torch.rand((n, 6), generator=gen, dtype=torch.float64)
        matrices = torch.eye(3, dtype=torch.float64).repeat(n, 1, 1)
        if flip.any():
            fm = torch.tensor([[-1.0, 0.0, float(W)], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
            matrices[flip] = fm @ matrices[flip]
        if aff.any():
            lo, hi = cfg.scale
            m = affine_matrix(
                W, H,
                angle=(r[:, 0] * 2 - 1) * cfg.rotation,
                scale=lo + (hi - lo) * r[:, 1],
                translate=((r[:, 2] * 2 - 1) * cfg.translate * W, (r[:, 3] * 2 - 1) * cfg.translate * H),
                shear=((r[:, 4] * 2 - 1) * cfg.shear, (r[:, 5] * 2 - 1) * cfg.shear),
            )
            matrices[aff] = m[aff] @ matrices[aff]
        moved = flip | aff
        keeps: list[torch.Tensor | None] = [None] * n
        new_boxes = list(boxes)
        if moved.any():
            mi = moved.nonzero().squeeze(1)
            if bool((~aff[mi]).all()):
                # Pure flips need no resampling: mirror the pixels exactly.
                x[mi.to(dev)] = x[mi.to(dev)].flip(-1)
            else:
                x[mi.to(dev)] = _warp(x[mi.to(dev)], matrices[mi], cfg.fill)
            for i in mi.tolist():
                new_boxes[i], keeps[i] = self._move_boxes(boxes[i], matrices[i], H, W)
        return x, new_boxes, keeps

    def _move_boxes(
        self, boxes: torch.Tensor, matrix: torch.Tensor, H: int, W: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        mapped = transform_boxes(boxes, matrix)
        clipped = mapped.clone()
        clipped[:, 0::2] = clipped[:, 0::2].clamp(0, W)
        clipped[:, 1::2] = clipped[:, 1::2].clamp(0, H)
        w = clipped[:, 2] - clipped[:, 0]
        h = clipped[:, 3] - clipped[:, 1]
        full = ((mapped[:, 2] - mapped[:, 0]) * (mapped[:, 3] - mapped[:, 1])).clamp_min(1e-12)
        keep = (w >= cfg.min_box_size) & (h >= cfg.min_box_size) & (w * h >= cfg.min_visibility * full)
        return clipped, keep


def _filter_target(t: Target, boxes: torch.Tensor, keep: torch.Tensor | None) -> Target:
    """``t`` with new ``boxes``, every per-box tensor (first dim N) filtered by ``keep``."""
    if keep is None:
        return t
    n = t["boxes"].shape[0]
    out: Target = {}
    k = keep.to(t["boxes"].device)
    for key, v in t.items():
        if key == "boxes":
            out[key] = boxes[k]
        elif isinstance(v, torch.Tensor) and v.ndim >= 1 and v.shape[0] == n:
            out[key] = v[k.to(v.device)]
        else:
            out[key] = v
    return out
