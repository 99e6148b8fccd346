"""Frozen configurations of the DetSampleSelect env family (papers 002/003, MGRAL), as data.

A preset is a :class:`~detgym.envs.substrate.Substrate` plus the active-learning protocol: the initial labeled
set, ``batch`` images labeled per cycle, ``cycles`` cycles, ``candidates`` (M) images shown per cycle, how the
detector is trained after each cycle and how labels and rewards are obtained. Every field is also an env
constructor argument. The seeded initial labeled sets are part of the preset (``initial_sets``), published as
data as active-learning papers publish theirs: the variance between initial sets dominates AL results.

===============  ==================  ==========================================  ==================================
preset           recipe              protocol                                    meant for
===============  ==================  ==========================================  ==================================
``digits-pool``  fcos-tiny, 64 px    24 + 24 x 5 cycles, 480 images (half        CPU default of -v1 (about a minute)
                                     empty, near-duplicates, class tail, hard
                                     images), M = 144
``digits``       fcos-tiny, 64 px    24 + 24 x 5 cycles, 360 images, M = 72      CPU default of -v0
``voc``          retinanet-resnet50  1000 + 1000 x 10 cycles, M = 5000           GPU, the paper's VOC protocol;
                                                                                 give ``dataset=<VOC / COCO>``
``test-pool``    fcos-tiny, 32 px    4 + 2 x 2 cycles, 24 structured images      the test suite (-v1): seconds
``test``         fcos-tiny, 32 px    4 + 2 x 2 cycles, 24 images, M = 6          the test suite (-v0): seconds
===============  ==================  ==========================================  ==================================
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from detgym._hashing import stable_hash
from detgym._validation import check_choice
from detgym.envs.substrate import PresetTable, Substrate, check_positive_int, frozen
from detgym.metrics import STAT_NAMES

from .lookup import ESTIMATORS

__all__ = [
    "DIGITS_INITIAL_SETS",
    "LABEL_MODES",
    "POOL_INITIAL_SETS",
    "POOL_TAIL",
    "PRESETS",
    "REWARD_MODES",
    "SampleSelectPreset",
    "TABLE_SUMMARIES",
    "TRAINING_MODES",
    "draw_initial_sets",
]

#: ``training`` values: fine-tune the current detector on the labeled set, or train a new one from scratch.
TRAINING_MODES: tuple[str, ...] = ("finetune", "retrain")
#: ``label_mode`` values: true labels revealed on selection, or the current detector's pseudo-labels.
LABEL_MODES: tuple[str, ...] = ("oracle", "pseudo")
#: ``reward_mode`` values: train and evaluate for real, or estimate with the look-up table (MGRAL III-F).
REWARD_MODES: tuple[str, ...] = ("real", "lookup")

#: ``table_summary`` values: what the look-up table keys a labeled set by (see :mod:`.lookup`).
TABLE_SUMMARIES: tuple[str, ...] = ("embedding", "labels", "counts")

#: Fields that change neither which detector a labeled set gives nor its mAP: a look-up table built under one
#: value serves the others (see :meth:`SampleSelectPreset.table_key`).
_NOT_IN_TABLE_KEY: tuple[str, ...] = ("reward_mode", "table_path", "lookup_neighbours", "lookup_estimator",
                                      "candidates", "device")

#: Fields added after the -v0 presets were published, with their defaults: at the default a field is left out of
#: :meth:`SampleSelectPreset.to_dict`, so the -v0 configuration, table and cache keys stay those published.
_LATER_FIELDS: dict[str, Any] = {"table_summary": "embedding", "lookup_estimator": "neighbours"}


def draw_initial_sets(n_train: int, size: int, count: int, seed: int) -> tuple[tuple[int, ...], ...]:
    """``count`` seeded initial labeled sets of ``size`` train-split indices each (sorted; set k from
    ``numpy.random.default_rng([seed, k])``): the rule that produced the published sets of the presets."""
    return tuple(
        tuple(int(i) for i in np.sort(np.random.default_rng([seed, k]).choice(n_train, size, replace=False)))
        for k in range(count)
    )


@dataclass(frozen=True)
class SampleSelectPreset(Substrate):
    """One configuration of the DetSampleSelect envs (see
    :class:`~detgym.envs.sample_select.env.DetSampleSelectEnv`)."""

    #: Images in the initial labeled set (paper VOC: 1000).
    initial_size: int = 1000
    #: ``b``: images labeled per cycle (paper VOC: 1000).
    batch: int = 1000
    #: Active-learning cycles per episode (paper VOC: 10).
    cycles: int = 10
    #: ``M``: unlabeled images shown per cycle, a seeded draw from the pool; ``"all"`` (or ``None`` in a preset):
    #: the whole pool, padded to its first-cycle size (an override of ``None`` keeps the preset's value).
    candidates: int | str | None = None
    #: ``"finetune"``: train the current detector further on the labeled set; ``"retrain"``: a new detector.
    training: str = "finetune"
    #: Iterations of the initial detector (and of every ``"retrain"``); ``None``: the recipe's.
    initial_iterations: int | None = None
    #: Iterations of each ``"finetune"`` cycle; ``None``: a tenth of the recipe's.
    cycle_iterations: int | None = None
    #: ``"oracle"`` or ``"pseudo"`` (detections of the current detector scoring >= ``pseudo_threshold``).
    label_mode: str = "oracle"
    pseudo_threshold: float = 0.5
    #: ``"real"`` (train and evaluate) or ``"lookup"`` (MGRAL III-F look-up table; trains when it must).
    reward_mode: str = "real"
    #: The val COCO statistic the reward is the change of (``"AP50"`` is VOC's mAP, the paper's metric).
    map_metric: str = "AP"
    #: The look-up table file; ``None``: ``<cache>/sample_select/table-<table_key>.npz``, where ``<cache>`` is the
    #: digits ``cache_dir`` of ``dataset_kwargs`` or ``$DETGYM_CACHE`` (default ``~/.cache/detgym``).
    table_path: str | None = None
    #: Nearest records averaged by the look-up estimate.
    lookup_neighbours: int = 5
    #: How the look-up table estimates: ``"neighbours"`` (the paper's inverse-distance average) or ``"ridge"`` (a
    #: ridge fit to every record of the cycle; see :mod:`.lookup`).
    lookup_estimator: str = "neighbours"
    #: What the look-up table keys a labeled set by: ``"embedding"``, MGRAL's mean reference feature Φ_k of the
    #: images selected since the initial set; ``"labels"``, the labeled set's objects per class; ``"counts"``, its
    #: objects, images with objects and class entropy (see :mod:`.lookup`).
    table_summary: str = "embedding"
    #: Published initial labeled sets (train-split indices); ``()``: draw ``n_initial_sets`` with
    #: :func:`draw_initial_sets` from ``initial_seed``.
    initial_sets: tuple[tuple[int, ...], ...] = ()
    n_initial_sets: int = 3
    initial_seed: int = 0
    #: The initial detector of set k is built and trained with seed ``initial_model_seed + k`` (so it is the same
    #: detector in every episode that starts from set k, and is computed once per process).
    initial_model_seed: int = 0

    def validate(self) -> None:
        super().validate()
        for name in ("initial_size", "batch", "cycles", "n_initial_sets", "lookup_neighbours"):
            check_positive_int(name, getattr(self, name))
        for name in ("initial_iterations", "cycle_iterations"):
            if getattr(self, name) is not None:
                check_positive_int(name, getattr(self, name))
        if self.candidates not in (None, "all"):
            if isinstance(self.candidates, str):
                raise ValueError(
                    f"candidates must be an integer >= 1 or 'all' (the whole pool), got {self.candidates!r}"
                )
            check_positive_int("candidates", self.candidates)
        check_choice("training", self.training, TRAINING_MODES)
        check_choice("label_mode", self.label_mode, LABEL_MODES)
        check_choice("reward_mode", self.reward_mode, REWARD_MODES)
        check_choice("table_summary", self.table_summary, TABLE_SUMMARIES)
        check_choice("lookup_estimator", self.lookup_estimator, ESTIMATORS)
        check_choice("map_metric", self.map_metric, STAT_NAMES)
        t = self.pseudo_threshold
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not (0.0 <= float(t) <= 1.0):
            raise ValueError(f"pseudo_threshold must be a score in [0, 1], got {t!r}")
        for name in ("initial_seed", "initial_model_seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {v!r}")
        if self.pool_draw is not None and self.batch > self.pool_draw:
            raise ValueError(
                f"batch={self.batch} is larger than candidates={self.candidates}: the env labels the top-batch of "
                f"the candidates shown; accepted: batch <= candidates"
            )
        self._validate_initial_sets()

    def _validate_initial_sets(self) -> None:
        sets = self.initial_sets
        if not isinstance(sets, (tuple, list)):
            raise ValueError(f"initial_sets must be a tuple of index tuples (or () to draw them), got {sets!r}")
        for k, s in enumerate(sets):
            idx = np.asarray(s)
            if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer):
                raise ValueError(f"initial_sets[{k}] must be a non-empty tuple of train-split indices, got {s!r}")
            if len(set(idx.tolist())) != idx.size or idx.min() < 0:
                raise ValueError(f"initial_sets[{k}] must hold distinct indices >= 0")
            if idx.size != self.initial_size:
                raise ValueError(
                    f"initial_sets[{k}] has {idx.size} images but initial_size={self.initial_size}; "
                    "pass initial_sets=() to draw new sets of that size from initial_seed"
                )

    # ------------------------------------------------------------------ derived
    @property
    def pool_draw(self) -> int | None:
        """``M`` as a number, or ``None`` for the whole pool."""
        return None if self.candidates in (None, "all") else int(self.candidates)

    def resolved_initial_sets(self, n_train: int) -> tuple[tuple[int, ...], ...]:
        """The published sets, or ``n_initial_sets`` drawn from ``initial_seed`` for a train split of ``n_train``.

        Raises:
            ValueError: a set's index is outside the train split, or the split is smaller than ``initial_size``.
        """
        if self.initial_size >= n_train:
            raise ValueError(
                f"initial_size={self.initial_size} leaves no unlabeled image in a train split of {n_train}; "
                f"accepted: initial_size < {n_train}"
            )
        sets = tuple(tuple(int(i) for i in s) for s in self.initial_sets) or draw_initial_sets(
            n_train, self.initial_size, self.n_initial_sets, self.initial_seed
        )
        for k, s in enumerate(sets):
            if max(s) >= n_train:
                raise ValueError(
                    f"initial_sets[{k}] holds index {max(s)} but the train split has {n_train} images; pass "
                    "initial_sets=() to draw sets for this split"
                )
        return sets

    def check_budget(self, n_train: int) -> None:
        """Refuse a protocol the train split cannot hold (one-line errors naming the parameter)."""
        pool = n_train - self.initial_size
        if self.batch > pool:
            raise ValueError(
                f"batch={self.batch} is larger than the unlabeled pool ({pool} of {n_train} train images after "
                f"the initial {self.initial_size}); accepted: batch <= {pool}"
            )
        if self.initial_size + self.cycles * self.batch > n_train:
            raise ValueError(
                f"cycles={self.cycles} needs initial_size + cycles * batch = "
                f"{self.initial_size + self.cycles * self.batch} train images but the train split has {n_train}; "
                f"accepted: cycles <= {pool // self.batch} (or a larger dataset / train_size)"
            )
        last_pool = pool - (self.cycles - 1) * self.batch
        if self.pool_draw is not None and self.pool_draw > last_pool:
            raise ValueError(
                f"candidates={self.candidates} is larger than the unlabeled pool of the last cycle ({last_pool} "
                f"images); accepted: candidates <= {last_pool}, or 'all' (the whole pool)"
            )

    def iterations(self, recipe_iterations: int) -> tuple[int, int]:
        """``(initial_iterations, cycle_iterations)`` with the recipe's defaults filled in."""
        first = self.initial_iterations or int(recipe_iterations)
        cycle = self.cycle_iterations or max(1, math.ceil(int(recipe_iterations) / 10))
        return first, cycle

    def to_dict(self) -> dict[str, Any]:
        """Every field as JSON-able data, except fields added after -v0 that hold their defaults."""
        return {k: v for k, v in super().to_dict().items() if not (k in _LATER_FIELDS and v == _LATER_FIELDS[k])}

    def table_key(self) -> str:
        """Hash of everything that decides a labeled set's measured mAP: a look-up table is valid only for
        presets with the same key (the reward mode, table path, neighbour count, M and device do not count)."""
        data = {k: v for k, v in self.to_dict().items() if k not in _NOT_IN_TABLE_KEY}
        return stable_hash({"class": type(self).__name__, **data})

    def table_file(self) -> Path:
        """Where the look-up table lives: ``table_path``, or the default under the detgym cache."""
        if self.table_path is not None:
            return Path(os.fspath(self.table_path)).expanduser()
        from detgym.data import cache_root

        cache_dir = dict(self.dataset_kwargs).get("cache_dir")  # beside the digits set it was measured on
        return cache_root(cache_dir) / "sample_select" / f"table-{self.table_key()}.npz"


_DIGITS_64 = frozen(
    train_size=360, val_size=120, test_size=0, min_digit_height=16.0, max_digit_height=56.0, max_digits=3
)

#: The published initial labeled sets of the ``digits`` preset (train-split indices of its 360 images):
#: ``draw_initial_sets(360, 24, 3, seed=0)``, written out so that they stay fixed whatever the code does.
DIGITS_INITIAL_SETS: tuple[tuple[int, ...], ...] = (
    (0, 5, 14, 25, 60, 91, 99, 104, 173, 175, 192, 198, 212, 215, 223, 225, 240, 256, 281, 286, 292, 317, 332, 340),
    (0, 1, 13, 20, 21, 38, 78, 82, 87, 88, 103, 175, 176, 189, 220, 256, 273, 275, 300, 307, 329, 336, 339, 344),
    (16, 22, 27, 39, 41, 49, 78, 93, 97, 113, 123, 132, 136, 137, 140, 150, 169, 172, 205, 306, 313, 330, 333, 334),
)

#: Digit k of the ``digits-pool`` train split has probability proportional to 0.8^k (digit 0: 22%, digit 9: 3%).
POOL_TAIL: tuple[float, ...] = tuple(float(x) for x in 0.8 ** np.arange(10) / (0.8 ** np.arange(10)).sum())

#: The ``digits-pool`` data: 480 train images of which half hold no digit, a fifth are near-duplicates (clusters
#: of 4), digits long-tailed, a tenth of the images (every split) hard; val balanced, 120 images.
_POOL_64 = frozen(
    train_size=480, val_size=120, test_size=0, min_digit_height=16.0, max_digit_height=56.0, max_digits=3,
    class_frequencies=POOL_TAIL, empty_fraction=0.5, duplicate_fraction=0.2, duplicate_cluster_size=4,
    hard_fraction=0.1,
)

#: The published initial labeled sets of the ``digits-pool`` preset: ``draw_initial_sets(480, 24, 3, seed=0)``.
POOL_INITIAL_SETS: tuple[tuple[int, ...], ...] = (
    (1, 7, 18, 34, 81, 124, 132, 141, 234, 236, 257, 265, 285, 291, 299, 303, 321, 344, 378, 388, 389, 427, 445, 457),
    (0, 1, 18, 27, 29, 51, 105, 110, 117, 119, 139, 236, 238, 256, 294, 343, 370, 407, 414, 443, 454, 455, 460, 469),
    (22, 30, 37, 53, 55, 67, 105, 124, 131, 153, 164, 177, 184, 185, 187, 202, 227, 230, 277, 413, 417, 447, 448, 470),
)

#: The CPU protocol of DetSampleSelect-v0 (preset ``digits``).
_DIGITS_PRESET = SampleSelectPreset(
    "fcos-tiny",
    image_size=64,
    dataset_kwargs=_DIGITS_64,
    train_overrides=frozen(lr=4e-3, warmup_iters=20, eval_batch_size=40),
    device="cpu",
    initial_size=24,
    batch=24,
    cycles=5,
    candidates=72,
    initial_iterations=400,
    cycle_iterations=150,
    map_metric="AP50",
    initial_sets=DIGITS_INITIAL_SETS,
)


#: The -Test protocol of DetSampleSelect-v0 (preset ``test``): seconds per episode on 2 CPU cores, 32 px, a narrow
#: FPN, 24 train / 8 val images, 2 cycles of 2 images.
_TEST_PRESET = SampleSelectPreset(
    "fcos-tiny",
    image_size=32,
    dataset_kwargs=frozen(
        train_size=24, val_size=8, test_size=0, min_digit_height=6.0, max_digit_height=24.0, max_digits=2
    ),
    train_overrides=frozen(batch_size=4, lr=4e-3, warmup_iters=2, eval_batch_size=8),
    # score_thresh 0.05 (FCOS's own is 0.2): a detector of 40 iterations already reports boxes, so the
    # rewards of the tests are not all zero
    model_overrides=frozen(fpn_channels=16, head_num_convs=1, score_thresh=0.05),
    device="cpu",
    initial_size=4,
    batch=2,
    cycles=2,
    candidates=6,
    initial_iterations=40,
    cycle_iterations=6,
    map_metric="AP50",
    n_initial_sets=2,
)


#: Preset name -> preset; ``PRESETS.default`` is the one behind ``DetSampleSelect-v0``.
PRESETS: PresetTable[SampleSelectPreset] = PresetTable(
    {
        # CPU: digits at 64 px, FCOS-tiny. The initial detector trains once per initial set (cached on disk); every
        # cycle fine-tunes the detector 150 iterations on the labeled set and evaluates it on 120 val images.
        # Measured with one torch thread: about 6.7 CPU-s per cycle (an episode about 35 s on an idle core, plus
        # 400 iterations for an initial detector the first time); val AP50 rises at every cycle for every strategy,
        # from about 0.025 to 0.31-0.35 (benchmarks.al_curves --quick, 3 seeds).
        "digits": _DIGITS_PRESET,
        # CPU default of DetSampleSelect-v1: the ``digits`` protocol on a pool with the structure of real unlabeled
        # data (see _POOL_64), where the choice of images matters (benchmarks.al_headroom). The look-up table keys a
        # labeled set by its objects per class.
        "digits-pool": _DIGITS_PRESET.replace(dataset_kwargs=_POOL_64, candidates=144,
                                              initial_sets=POOL_INITIAL_SETS, table_summary="labels"),
        # GPU: the paper's VOC protocol (1000 + 1000 per cycle, 10 cycles; M = 5000 so that every cycle of
        # VOC07+12 trainval, 16551 images, can show M). The digits set stands in until dataset=<VOC / COCO path>.
        "voc": SampleSelectPreset(
            "retinanet-resnet50",
            initial_size=1000,
            batch=1000,
            cycles=10,
            candidates=5000,
            initial_iterations=20_000,
            cycle_iterations=2_000,
            map_metric="AP50",
        ),
        "test": _TEST_PRESET,
        # -Test of DetSampleSelect-v1: ``test`` on a pool with empty images, near-duplicates and a class tail
        "test-pool": _TEST_PRESET.replace(
            dataset_kwargs=frozen(**_TEST_PRESET.dataset_kwargs, class_frequencies=POOL_TAIL, empty_fraction=0.25,
                                  duplicate_fraction=0.25, duplicate_cluster_size=3),
            table_summary="labels",
        ),
    },
    default="digits",
)
