"""What every env family configures the same way: a detector recipe, its data, and how to build it.

Every env family's preset is a :class:`Substrate` plus the family's own fields (a dataclass subclass), so the
merge / validate / ``replace`` rules below hold for all of them, and :class:`LoadedSubstrate` is the one place
that loads the splits and builds seeded detectors and :class:`~detgym.train.Trainer` objects from a preset.

* ``Substrate.merged(**overrides)``: constructor arguments over a preset. ``None`` keeps the preset's value;
  the dict fields (``dataset_kwargs``, ``train_overrides``, ``model_overrides``) are merged into the preset's
  (the argument's entries win).
* ``Substrate.replace(**changes)``: a copy with fields changed; an unknown name raises ValueError listing the
  accepted ones.
* ``Substrate.validate()``: one-line errors naming the field; family presets extend it.
* ``Substrate.to_dict()`` / ``config_key()``: the resolved configuration as JSON, and a short hash of it
  (what caches and result files are keyed by, so a changed preset never reuses stale results).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, Generic, Iterator, Mapping, TypeVar

import numpy as np

from detgym._hashing import jsonable, stable_hash
from detgym._validation import replace_fields

__all__ = ["LoadedSubstrate", "PresetTable", "Substrate", "check_positive_int", "frozen", "load_splits"]

#: Fields whose constructor argument is merged into the preset's mapping instead of replacing it.
MERGED_FIELDS: tuple[str, ...] = ("dataset_kwargs", "train_overrides", "model_overrides")
_DEVICES = ("auto", "cpu", "cuda")


def frozen(mapping: Mapping[str, Any] | None = None, **kw: Any) -> Mapping[str, Any]:
    """A read-only copy of ``mapping`` (presets are data: nobody may change a shared one in place)."""
    return MappingProxyType({**(mapping or {}), **kw})


def check_positive_int(name: str, value: Any) -> None:
    """Raise ValueError unless ``value`` is an integer >= 1 (bools are refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


@dataclass(frozen=True)
class Substrate:
    """The detector, schedule and data an env trains on (the shared part of every env family's preset)."""

    #: Name of a :data:`detgym.train.RECIPES` entry: detector family / backbone / image size / TrainConfig.
    recipe: str
    #: Square input size of the detector and of generated digits (``None``: the recipe's).
    image_size: int | None = None
    #: ``"digits"`` (generated, the default), a COCO-layout directory, or a VOC root (see detgym.data.load_dataset).
    dataset: str = "digits"
    #: Extra arguments of the loader; for digits: DigitsConfig fields plus ``seed`` and ``cache_dir``.
    dataset_kwargs: Mapping[str, Any] = field(default_factory=frozen)
    #: Use only the first ``train_size`` / ``val_size`` images of the splits (``None``: all).
    train_size: int | None = None
    val_size: int | None = None
    #: Changes to the recipe's TrainConfig (lr, batch_size, ...).
    train_overrides: Mapping[str, Any] = field(default_factory=frozen)
    #: Extra ``build_detector`` arguments (over the recipe's model_kwargs).
    model_overrides: Mapping[str, Any] = field(default_factory=frozen)
    #: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``; ``None``: the TrainConfig's.
    device: str | None = None

    #: Fields added after keys were published: at their default they do not enter :meth:`config_key`.
    KEY_SINCE_DEFAULT: ClassVar[tuple[str, ...]] = ()

    # ------------------------------------------------------------------ merging
    def replace(self, **changes: Any) -> "Substrate":
        """A copy with some fields changed; unknown names raise ValueError listing the accepted ones."""
        return replace_fields(self, **changes)

    def merged(self, **overrides: Any) -> "Substrate":
        """This preset with constructor arguments applied: ``None`` keeps a field, dict fields are merged."""
        changes = {k: v for k, v in overrides.items() if v is not None}
        for name in MERGED_FIELDS:
            if name in changes:
                if not isinstance(changes[name], Mapping):
                    raise ValueError(f"{name} must be a dict, got {type(changes[name]).__name__}")
                changes[name] = frozen(getattr(self, name), **changes[name])
        return self.replace(**changes)

    # --------------------------------------------------------------- validation
    def validate(self) -> None:
        """Raise ValueError naming the first bad field (family presets extend this with their own fields)."""
        from detgym.train import RECIPES

        if self.recipe not in RECIPES:
            raise ValueError(f"unknown recipe {self.recipe!r}; accepted: {', '.join(RECIPES)}")
        for name in ("train_size", "val_size", "image_size"):
            if getattr(self, name) is not None:
                check_positive_int(name, getattr(self, name))
        if self.device is not None and self.device not in _DEVICES:
            raise ValueError(f"device={self.device!r} is not supported; accepted: {', '.join(_DEVICES)}")
        for name in MERGED_FIELDS:
            if not isinstance(getattr(self, name), Mapping):
                raise ValueError(f"{name} must be a dict, got {type(getattr(self, name)).__name__}")

    # ------------------------------------------------------------------ identity
    def to_dict(self) -> dict[str, Any]:
        """Every field as JSON-able data (the resolved configuration of a run)."""
        return {f.name: jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def config_key(self) -> str:
        """A 16-hex-digit hash of :meth:`to_dict`: equal for equal configurations, whatever their preset name.

        A field listed in the class's ``KEY_SINCE_DEFAULT`` (fields added after results were published) is left out
        while it has its default value, so the configurations that existed before it keep their keys (their caches
        and recorded runs stay valid)."""
        data = self.to_dict()
        for f in dataclasses.fields(self):
            if f.name in self.KEY_SINCE_DEFAULT and getattr(self, f.name) == f.default:
                del data[f.name]
        return stable_hash({"class": type(self).__name__, **data})


P = TypeVar("P", bound=Substrate)


class PresetTable(Mapping[str, P], Generic[P]):
    """An env family's presets by name, with ``"default"`` as an alias of one of them.

    Args:
        presets: name -> preset.
        default: the name ``"default"`` stands for (one line to change to switch a family's default).
    """

    def __init__(self, presets: Mapping[str, P], default: str) -> None:
        if default not in presets:
            raise ValueError(f"default preset {default!r} is not one of {list(presets)}")
        self._presets = MappingProxyType(dict(presets))
        self.default = default

    def __getitem__(self, name: str) -> P:
        return self._presets[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._presets)

    def __len__(self) -> int:
        return len(self._presets)

    def names(self) -> list[str]:
        """Accepted preset names, ``"default"`` first."""
        return ["default", *self._presets]

    def get_preset(self, name: str) -> P:
        """The preset called ``name`` (``"default"`` -> :attr:`default`); ValueError listing the names otherwise."""
        key = self.default if name == "default" else name
        if not isinstance(key, str) or key not in self._presets:
            raise ValueError(f"unknown preset {name!r}; accepted: {', '.join(self.names())}")
        return self._presets[key]


# --------------------------------------------------------------------------------------------------- data
def load_splits(config: Substrate, splits: tuple[str, ...], image_size: int | None) -> dict[str, Any]:
    """The named splits of the preset's dataset, cut to ``train_size`` / ``val_size`` (digits: generated once).

    Raises:
        ValueError: an empty split (naming the arguments that made it empty).
    """
    kwargs = dict(config.dataset_kwargs)
    if config.dataset == "digits":
        from detgym.data import DigitsConfig, digits_dataset

        seed = kwargs.pop("seed", 0)
        cache_dir = kwargs.pop("cache_dir", None)
        if image_size is not None:
            kwargs.setdefault("image_size", int(image_size))
        digits = DigitsConfig.from_dict(kwargs)
        loaded = {s: digits_dataset(s, seed=seed, cache_dir=cache_dir, config=digits) for s in splits}
    else:
        from detgym.data import load_dataset

        loaded = {s: load_dataset(config.dataset, s, **kwargs) for s in splits}
    return {s: _cut(config, s, ds) for s, ds in loaded.items()}


def _cut(config: Substrate, split: str, dataset: Any) -> Any:
    size = {"train": config.train_size, "val": config.val_size}.get(split)
    if size is not None and size < len(dataset):
        dataset = dataset.subset(range(size))
    if len(dataset) == 0:
        raise ValueError(f"the {split} split is empty; check dataset / dataset_kwargs / {split}_size")
    return dataset


# -------------------------------------------------------------------------------------------- detectors
class LoadedSubstrate:
    """A :class:`Substrate` made real: recipe and TrainConfig resolved, splits loaded, detectors on demand.

    Args:
        config: the preset (any family's; only the Substrate fields are read).
        splits: split name -> ready :class:`detgym.data.DetectionDataset` that replaces the preset's data
            (e.g. ``{"train": my_train}``); missing splits are loaded from the preset when first asked for.
    """

    def __init__(self, config: Substrate, splits: Mapping[str, Any] | None = None) -> None:
        from detgym.train import get_recipe

        self.config = config
        recipe = get_recipe(config.recipe)
        if config.image_size is not None:
            recipe = recipe.replace(image_size=int(config.image_size))
        self.recipe = recipe
        train_config = recipe.train.replace(**dict(config.train_overrides))
        if config.device is not None:
            train_config = train_config.replace(device=config.device)
        #: The recipe's TrainConfig with the preset's overrides (iterations as the recipe's).
        self.train_config = train_config
        self._splits: dict[str, Any] = {}
        for name, dataset in (splits or {}).items():
            if dataset is not None:
                self._splits[name] = _cut(config, name, dataset)
        self._probe: Any = None

    # ------------------------------------------------------------------- data
    def split(self, name: str) -> Any:
        """Split ``name`` ("train", "val", "test"), loaded on first use."""
        if name not in self._splits:
            self._splits.update(load_splits(self.config, (name,), self.recipe.image_size))
        return self._splits[name]

    @property
    def train_set(self) -> Any:
        return self.split("train")

    @property
    def val_set(self) -> Any:
        return self.split("val")

    @property
    def num_classes(self) -> int:
        return int(self.train_set.num_classes)

    # -------------------------------------------------------------- detectors
    def build_model(self, seed: int) -> Any:
        """A freshly initialised detector of the recipe, seeded; the caller's global torch RNG is left alone."""
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            return self.recipe.build_model(self.num_classes, **dict(self.config.model_overrides))

    def build_trainer(
        self, model_seed: int, train_seed: int, *, iterations: int | None = None, model: Any = None,
        train_set: Any = None, log_dir: Any = None,
    ) -> Any:
        """A :class:`~detgym.train.Trainer` on a seeded new detector (or ``model``), the train and val splits.

        Args:
            model_seed: seed of the detector's initialisation (ignored when ``model`` is given).
            train_seed: the trainer's seed (batch order, samplers).
            iterations: schedule length (``None``: the TrainConfig's).
            model: an existing detector to train further instead of a new one.
            train_set: train on this dataset instead of the train split (e.g. an active-learning labeled set).
            log_dir: the Trainer's TensorBoard directory.
        """
        from detgym.train import Trainer

        config = self.train_config.replace(seed=int(train_seed))
        if iterations is not None:
            config = config.replace(iterations=int(iterations))
        model = model if model is not None else self.build_model(model_seed)
        train_set = train_set if train_set is not None else self.train_set
        return Trainer(model, train_set, self.val_set, config, log_dir=log_dir)

    @property
    def probe(self) -> Any:
        """A throw-away detector of the recipe, built once: what envs read the architecture from (pyramid levels,
        embedding size) without training anything."""
        if self._probe is None:
            self._probe = self.build_model(0)
        return self._probe

    @property
    def level_names(self) -> tuple[str, ...]:
        """The detector's pyramid level names."""
        n = int(self.probe.num_levels)
        return tuple(getattr(self.probe, "level_names", None) or (f"L{i}" for i in range(n)))

    @property
    def num_levels(self) -> int:
        return len(self.level_names)
