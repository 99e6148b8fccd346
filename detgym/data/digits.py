"""The embedded default dataset ``digits``: synthetic SVHN-like multi-digit detection images.

Nothing is downloaded: digits are rendered with the scalable FreeType font that Pillow ships
(``ImageFont.load_default(size=...)``). Each image holds a house-number-like string of 1-5 digits laid
out left to right on one baseline, all of roughly one height drawn log-uniformly from 12 to
100 px (so that every FPN level that fits in the image receives objects: with the default 128 px
images and P3-P7 strides 8-128, objects reach P3-P5 by FCOS's size ranges). Colours, contrast,
background gradients and textures, house-number plates, non-digit clutter (lines, boxes, ellipses,
arcs, letter glyphs that do not look like digits), blur and noise vary per image and are governed by
:class:`DigitsConfig`.

Ground-truth boxes are exact: each glyph is rendered into its own alpha mask, faint anti-aliasing
below a threshold is cut to zero, the mask is cropped to its ink, and the box is the mask's extent
where it is pasted (xyxy, continuous pixel coordinates: a box covering columns c0..c1 is x1=c0,
x2=c1+1). Category ids 1..10 stand for digits 0..9 (paper 004), identical to the training labels.

Pool structure: real unlabeled pools are long-tailed, redundant and partly empty, and their images vary in
difficulty. :class:`DigitsConfig` gives the train split (the pool an active learner draws from) such structure:
``class_frequencies`` (the probability of each digit), ``duplicate_fraction`` (near-duplicate clusters: the same
image shifted by a few pixels, with new colours and noise), ``empty_fraction`` (images holding no digit), and, for
every split, ``hard_fraction`` (small, low-contrast, blurred, cluttered images). Val and test keep balanced classes,
no duplicates and no empty images: they measure what a detector should find. Which image is which is a seeded
plan of the split (:func:`pool_plan`); with every option at its default there is no plan and the images are
exactly those of a config without the options.

Determinism: image i of split s is generated from its own ``SeedSequence([seed, s, i, version])``,
so the same (seed, config, generator version, Pillow version) gives byte-identical pixels and
annotations, and a smaller split is a prefix of a larger one (a split with a pool plan excepted: the plan
is drawn for the split's size).

Caching: :func:`digits_dataset` writes the three splits once as COCO JSON + PNG (layout of paper
004: ``train/ valid/ test/ train.json valid.json test.json``) under
``$DETGYM_CACHE`` or ``~/.cache/detgym``, in ``digits-<hash of config, seed, versions>/``, built in a
temporary sibling directory and renamed into place, so the cache appears whole or not at all and
concurrent builders are safe (the first rename wins, the others use its tree).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import threading
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import PIL
import torch
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from .coco import load_coco, write_coco
from .dataset import DetectionDataset
from .io import atomic_directory, atomic_write_json, cache_root

__all__ = [
    "DigitsConfig",
    "DIGIT_CATEGORIES",
    "GENERATOR_VERSION",
    "POOL_FIELDS",
    "PoolPlan",
    "SPLITS",
    "SPLIT_DIRS",
    "canonical_split",
    "digits_cache_dir",
    "digits_dataset",
    "generate_digits",
    "pool_plan",
    "render_digits_image",
    "write_digits",
    "clear_memory_cache",
]

#: Bump whenever a change alters generated pixels or boxes, so stale caches are not reused.
GENERATOR_VERSION = 1

#: Split names accepted everywhere in detgym.data, and their directory / JSON stem on disk (paper 004).
SPLITS = ("train", "val", "test")
SPLIT_DIRS = {"train": "train", "val": "valid", "test": "test"}
_SPLIT_ALIASES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}

#: COCO categories of the digits set: id k+1 is digit k (paper 004), name is the digit itself.
DIGIT_CATEGORIES: list[dict[str, Any]] = [{"id": k + 1, "name": str(k)} for k in range(10)]

_META_FILE = "detgym_digits.json"

# Glyphs used as clutter: letters and signs whose shapes are not close to any digit. Left out on
# purpose: O o D Q (0), I l i j T (1, 7), S s (5), B (8), Z z (2), G b (6), g q (9), % (holds 0-like rings).
_DISTRACTOR_CHARS = "ACEFHKMNPRUVWXYacefhkmnprtuvwxy#&*+=@"

# Luminance weights (ITU-R BT.601), used to place colours at a chosen luminance.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)

# Ink-height / font-size ratio of the digits in Pillow's default font (Aileron): about 0.72.
_INK_PER_FONT_SIZE = 0.72

# Anti-aliased ink fainter than this (of 255) is cut, so the box hugs every pasted pixel exactly.
_ALPHA_CUT = 48


def canonical_split(split: str) -> str:
    """Map a split name to one of ``"train"``, ``"val"``, ``"test"`` ("valid" is accepted for "val")."""
    key = str(split).lower()
    if key not in _SPLIT_ALIASES:
        raise ValueError(f"unknown split {split!r}; accepted: 'train', 'val' (or 'valid'), 'test'")
    return _SPLIT_ALIASES[key]


#: Default (min, max) ink height of the digits in pixels for 128 px images.
DEFAULT_DIGIT_HEIGHTS = (12.0, 100.0)

#: The pool-structure fields of :class:`DigitsConfig`. At their defaults they are left out of
#: :meth:`DigitsConfig.to_dict`, so configs without them keep their cache directories and fingerprints.
POOL_FIELDS: tuple[str, ...] = (
    "class_frequencies", "duplicate_fraction", "duplicate_cluster_size", "empty_fraction", "hard_fraction",
)

#: Splits that get the pool structure (class frequencies, near-duplicates, empty images); ``hard_fraction``
#: applies to every split.
POOL_SPLITS: tuple[str, ...] = ("train",)


@dataclass(frozen=True)
class DigitsConfig:
    """Sizes and difficulty knobs of the synthetic digits set (all have defaults).

    Ranges are ``(low, high)`` tuples sampled uniformly per image unless stated otherwise.
    """

    train_size: int = 2000
    val_size: int = 200
    test_size: int = 200
    #: Square image side in pixels.
    image_size: int = 128
    #: Ink height of the digits in pixels, drawn log-uniformly per image. 12 px rather than 8: digits 8-10 px
    #: tall are 3-6 px wide, narrower than the 8 px stride of P3, so anchor / location matching misses most of
    #: them and a 2-minute CPU run cannot learn them (set 8 for a harder set). ``None``: 100 px, or what fits
    #: in a smaller image (``image_size - 4``), the minimum then clipped to it.
    min_digit_height: float | None = None
    max_digit_height: float | None = None
    #: Digits per image; fewer are used when the drawn height does not leave room for more.
    min_digits: int = 1
    max_digits: int = 5
    #: Relative standard deviation of individual digit heights around the image's height.
    height_jitter: float = 0.06
    #: Horizontal stretch of each glyph (1 = the font's own width).
    aspect_range: tuple[float, float] = (0.85, 1.25)
    #: Largest horizontal shear (italic slant) and rotation in degrees, per glyph.
    shear_max: float = 0.25
    rotation_max: float = 4.0
    #: Probability that an image's digits are bold (stroked).
    bold_prob: float = 0.3
    #: Gap between neighbouring digits as a fraction of the digit height.
    gap_range: tuple[float, float] = (0.05, 0.35)
    #: Luminance difference (0..1) between the digits and what is right behind them.
    contrast_range: tuple[float, float] = (0.35, 0.9)
    #: Largest colour saturation (0 = grey images).
    saturation_max: float = 0.8
    #: Luminance amplitude of background gradients and textures (0..1).
    background_variation: float = 0.2
    #: Probability of a low-frequency texture on the background.
    texture_prob: float = 0.5
    #: Probability that the digits sit on a plate (a rectangle in their own background colour).
    plate_prob: float = 0.25
    #: Mean number (Poisson) of clutter shapes per image: lines, rectangles, ellipses, arcs.
    clutter: float = 1.5
    #: Mean number (Poisson) of non-digit letter glyphs per image, placed off the digits.
    clutter_letters: float = 0.5
    #: Probability and sigma range (px) of a Gaussian blur of the whole image; sigma is also capped at
    #: ``blur_max_rel`` x the digit height, so that small digits stay legible.
    blur_prob: float = 0.2
    blur_sigma_range: tuple[float, float] = (0.4, 1.2)
    blur_max_rel: float = 0.08
    #: Standard deviation (0..1 units of intensity) of additive Gaussian noise, drawn per image.
    noise_std_range: tuple[float, float] = (0.0, 0.03)
    #: Pool structure of the train split (see the module docstring and :func:`pool_plan`). The probability of
    #: each digit 0..9: ten numbers summing to 1, or a mapping digit -> probability (digits not named get 0),
    #: e.g. a long tail; ``None``: every digit equally likely (val and test always are).
    class_frequencies: tuple[float, ...] | None = None
    #: Fraction of train images that are near-duplicates of another train image, in [0, 1): the copy is its
    #: source shifted by up to 4% of the image side, with a per-channel gain and offset and fresh noise.
    duplicate_fraction: float = 0.0
    #: Images per near-duplicate cluster (a source and its ``duplicate_cluster_size - 1`` copies), >= 2.
    duplicate_cluster_size: int = 4
    #: Fraction of train images without any digit (background, clutter, letters), in [0, 1).
    empty_fraction: float = 0.0
    #: Fraction of images of every split drawn hard, in [0, 1]: digits in the lowest third (log scale) of the
    #: height range, contrast in the lowest quarter of its range, always blurred (sigma up to twice the usual),
    #: three times the clutter.
    hard_fraction: float = 0.0

    def __post_init__(self) -> None:
        def bad(param: str, val: Any, accepted: str) -> ValueError:
            return ValueError(f"DigitsConfig.{param} = {val!r} is invalid; accepted: {accepted}")

        self._check_sizes(bad)
        self._check_heights(bad)
        self._check_digit_counts(bad)
        self._check_ranges(bad)
        self._check_scalars(bad)
        self._check_pool_fields(bad)

    def _check_sizes(self, bad: Any) -> None:
        for name in ("train_size", "val_size", "test_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise bad(name, v, "an integer >= 0")
        if isinstance(self.image_size, bool) or not isinstance(self.image_size, int) or self.image_size < 16:
            raise bad("image_size", self.image_size, "an integer >= 16 (pixels)")

    def _check_heights(self, bad: Any) -> None:
        if self.max_digit_height is None:
            object.__setattr__(self, "max_digit_height", float(min(DEFAULT_DIGIT_HEIGHTS[1], self.image_size - 4)))
        if self.min_digit_height is None:
            object.__setattr__(self, "min_digit_height", float(min(DEFAULT_DIGIT_HEIGHTS[0], self.max_digit_height)))
        if not (4 <= self.min_digit_height <= self.max_digit_height):
            raise bad("min_digit_height", self.min_digit_height, f"4 <= min_digit_height <= max_digit_height "
                                                                  f"({self.max_digit_height})")
        if self.max_digit_height > self.image_size - 4:
            raise bad("max_digit_height", self.max_digit_height, f"at most image_size - 4 = {self.image_size - 4}")

    def _check_digit_counts(self, bad: Any) -> None:
        if not (isinstance(self.min_digits, int) and isinstance(self.max_digits, int)
                and 1 <= self.min_digits <= self.max_digits):
            raise bad("min_digits/max_digits", (self.min_digits, self.max_digits), "integers 1 <= min <= max")

    def _check_ranges(self, bad: Any) -> None:
        for name, lo_ok, hi_ok in (
            ("aspect_range", 0.2, 5.0),
            ("gap_range", 0.0, 2.0),
            ("contrast_range", 0.0, 1.0),
            ("blur_sigma_range", 0.0, 10.0),
            ("noise_std_range", 0.0, 1.0),
        ):
            v = getattr(self, name)
            if (not isinstance(v, (tuple, list)) or len(v) != 2 or not lo_ok <= v[0] <= v[1] <= hi_ok):
                raise bad(name, v, f"a pair (low, high) with {lo_ok} <= low <= high <= {hi_ok}")
            object.__setattr__(self, name, (float(v[0]), float(v[1])))
        if self.contrast_range[0] <= 0.0:
            raise bad("contrast_range", self.contrast_range, "low > 0 (digits must differ from their background)")

    def _check_scalars(self, bad: Any) -> None:
        for name in ("bold_prob", "texture_prob", "plate_prob", "blur_prob", "saturation_max", "background_variation"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise bad(name, v, "a number in [0, 1]")
        for name in ("height_jitter", "shear_max", "rotation_max", "clutter", "clutter_letters", "blur_max_rel"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and v >= 0 and math.isfinite(v)):
                raise bad(name, v, "a finite number >= 0")

    def _check_pool_fields(self, bad: Any) -> None:
        freqs = self.class_frequencies
        if freqs is not None:
            object.__setattr__(self, "class_frequencies", _class_frequencies(freqs, bad))
        for name, top in (("duplicate_fraction", "1)"), ("empty_fraction", "1)"), ("hard_fraction", "1]")):
            v = getattr(self, name)
            if (isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0
                    or (top == "1)" and v == 1.0)):
                raise bad(name, v, f"a fraction in [0, {top}")
            object.__setattr__(self, name, float(v))
        size = self.duplicate_cluster_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 2:
            raise bad("duplicate_cluster_size", size, "an integer >= 2 (a source image and at least one copy)")
        # every cluster needs a source image that is neither empty nor a copy
        needed = self.empty_fraction + self.duplicate_fraction * size / (size - 1)
        if needed > 1.0:
            raise bad("duplicate_fraction", self.duplicate_fraction,
                      f"at most (1 - empty_fraction) * (cluster_size - 1) / cluster_size = "
                      f"{(1 - self.empty_fraction) * (size - 1) / size:.3f}, so every cluster has a source image")

    @property
    def has_pool_structure(self) -> bool:
        """Whether any pool-structure field differs from its default (the splits then have a :func:`pool_plan`)."""
        return any(getattr(self, name) != _POOL_DEFAULTS[name] for name in POOL_FIELDS)

    def split_size(self, split: str) -> int:
        """Number of images of ``split`` ("train", "val"/"valid", "test")."""
        return {"train": self.train_size, "val": self.val_size, "test": self.test_size}[canonical_split(split)]

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (tuples become lists); pool-structure fields at their defaults are left out."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()
                if not (k in POOL_FIELDS and v == _POOL_DEFAULTS[k])}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DigitsConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise ValueError naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown DigitsConfig parameters {unknown}; accepted: {sorted(names)}")
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()})


_POOL_DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(DigitsConfig) if f.name in POOL_FIELDS}


def _class_frequencies(freqs: Any, bad: Any) -> tuple[float, ...]:
    """Ten probabilities (digits 0..9) from a sequence of ten or a mapping digit -> probability."""
    accepted = "ten probabilities of the digits 0..9 summing to 1, or a mapping digit -> probability"
    if isinstance(freqs, dict) or hasattr(freqs, "keys"):
        values = [0.0] * 10
        for key, p in dict(freqs).items():
            digit = str(key)
            if digit not in {str(d) for d in range(10)}:
                raise bad("class_frequencies", freqs, f"{accepted}; {key!r} is not a digit class (0..9)")
            values[int(digit)] = p
        freqs = values
    if not isinstance(freqs, (tuple, list)) or len(freqs) != 10:
        raise bad("class_frequencies", freqs, accepted)
    if not all(isinstance(p, (int, float)) and not isinstance(p, bool) and math.isfinite(p) and p >= 0
               for p in freqs) or abs(sum(freqs) - 1.0) > 1e-6:
        raise bad("class_frequencies", freqs, f"{accepted} (each >= 0)")
    return tuple(float(p) for p in freqs)


# ---------------------------------------------------------------------------------------------- pool plan
#: Third entry of the plan's seed sequence: no image index reaches it, so the plan's stream is not an image's.
_PLAN_TAG = 2**32 - 1


@dataclass(frozen=True)
class PoolPlan:
    """Which image of a split is which (see :func:`pool_plan`); arrays of the split's length."""

    #: True: the image holds no digit.
    empty: np.ndarray
    #: Index of the image a near-duplicate copies (a source: neither empty nor a copy), -1 for the others.
    duplicate_of: np.ndarray
    #: True: the image is drawn hard (a copy is as hard as its source).
    hard: np.ndarray
    #: The digit probabilities of the split's images (``None``: uniform).
    class_frequencies: tuple[float, ...] | None = None

    @property
    def cluster(self) -> np.ndarray:
        """Near-duplicate cluster of each image: the index of its source (its own index for the others)."""
        return np.where(self.duplicate_of >= 0, self.duplicate_of, np.arange(self.duplicate_of.shape[0]))


def pool_plan(split: str = "train", *, seed: int = 0, config: DigitsConfig | None = None) -> PoolPlan | None:
    """The seeded plan of a split with pool structure, ``None`` without (every image drawn as by default).

    Drawn from ``SeedSequence([seed, split, 2**32 - 1, version])``: in the train split a random
    ``round(empty_fraction * n)`` images are empty and ``round(duplicate_fraction * n)`` are copies, spread
    round-robin over ``ceil(copies / (duplicate_cluster_size - 1))`` sources drawn from the remaining images; in
    every split each image is hard with probability ``hard_fraction``.
    """
    split = canonical_split(split)
    cfg = config or DigitsConfig()
    pool = split in POOL_SPLITS
    if not (cfg.hard_fraction > 0 or (pool and cfg.has_pool_structure)):
        return None
    n = cfg.split_size(split)
    rng = np.random.default_rng(np.random.SeedSequence([_check_seed(seed), SPLITS.index(split), _PLAN_TAG,
                                                        GENERATOR_VERSION]))
    empty = np.zeros(n, dtype=bool)
    duplicate_of = np.full(n, -1, dtype=np.int64)
    if pool:
        n_empty, n_copies = round(cfg.empty_fraction * n), round(cfg.duplicate_fraction * n)
        order = rng.permutation(n)
        empty[order[:n_empty]] = True
        copies, originals = order[n_empty:n_empty + n_copies], np.sort(order[n_empty + n_copies:])
        if n_copies:
            n_clusters = min(math.ceil(n_copies / (cfg.duplicate_cluster_size - 1)), originals.size)
            sources = rng.choice(originals, n_clusters, replace=False)
            duplicate_of[copies] = sources[np.arange(n_copies) % n_clusters]
    hard = rng.random(n) < cfg.hard_fraction
    hard[duplicate_of >= 0] = hard[duplicate_of[duplicate_of >= 0]]
    return PoolPlan(empty, duplicate_of, hard, cfg.class_frequencies if pool else None)


def _hard_config(cfg: DigitsConfig) -> DigitsConfig:
    """The settings of a hard image (see ``DigitsConfig.hard_fraction``)."""
    lo, hi = cfg.min_digit_height, cfg.max_digit_height
    c_lo, c_hi = cfg.contrast_range
    s_lo, s_hi = cfg.blur_sigma_range
    return dataclasses.replace(
        cfg, max_digit_height=float(lo * (hi / lo) ** (1 / 3)), contrast_range=(c_lo, c_lo + (c_hi - c_lo) / 4),
        blur_prob=1.0, blur_sigma_range=(s_lo, 2 * s_hi), blur_max_rel=2 * cfg.blur_max_rel,
        clutter=3 * cfg.clutter, clutter_letters=3 * cfg.clutter_letters,
        **{name: _POOL_DEFAULTS[name] for name in POOL_FIELDS},
    )


def _near_duplicate(source: dict[str, Any], rng: np.random.Generator, cfg: DigitsConfig) -> dict[str, Any]:
    """A copy of a rendered image: shifted a few pixels (boxes stay inside), new colours, fresh noise."""
    image, boxes = source["image"], source["boxes"]
    S = image.shape[0]
    reach = max(1, round(0.04 * S))
    if boxes.shape[0]:
        x_lo, y_lo = max(-reach, -int(boxes[:, 0].min())), max(-reach, -int(boxes[:, 1].min()))
        x_hi, y_hi = min(reach, S - int(boxes[:, 2].max())), min(reach, S - int(boxes[:, 3].max()))
    else:
        x_lo, y_lo, x_hi, y_hi = -reach, -reach, reach, reach
    dx, dy = int(rng.integers(x_lo, x_hi + 1)), int(rng.integers(y_lo, y_hi + 1))
    padded = np.pad(image, ((reach, reach), (reach, reach), (0, 0)), mode="edge")
    shifted = padded[reach - dy: reach - dy + S, reach - dx: reach - dx + S].astype(np.float32)
    gain = rng.uniform(0.8, 1.2, 3).astype(np.float32)
    offset = rng.uniform(-25.0, 25.0, 3).astype(np.float32)
    noise = rng.standard_normal(shifted.shape, dtype=np.float32) * np.float32(rng.uniform(*cfg.noise_std_range) * 255)
    out = dict(source)
    out["image"] = np.clip(np.rint(shifted * gain + offset + noise), 0, 255).astype(np.uint8)
    out["boxes"] = (boxes + np.array([dx, dy, dx, dy], dtype=np.float32)).astype(np.float32)
    return out


# ---------------------------------------------------------------------------------------------- rendering
@lru_cache(maxsize=256)
def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _affine(mask: Image.Image, m: np.ndarray) -> Image.Image:
    """Apply the 2x2 linear map ``m`` about the mask's centre, growing the canvas to hold the result."""
    w, h = mask.size
    corners = np.array([[0, 0], [w, 0], [0, h], [w, h]], dtype=np.float64) - [w / 2, h / 2]
    out = corners @ m.T
    ow = int(math.ceil(out[:, 0].max() - out[:, 0].min())) + 2
    oh = int(math.ceil(out[:, 1].max() - out[:, 1].min())) + 2
    inv = np.linalg.inv(m)
    a, b = inv[0]
    d, e = inv[1]
    # PIL's AFFINE data maps output pixel (x, y) to the input pixel it samples.
    c = w / 2 - a * ow / 2 - b * oh / 2
    f = h / 2 - d * ow / 2 - e * oh / 2
    return mask.transform((ow, oh), Image.Transform.AFFINE, (a, b, c, d, e, f), resample=Image.Resampling.BILINEAR)


def _glyph(char: str, height: float, rng: np.random.Generator, cfg: DigitsConfig, bold: bool) -> np.ndarray:
    """Alpha mask (uint8 [h, w], cropped to its ink, no pixel below the cut) of ``char`` about ``height`` tall."""
    target_h = max(3, int(round(height)))
    # Render ~25% larger than needed and shrink: smoother small glyphs than hinting at tiny sizes.
    size = max(6, int(round(target_h / _INK_PER_FONT_SIZE * 1.25)))
    font = _font(size)
    stroke = int(rng.integers(1, max(2, size // 14) + 1)) if bold else 0
    left, top, right, bottom = font.getbbox(char, stroke_width=stroke)
    im = Image.new("L", (right - left + 4, bottom - top + 4), 0)
    ImageDraw.Draw(im).text((2 - left, 2 - top), char, fill=255, font=font, stroke_width=stroke, stroke_fill=255)
    bbox = im.getbbox()
    if bbox is None:  # pragma: no cover - every character used has ink
        raise RuntimeError(f"glyph {char!r} rendered empty at size {size}")
    im = im.crop(bbox)
    w0, h0 = im.size
    aspect = rng.uniform(*cfg.aspect_range)
    new_w = max(1, int(round(w0 * target_h / h0 * aspect)))
    im = im.resize((new_w, target_h), Image.Resampling.LANCZOS)
    shear = rng.uniform(-cfg.shear_max, cfg.shear_max)
    theta = math.radians(rng.uniform(-cfg.rotation_max, cfg.rotation_max))
    if shear != 0.0 or theta != 0.0:
        rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
        # x' = x - shear * y (y grows downwards, so positive shear leans the top to the right).
        im = _affine(im, rot @ np.array([[1.0, -shear], [0.0, 1.0]]))
    arr = np.asarray(im, dtype=np.uint8).copy()
    arr[arr < _ALPHA_CUT] = 0
    ys = np.flatnonzero(arr.any(axis=1))
    xs = np.flatnonzero(arr.any(axis=0))
    return arr[ys[0]: ys[-1] + 1, xs[0]: xs[-1] + 1]


def _colour(lum: float, sat: float, rng: np.random.Generator) -> np.ndarray:
    """A random RGB colour (floats 0..1) with luminance ``lum`` (up to clipping) and saturation ``sat``."""
    v = rng.uniform(0.0, 1.0, 3)
    col = lum + sat * (v - float(v @ _LUMA))
    return np.clip(col, 0.0, 1.0)


def _to_u8(col: np.ndarray) -> tuple[int, int, int]:
    return tuple(int(round(c * 255)) for c in col)  # type: ignore[return-value]


def _upsample(coarse: np.ndarray, size: int) -> np.ndarray:
    """Bilinear upsampling of a [k, k] grid to [size, size] with two interpolation matrices."""
    k = coarse.shape[0]
    pos = np.linspace(0.0, k - 1.0, size)
    lo = np.floor(pos).astype(int).clip(0, k - 2) if k > 1 else np.zeros(size, int)
    frac = pos - lo
    a = np.zeros((size, k))
    a[np.arange(size), lo] = 1.0 - frac
    a[np.arange(size), np.minimum(lo + 1, k - 1)] += frac
    return a @ coarse @ a.T


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / np.float32(max(size - 1, 1))
    xx.setflags(write=False)
    yy.setflags(write=False)
    return xx, yy


def _background(lum: float, rng: np.random.Generator, cfg: DigitsConfig) -> np.ndarray:
    """Float [S, S, 3] background around luminance ``lum``: a two-colour linear gradient, maybe textured."""
    S = cfg.image_size
    var = cfg.background_variation
    sat = rng.uniform(0.0, cfg.saturation_max)
    c0 = _colour(float(np.clip(lum + rng.uniform(-var, var) / 2, 0, 1)), sat, rng)
    c1 = _colour(float(np.clip(lum + rng.uniform(-var, var) / 2, 0, 1)), sat, rng)
    ang = rng.uniform(0.0, 2 * math.pi)
    xx, yy = _grid(S)
    t = math.cos(ang) * xx + math.sin(ang) * yy
    t -= t.min()
    t /= max(float(t.max()), 1e-6)
    if rng.random() < cfg.texture_prob and var > 0:
        k = int(rng.integers(3, 12))
        tex = _upsample(rng.standard_normal((k, k)), S).astype(np.float32)
        tex *= np.float32((var / 2) / max(np.abs(tex).max(), 1e-9))
    else:
        tex = np.float32(0.0)
    c0f, dc = c0.astype(np.float32), (c1 - c0).astype(np.float32)
    bg = c0f + t[..., None] * dc + (tex[..., None] if isinstance(tex, np.ndarray) else tex)
    return np.clip(bg, 0.0, 1.0, out=bg)


def _draw_clutter(draw: ImageDraw.ImageDraw, n: int, fg: np.ndarray, rng: np.random.Generator,
                  cfg: DigitsConfig) -> None:
    """Lines, rectangles, ellipses, arcs and polylines in random colours (sometimes the digits' colour)."""
    S = cfg.image_size
    for _ in range(n):
        col = fg if rng.random() < 0.3 else _colour(rng.uniform(0, 1), rng.uniform(0, cfg.saturation_max), rng)
        col8 = _to_u8(col)
        width = int(rng.integers(1, max(2, S // 32) + 1))
        kind = int(rng.integers(0, 5))
        x0, y0 = (float(v) for v in rng.uniform(-0.1 * S, 1.1 * S, 2))
        w, h = (float(v) for v in np.exp(rng.uniform(math.log(4), math.log(S), 2)))
        box = [x0, y0, x0 + w, y0 + h]
        if kind == 0:
            x1, y1 = (float(v) for v in rng.uniform(-0.1 * S, 1.1 * S, 2))
            draw.line([x0, y0, x1, y1], fill=col8, width=width)
        elif kind == 1:
            if rng.random() < 0.3:
                # Filled bars no narrower than half their height: a tall thin bar reads as a one.
                draw.rectangle([x0, y0, x0 + max(w, h / 2), y0 + h], fill=col8)
            else:
                draw.rectangle(box, outline=col8, width=width)
        elif kind == 2:
            # Only ellipses wider than tall: an upright outlined ellipse would read as a zero.
            box = [x0, y0, x0 + w, y0 + min(h, w / 1.3)]
            if rng.random() < 0.3:
                draw.ellipse(box, fill=col8)
            else:
                draw.ellipse(box, outline=col8, width=width)
        elif kind == 3:
            start = float(rng.uniform(0, 360))
            draw.arc(box, start, start + float(rng.uniform(40, 200)), fill=col8, width=width)
        else:
            pts = [tuple(float(v) for v in p) for p in rng.uniform(-0.1 * S, 1.1 * S, (int(rng.integers(3, 6)), 2))]
            draw.line(pts, fill=col8, width=width, joint="curve")


def _overlaps(box: tuple[int, int, int, int], others: list[tuple[int, int, int, int]], pad: int) -> bool:
    x1, y1, x2, y2 = box
    return any(x1 < b[2] + pad and b[0] - pad < x2 and y1 < b[3] + pad and b[1] - pad < y2 for b in others)


def _layout(
    rng: np.random.Generator, cfg: DigitsConfig, h: float, classes: tuple[float, ...] | None
) -> tuple[np.ndarray, list[np.ndarray], list[tuple[int, int, int, int]]]:
    """Digits (0..9), their glyph masks and boxes: a count that fits at height ``h``, laid out on one baseline."""
    S = cfg.image_size
    margin = 1
    est_w = h * (0.62 * sum(cfg.aspect_range) / 2 + sum(cfg.gap_range) / 2)
    fit = max(1, int((S - 2 * margin) // est_w))
    n = int(rng.integers(cfg.min_digits, max(cfg.min_digits, min(cfg.max_digits, fit)) + 1))
    digits = rng.integers(0, 10, n) if classes is None else rng.choice(10, n, p=classes)
    bold = bool(rng.random() < cfg.bold_prob)
    glyphs = []
    for d in digits:
        hi = float(np.clip(h * math.exp(rng.normal(0.0, cfg.height_jitter)), cfg.min_digit_height,
                           cfg.max_digit_height))
        glyphs.append(_glyph(str(int(d)), hi, rng, cfg, bold))
    gaps = [int(round(g * h)) for g in rng.uniform(*cfg.gap_range, max(n - 1, 0))]
    while len(glyphs) > 1 and sum(g.shape[1] for g in glyphs) + sum(gaps[: len(glyphs) - 1]) > S - 2 * margin:
        glyphs.pop()
    # A single glyph wider or taller than the image (extreme aspect / rotation): shrink it to fit.
    g0 = glyphs[0]
    if len(glyphs) == 1 and (g0.shape[1] > S - 2 * margin or g0.shape[0] > S - 2 * margin):
        scale = min((S - 2 * margin) / g0.shape[1], (S - 2 * margin) / g0.shape[0])
        im = Image.fromarray(g0).resize(
            (max(1, int(g0.shape[1] * scale)), max(1, int(g0.shape[0] * scale))), Image.Resampling.LANCZOS
        )
        arr = np.asarray(im, dtype=np.uint8).copy()
        arr[arr < _ALPHA_CUT] = 0
        ys, xs = np.flatnonzero(arr.any(axis=1)), np.flatnonzero(arr.any(axis=0))
        glyphs[0] = arr[ys[0]: ys[-1] + 1, xs[0]: xs[-1] + 1]
    n = len(glyphs)
    digits = digits[:n]
    gaps = gaps[: n - 1]
    total_w = sum(g.shape[1] for g in glyphs) + sum(gaps)
    max_h = max(g.shape[0] for g in glyphs)
    x = int(rng.integers(margin, S - margin - total_w + 1))
    top = int(rng.integers(margin, S - margin - max_h + 1))
    boxes: list[tuple[int, int, int, int]] = []
    for k, g in enumerate(glyphs):
        gh, gw = g.shape
        # Bottom-aligned on one baseline, with a small vertical wobble as on real house numbers.
        y = top + (max_h - gh) + int(round(rng.normal(0.0, 0.03 * h)))
        y = int(np.clip(y, margin, S - margin - gh))
        boxes.append((x, y, x + gw, y + gh))
        x += gw + (gaps[k] if k < n - 1 else 0)
    return digits, glyphs, boxes


def render_digits_image(
    rng: np.random.Generator, config: DigitsConfig | None = None, *, classes: tuple[float, ...] | None = None,
    empty: bool = False, return_masks: bool = False,
) -> dict[str, Any]:
    """Render one synthetic image.

    Returns a dict with ``"image"`` uint8 [S, S, 3], ``"boxes"`` float32 [N, 4] xyxy (left to right),
    ``"labels"`` int64 [N] in 1..10 (digit + 1), ``"digits"`` the string, and, with ``return_masks``,
    ``"masks"`` bool [N, S, S] of each digit's pasted ink (for tests of box tightness). ``classes``: the
    probabilities of the digits 0..9 (``None``: uniform); ``empty``: no digit (N = 0), the rest as usual.
    """
    cfg = config or DigitsConfig()
    S = cfg.image_size

    # --- digits: one height per image, count that fits, glyphs, layout.
    h = math.exp(rng.uniform(math.log(cfg.min_digit_height), math.log(cfg.max_digit_height)))
    digits, glyphs, boxes = (np.zeros(0, dtype=np.int64), [], []) if empty else _layout(rng, cfg, h, classes)
    n = len(glyphs)

    # --- colours: digits at a chosen luminance contrast to what is directly behind them.
    contrast = rng.uniform(*cfg.contrast_range)
    if rng.random() < 0.5:
        back_lum = rng.uniform(0.0, 1.0 - contrast)
        fg_lum = back_lum + contrast
    else:
        back_lum = rng.uniform(contrast, 1.0)
        fg_lum = back_lum - contrast
    fg = _colour(fg_lum, rng.uniform(0.0, cfg.saturation_max), rng)
    plate = bool(rng.random() < cfg.plate_prob) and n > 0
    outer_lum = rng.uniform(0.0, 1.0) if plate else back_lum

    bg = _background(outer_lum, rng, cfg)
    img = Image.fromarray(np.rint(bg * np.float32(255)).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    _draw_clutter(draw, int(rng.poisson(cfg.clutter)), fg, rng, cfg)

    if plate:
        ux1, uy1 = min(b[0] for b in boxes), min(b[1] for b in boxes)
        ux2, uy2 = max(b[2] for b in boxes), max(b[3] for b in boxes)
        pad = rng.uniform(0.15, 0.5) * h
        pcol = _colour(back_lum, rng.uniform(0.0, cfg.saturation_max), rng)
        draw.rectangle([ux1 - pad, uy1 - pad, ux2 + pad - 1, uy2 + pad - 1], fill=_to_u8(pcol))

    # Letter-like distractors, kept off the digits so every digit stays whole and unambiguous.
    for _ in range(int(rng.poisson(cfg.clutter_letters))):
        ch = _DISTRACTOR_CHARS[int(rng.integers(0, len(_DISTRACTOR_CHARS)))]
        lh = math.exp(rng.uniform(math.log(cfg.min_digit_height), math.log(cfg.max_digit_height)))
        lg = _glyph(ch, lh, rng, cfg, bool(rng.random() < cfg.bold_prob))
        lcol = fg if rng.random() < 0.5 else _colour(rng.uniform(0, 1), rng.uniform(0, cfg.saturation_max), rng)
        gh, gw = lg.shape
        if gh > S or gw > S:
            continue
        for _try in range(6):
            lx, ly = int(rng.integers(0, S - gw + 1)), int(rng.integers(0, S - gh + 1))
            if not _overlaps((lx, ly, lx + gw, ly + gh), boxes, 2):
                img.paste(_to_u8(lcol), (lx, ly), Image.fromarray(lg))
                break

    fg8 = _to_u8(fg)
    for (x1, y1, _, _), g in zip(boxes, glyphs):
        img.paste(fg8, (x1, y1), Image.fromarray(g))

    if rng.random() < cfg.blur_prob:
        sigma = min(float(rng.uniform(*cfg.blur_sigma_range)), cfg.blur_max_rel * h)
        img = img.filter(ImageFilter.GaussianBlur(radius=sigma))
    arr = np.asarray(img, dtype=np.float32)
    noise_std = rng.uniform(*cfg.noise_std_range)
    if noise_std > 0:
        arr = arr + rng.standard_normal(arr.shape, dtype=np.float32) * np.float32(noise_std * 255.0)
    image = np.clip(np.rint(arr), 0, 255).astype(np.uint8)

    out: dict[str, Any] = {
        "image": image,
        "boxes": np.array(boxes, dtype=np.float32).reshape(-1, 4),
        "labels": (digits.astype(np.int64) + 1),
        "digits": "".join(str(int(d)) for d in digits),
    }
    if return_masks:
        masks = np.zeros((n, S, S), dtype=bool)
        for k, ((x1, y1, x2, y2), g) in enumerate(zip(boxes, glyphs)):
            masks[k, y1:y2, x1:x2] = g > 0
        out["masks"] = masks
    return out


def _image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, SPLITS.index(split), index, GENERATOR_VERSION]))


def _render_planned(seed: int, split: str, index: int, cfg: DigitsConfig, plan: PoolPlan | None) -> dict[str, Any]:
    """Image ``index`` of the split: as planned (empty, hard, a copy of its source), or as by default."""
    rng = _image_rng(seed, split, index)
    if plan is None:
        return render_digits_image(rng, cfg)
    source = int(plan.duplicate_of[index])
    if source >= 0:
        return _near_duplicate(_render_planned(seed, split, source, cfg, plan), rng, cfg)
    look = _hard_config(cfg) if plan.hard[index] else cfg
    return render_digits_image(rng, look, classes=plan.class_frequencies, empty=bool(plan.empty[index]))


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed = {seed!r} is invalid; accepted: an integer >= 0")
    return int(seed)


def generate_digits(split: str = "train", *, seed: int = 0, config: DigitsConfig | None = None) -> DetectionDataset:
    """Generate one split of the digits set in memory (no cache, nothing written)."""
    split = canonical_split(split)
    seed = _check_seed(seed)
    cfg = config or DigitsConfig()
    n = cfg.split_size(split)
    plan = pool_plan(split, seed=seed, config=cfg)
    images, targets, names = [], [], []
    for i in range(n):
        r = _render_planned(seed, split, i, cfg, plan)
        # numpy's transpose copy: torch's permute().contiguous() goes through its thread pool (slow when busy).
        images.append(torch.from_numpy(np.ascontiguousarray(r["image"].transpose(2, 0, 1))))
        targets.append({"boxes": torch.from_numpy(r["boxes"]), "labels": torch.from_numpy(r["labels"])})
        names.append(f"{i:06d}.png")
    return DetectionDataset(
        images,
        targets,
        categories=DIGIT_CATEGORIES,
        image_ids=list(range(1, n + 1)),
        file_names=names,
        name="digits",
        info={"source": "digits", "split": split, "seed": seed, "config": cfg.to_dict()},
    )


# ---------------------------------------------------------------------------------------------- disk + cache
def _fingerprint(seed: int, cfg: DigitsConfig) -> dict[str, Any]:
    return {
        "generator_version": GENERATOR_VERSION,
        # The font raster comes from Pillow/FreeType: another version may move a pixel.
        "pillow_version": PIL.__version__,
        "seed": seed,
        "config": cfg.to_dict(),
    }


def digits_cache_dir(*, seed: int = 0, config: DigitsConfig | None = None,
                     cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Directory where :func:`digits_dataset` caches the set for this seed and config."""
    cfg = config or DigitsConfig()
    blob = json.dumps(_fingerprint(_check_seed(seed), cfg), sort_keys=True).encode()
    return cache_root(cache_dir) / f"digits-{hashlib.sha256(blob).hexdigest()[:16]}"


def _write_tree(root: Path, splits: dict[str, DetectionDataset], meta: dict[str, Any]) -> None:
    for split, ds in splits.items():
        d = SPLIT_DIRS[split]
        # fsync off: the tree is private until the final rename, and a crashed build is simply rebuilt.
        write_coco(ds, root / d, root / f"{d}.json", fsync=False)
    atomic_write_json(root / _META_FILE, meta, indent=2, fsync=False)


def _tree_complete(root: Path) -> bool:
    return (root / _META_FILE).is_file() and all((root / f"{SPLIT_DIRS[s]}.json").is_file() for s in SPLITS)


def write_digits(
    out_dir: str | os.PathLike[str],
    *,
    seed: int = 0,
    config: DigitsConfig | None = None,
    overwrite: bool = False,
) -> Path:
    """Generate the digits set and write it as COCO JSON + PNG to ``out_dir``; returns ``out_dir``.

    Layout: ``train/ valid/ test/`` (PNG) + ``train.json valid.json test.json`` + ``detgym_digits.json``
    (seed, config, versions). The tree is built in a temporary sibling and renamed into place, so
    ``out_dir`` appears whole or not at all.

    Raises:
        FileExistsError: ``out_dir`` exists and is not empty, unless ``overwrite`` is set and it is a
            digits set written before (holds ``detgym_digits.json``); other directories are never replaced.
    """
    seed = _check_seed(seed)
    cfg = config or DigitsConfig()
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"write_digits: out_dir {out} exists and is not a directory")
    replace = out.is_dir() and any(out.iterdir())
    if replace and not (overwrite and (out / _META_FILE).is_file()):
        hint = ("pass overwrite=True (--overwrite) to replace it" if (out / _META_FILE).is_file()
                else "it is not a digits set written by detgym, so it is never replaced; choose another directory")
        raise FileExistsError(f"write_digits: out_dir {out} already exists and is not empty; {hint}")
    splits = {s: generate_digits(s, seed=seed, config=cfg) for s in SPLITS}
    meta = _fingerprint(seed, cfg)
    if not replace:
        atomic_directory(out, lambda tmp: _write_tree(tmp, splits, meta))
        return out
    # Replace an old digits tree: build the new one beside it, then swap with two renames.
    new = out.with_name(f".tmp-detgym-{out.name}-new-{os.getpid()}")
    old = out.with_name(f".tmp-detgym-{out.name}-old-{os.getpid()}")
    for p in (new, old):
        shutil.rmtree(p, ignore_errors=True)
    atomic_directory(new, lambda tmp: _write_tree(tmp, splits, meta))
    os.rename(out, old)
    os.rename(new, out)
    shutil.rmtree(old, ignore_errors=True)
    return out


_MEMO: dict[tuple[str, str], DetectionDataset] = {}
_MEMO_LOCK = threading.Lock()


def clear_memory_cache() -> None:
    """Forget the splits :func:`digits_dataset` keeps in memory for this process."""
    with _MEMO_LOCK:
        _MEMO.clear()


def digits_dataset(
    split: str = "train",
    *,
    seed: int = 0,
    cache_dir: str | os.PathLike[str] | None = None,
    config: DigitsConfig | None = None,
) -> DetectionDataset:
    """The digits set's ``split`` ("train", "val", "test"), generated once and cached on disk.

    The first call for a (seed, config) generates all three splits (a few seconds for the default
    2000/200/200) and writes them under ``cache_dir`` (default ``$DETGYM_CACHE`` or
    ``~/.cache/detgym``); later calls load the PNGs. Splits are also kept in memory for the process,
    so repeated calls are cheap; each call returns a new :class:`DetectionDataset` whose image
    tensors are shared (do not modify them in place). If the cache cannot be written (read-only
    disk), a warning is issued and the in-memory set is returned.
    """
    split = canonical_split(split)
    seed = _check_seed(seed)
    cfg = config or DigitsConfig()
    root = digits_cache_dir(seed=seed, config=cfg, cache_dir=cache_dir)
    key = (str(root), split)
    with _MEMO_LOCK:
        hit = _MEMO.get(key)
    if hit is not None:
        return hit.copy()

    info = {"source": "digits", "split": split, "seed": seed, "config": cfg.to_dict(), "cache_dir": str(root)}
    if _tree_complete(root):
        d = SPLIT_DIRS[split]
        ds = load_coco(root / d, root / f"{d}.json", name="digits")
        ds.areas = None  # digits areas are box areas; keep the dataset identical to a generated one
        ds.info = info
        with _MEMO_LOCK:
            _MEMO[key] = ds
        return ds.copy()

    splits = {s: generate_digits(s, seed=seed, config=cfg) for s in SPLITS}
    try:
        if root.exists() and not _tree_complete(root):
            # Someone removed files from a finished tree: set it aside and rebuild atomically.
            shutil.rmtree(root, ignore_errors=True)
        atomic_directory(root, lambda tmp: _write_tree(tmp, splits, _fingerprint(seed, cfg)))
    except OSError as exc:
        warnings.warn(f"digits_dataset: could not write the cache at {root} ({exc}); using the in-memory set",
                      stacklevel=2)
    with _MEMO_LOCK:
        for s, ds in splits.items():
            ds.info = dict(info, split=s)
            _MEMO[(str(root), s)] = ds
    out = splits[split]
    return out.copy()
