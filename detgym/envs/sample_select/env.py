"""DetSampleSelect-v0 and DetSampleSelectSeq-v0: pool-based active learning for detection (papers 002/003, MGRAL)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from detgym._hashing import stable_hash
from detgym._validation import check_choice
from detgym.envs.base import F32_MAX, CompareDefaults, DetectorEnv
from detgym.envs.cache import LRU, cache_entry, load_entry, write_arrays, write_manifest
from detgym.train import NonFiniteLossError, resolve_device

from .features import image_features, pairwise_nearest
from .lookup import Estimate, LookupTable, Reference, count_summary, label_summary
from .observation import DETECTION_STATS, N_EXTRA, row_features
from .presets import PRESETS, TABLE_SUMMARIES, SampleSelectPreset

__all__ = ["DetSampleSelectEnv", "DetSampleSelectSeqEnv", "SampleSelectEnvBase"]

#: Initial detectors of the preset-loaded data, by (table_key, initial set): trained once per process.
_INITIALS: "LRU[tuple[str, int], _Initial]" = LRU(8)
#: Layout version of the cached initial detectors and their features.
INITIAL_FORMAT = 1


@dataclass
class _Initial:
    """The detector trained on initial set k, and what it says about the whole train split."""

    state: dict[str, torch.Tensor]
    metrics: dict[str, float]
    features: np.ndarray | None = None  # Φ_k of every train image (computed on first use)
    stats: np.ndarray | None = None


class SampleSelectEnvBase(DetectorEnv):
    """
    ## Description

    Pool-based active learning for object detection (papers 002/003, "Mean-AP Guided Reinforced Active Learning
    for Object Detection", MGRAL, section III-A). A detector is trained on a small labeled set; every cycle the
    env shows ``M`` unlabeled candidate images (a seeded draw from the unlabeled pool, ``candidates`` images, or
    the whole pool: ``candidates="all"``), the agent chooses ``b`` of them (``batch``), they are labeled and the
    detector is trained on the grown labeled set; the reward is the change of its val mAP. The labels of the train split
    stay hidden until an image is selected: observations come from the images and the detector only.

    :class:`DetSampleSelectEnv` takes one score per candidate and labels the top ``b`` (one step per cycle);
    :class:`DetSampleSelectSeqEnv` picks one image per step, with ``action_masks()`` (``b`` steps per cycle).

    Versions: ``-v0`` is the ``digits`` preset, a pool drawn from one balanced distribution, where which images are
    labeled barely matters (no strategy separates from random at 5 seeds). ``-v1`` is ``digits-pool``: a pool with
    the structure of real unlabeled data (half the images empty, near-duplicate clusters, long-tailed digits, hard
    images; val balanced) and 144 candidates per cycle, where a label-aware oracle beats random selection by many
    retraining seed SDs (``benchmarks.al_headroom``); its look-up table keys on the labeled set's labels.

    ## Action Space

    ``DetSampleSelect-v0``: ``Box(-1, 1, (M,), float32)``, one score per candidate row; the ``b`` valid rows
    with the highest scores are labeled (ties: the lower row first). Only the order matters, so finite scores
    outside ``[-1, 1]`` are ranked like any others; a wrong length or a NaN / inf raises ValueError.
    ``DetSampleSelectSeq-v0``: ``Discrete(M)``, the row to label next. ``action_masks()`` marks the valid rows not
    picked yet in this cycle; a masked row is ignored (reward 0, ``info["ignored_action"]``), and after ``M x cycles``
    ignored actions the episode is truncated (so an agent that ignores the masks still ends).

    ## Observation Space

    ``Box(-f32max, f32max, (M, D + 12), float32)``: one row per candidate; ``D`` = the detector's ``embed_dim``
    (320 for the tiny detectors). Column helpers: :mod:`detgym.envs.sample_select.observation`.

    | Column      | Observation (row j = candidate j)                                                   | Range     |
    |-------------|-------------------------------------------------------------------------------------|-----------|
    | 0 .. D-1    | ``embed()`` of the image: pooled FPN features of the current detector (Φ(I), eq. 1)  | reals     |
    | D           | ``n_detections``: the current detector's detections on the image (after NMS)        | 0 .. 100  |
    | D+1, D+2    | ``mean_score``, ``max_score`` of those detections (0 without detections)             | 0 .. 1    |
    | D+3         | ``mean_entropy``: mean class entropy of the detections, divided by log C            | 0 .. 1    |
    | D+4         | ``sum_entropy``: their sum                                                           | >= 0      |
    | D+5         | ``nearest_distance``: L2 distance in embed space to the nearest labeled image (and, | >= 0      |
    |             | in the sequential variant, to the images picked this cycle)                         |           |
    | D+6         | ``picked``: picked this cycle (sequential variant; 0 in the batch variant)           | 0 / 1     |
    | D+7         | ``valid``: 0 on padding rows (``candidates="all"`` pads the shrinking pool to M)     | 0 / 1     |
    | D+8         | ``cycle_progress``: cycles done / cycles                                            | 0 .. 1    |
    | D+9         | ``labeled_fraction``: labeled images / train split                                  | 0 .. 1    |
    | D+10        | ``current_map``: val ``map_metric`` of the current detector (estimated in lookup mode) | 0 .. 1  |
    | D+11        | ``picks_left``: images still to pick this cycle / M                                 | 0 .. 1    |

    Padding rows are all zero except ``valid = 0`` and the four state columns. With ``reward_mode="lookup"`` the
    embedding and statistics come from the fixed initial detector of the episode's initial set (Φ_k, the
    look-up table's reference features), since no detector is trained while the table answers.

    ## Rewards

    After each cycle (the ``b``-th pick in the sequential variant, 0 before): ``mAP_i - mAP_{i-1}`` (MGRAL III-D),
    where ``mAP`` is the val ``map_metric`` (COCO ``AP`` or ``AP50``, VOC's mAP) of the detector trained on the
    labeled set (``training="finetune"``: the current detector trained ``cycle_iterations`` more iterations;
    ``"retrain"``: a new detector, ``initial_iterations``). The undiscounted return is
    ``mAP_cycles - mAP_0`` exactly. ``reward_mode="lookup"`` estimates ``mAP_i`` with MGRAL's look-up table
    (:mod:`.lookup`) and trains for real only when the table has no record near enough (the measured record is
    added to the table file). ``label_mode="pseudo"`` trains on the current detector's detections scoring at least
    ``pseudo_threshold`` instead of the true labels of the selected images (the paper's semi-supervised estimate;
    the initial set and the val split keep true labels).

    ## Starting State

    ``reset(seed=..., options={"initial_set": k})``: initial set ``k`` of :attr:`initial_sets` (default: drawn
    from the seed), its initial detector (seed ``initial_model_seed + k``, ``initial_iterations`` on the initial
    set; trained once, then kept in memory and on disk beside the data), and the first candidate draw. The seed
    fixes the set, the candidate draws and the training seeds of every cycle: same seed and actions, same rewards
    (on the CPU, for a given torch thread count). ``reset(options={"state": env.state_dict()})`` continues a saved
    episode instead (see :meth:`state_dict`; the seed is then ignored).

    ## Episode End

    Terminated after ``cycles`` cycles (the labeling budget is spent: it is the task's end, visible in
    ``cycle_progress``, not a time limit). The sequential variant is truncated after ``M x cycles`` ignored actions.

    ## Info

    ``reset``: ``initial_set``, ``map``, ``labeled``, ``cycle`` (0), ``metrics`` (val COCO stats, real mode).
    A cycle's last step: ``cycle``, ``labeled``, ``selected`` (train-split indices), ``map``, ``reward_source``
    (``"measured"`` or ``"estimated"``), ``lookup`` (look-up mode: the estimate, records used, their distances and
    weights, the threshold), ``metrics`` (val COCO stats when measured), ``pseudo_boxes`` (pseudo mode),
    ``diverged`` (a training iteration went NaN and the cycle's training stopped there); the last cycle also
    ``final_metrics`` (COCO stats; in look-up mode, when estimated, only ``map_metric``).

    ## Arguments

    ``gymnasium.make("detgym:DetSampleSelect-v1", **kwargs)`` (CPU default, ``-Test``; ``-v0``: also ``-VOC``).
    Every field of :class:`~detgym.envs.sample_select.presets.SampleSelectPreset` is a keyword argument
    (``initial_size``, ``batch``, ``cycles``, ``candidates``, ``training``, ``initial_iterations``,
    ``cycle_iterations``, ``label_mode``, ``pseudo_threshold``, ``reward_mode``, ``map_metric``, ``table_path``,
    ``lookup_neighbours``, ``lookup_estimator``, ``table_summary``, ``initial_sets``, ``n_initial_sets``,
    ``initial_seed``, ``initial_model_seed``, and the substrate's ``recipe``, ``image_size``, ``dataset``,
    ``dataset_kwargs`` (for the digits: every ``DigitsConfig`` field, the pool structure included), ``train_size``,
    ``val_size``, ``train_overrides``, ``model_overrides``, ``device``), plus ``train_set`` / ``val_set`` (ready
    datasets), ``cache_dir``, ``num_threads``, ``log_dir`` (TensorBoard) and ``render_mode`` (``None`` or
    ``"ansi"``). Bad values raise a one-line ValueError naming the parameter.
    """

    family = "sample_select"
    presets = PRESETS
    reset_options = ("initial_set", "state")
    # papers 002/003: random selection is the baseline; learners train against the look-up table, as MGRAL does
    # (``detgym build-table`` first; where the table has no close record the step trains for real and adds one):
    # 64 cycles, one PPO rollout
    compare_defaults = CompareDefaults(
        "random",
        ("random", "entropy_mean", "entropy_sum", "score_uncertainty", "coreset", "mgral", "ppo", "oracle_balance"),
        train_budget=64, train_env_kwargs={"reward_mode": "lookup"},
    )

    def __init__(self, preset: str = "default", *, train_set: Any = None, val_set: Any = None, **kwargs: Any) -> None:
        super().__init__(preset, splits={"train": train_set, "val": val_set}, **kwargs)
        self.config: SampleSelectPreset
        with self.own_threads():
            self._configure(own_data=train_set is None and val_set is None)

    def _configure(self, own_data: bool) -> None:
        cfg = self.config
        self.train_set, self.val_set = self.substrate.train_set, self.substrate.val_set
        self.n_train = len(self.train_set)
        cfg.check_budget(self.n_train)
        #: The initial labeled sets (train-split indices) episodes start from.
        self.initial_sets: tuple[tuple[int, ...], ...] = cfg.resolved_initial_sets(self.n_train)
        self.detector_family = self.substrate.recipe.family
        self.initial_iterations, self.cycle_iterations = cfg.iterations(self.substrate.train_config.iterations)
        self.batch, self.cycles = int(cfg.batch), int(cfg.cycles)
        #: Rows of the observation: M, or the whole unlabeled pool of the first cycle.
        self.n_rows = cfg.pool_draw if cfg.pool_draw is not None else self.n_train - cfg.initial_size
        self.embed_dim = int(self.substrate.probe.embed_dim)
        self.device = resolve_device(self.substrate.train_config.device)
        self.observation_space = spaces.Box(-F32_MAX, F32_MAX, (self.n_rows, self.embed_dim + N_EXTRA), np.float32)
        self.action_space = self._make_action_space()
        self._initial_cache: LRU[tuple[str, int], _Initial] = _INITIALS if own_data else LRU(8)
        #: Whether initial detectors are kept on disk between processes (not for datasets passed in: no key for them).
        self.caches_initial = own_data
        #: MGRAL's look-up table (``reward_mode="lookup"``), else None.
        self.table: LookupTable | None = None
        if cfg.reward_mode == "lookup":
            self.table = LookupTable.open(cfg.table_file(), cfg.table_key(), cfg.to_dict())
        self.model: torch.nn.Module | None = None
        self._cycle_count = 0

    # ------------------------------------------------------------------ spaces
    def _make_action_space(self) -> spaces.Space:
        raise NotImplementedError

    # ------------------------------------------------------------------ gym API
    def _reset(self, options: dict[str, Any]) -> tuple[np.ndarray, dict]:
        if options.get("state") is not None:
            obs = self.load_state_dict(options["state"])
            return obs, {"initial_set": self._set, "cycle": self._cycle, "labeled": int(self._labeled.sum()),
                         "map": self._map, "resumed": True}
        k = self._initial_set_option(options)
        self._cycle_seeds = self._draw_seeds(self.cycles)
        self._set = k
        self._labeled = np.zeros(self.n_train, dtype=bool)
        self._labeled[list(self.initial_sets[k])] = True
        self._selections: list[np.ndarray] = []
        self._targets: dict[int, dict[str, torch.Tensor]] = {i: self.train_set.targets[i] for i in self.initial_sets[k]}
        self._cycle = 0
        self._trained_cycle = 0
        self._ignored = 0
        self.model = None
        info: dict[str, Any] = {"initial_set": k, "cycle": 0, "labeled": int(self._labeled.sum())}
        if self.table is not None:
            self._map = self._lookup_reference(k).initial_map
        else:
            initial = self._initial(k)
            self._map = float(initial.metrics[self.config.map_metric])
            self.model = self._initial_model(k)
            info["metrics"] = dict(initial.metrics)
        info["map"] = self._map
        self._new_candidates()
        return self._observation(), info

    def render(self) -> str | None:
        """``render_mode="ansi"``: one line with the cycle, the labeled-set size and the current mAP."""
        if self.render_mode != "ansi" or not hasattr(self, "_cycle"):
            return None
        return (f"cycle {self._cycle}/{self.cycles} labeled {int(self._labeled.sum())}/{self.n_train} "
                f"{self.config.map_metric} {self._map:.4f}")

    def close(self) -> None:
        self.model = None
        super().close()

    # ------------------------------------------------------------------ public helpers
    @property
    def labeled_indices(self) -> np.ndarray:
        """Train-split indices labeled so far (initial set and every selection)."""
        return np.flatnonzero(self._labeled)

    @property
    def initial_set(self) -> int:
        """The current episode's initial set."""
        return self._set

    @property
    def candidate_indices(self) -> np.ndarray:
        """Train-split indices of this cycle's candidate rows (row j of the observation is image
        ``candidate_indices[j]``; padding rows have none). Their labels stay hidden from agents: an oracle that
        reads them (``detgym.agents.al_oracle``) marks the ceiling, it is not a strategy."""
        return np.asarray(self._candidates, dtype=np.int64).copy()

    def selection_summary(self) -> np.ndarray:
        """The look-up table's key of the current labeled set (see :meth:`summary_of`)."""
        added = np.concatenate(self._selections) if self._selections else np.zeros(0, dtype=np.int64)
        if added.size == 0:
            raise ValueError("no image has been selected yet in this episode")
        return self.summary_of(self._set, added)

    def summary_of(self, set_id: int, added: np.ndarray, kind: str | None = None) -> np.ndarray:
        """The look-up table's key (``kind``, default ``table_summary``; see :mod:`.lookup`) of initial set
        ``set_id`` plus the train-split images ``added``: the mean Φ_k of the added images (``"embedding"``), the
        labeled set's objects per class (``"labels"``), or its objects, images with objects and class entropy
        (``"counts"``)."""
        kind = check_choice("kind", kind or self.config.table_summary, TABLE_SUMMARIES)
        added = np.asarray(added, dtype=np.int64)
        if kind in ("labels", "counts"):
            labeled = np.union1d(self.initial_sets[set_id], added)
            labels = [self.train_set.targets[int(i)]["labels"].numpy() for i in labeled]
            return (label_summary(labels, int(self.train_set.num_classes)) if kind == "labels" else
                    count_summary(labels))
        ref = self.reference(set_id)
        return ref.features[added].astype(np.float64).mean(axis=0).astype(np.float32)

    def reference(self, set_id: int) -> Reference:
        """Φ_k of every train image, the initial detector's statistics and initial mAP of initial set ``set_id``
        (attributes ``features``, ``stats``, ``initial_map``): from the look-up table when it has them."""
        if self.table is not None:
            return self._lookup_reference(set_id)
        initial = self._initial_with_features(set_id)
        return Reference(initial.features, initial.stats, float(initial.metrics[self.config.map_metric]))

    def state_dict(self) -> dict[str, Any]:
        """The episode so far, as plain data (tensors and Python values): :meth:`load_state_dict` continues it
        exactly where it was, so a long evaluation can be checkpointed between cycles and resumed in another
        process (the detector's weights, the labeled set and its labels, the env's random state, the candidates)."""
        self._check_running()
        return {
            "config_key": self.config.config_key(),
            "set": self._set, "cycle": self._cycle, "map": self._map, "trained_cycle": self._trained_cycle,
            "ignored": self._ignored, "cycle_seeds": list(self._cycle_seeds),
            "rng": json.dumps(self.np_random.bit_generator.state),
            "labeled": torch.from_numpy(self._labeled.copy()),
            "selections": [torch.from_numpy(np.asarray(sel, dtype=np.int64)) for sel in self._selections],
            "targets": {int(i): dict(t) for i, t in self._targets.items() if i not in self.initial_sets[self._set]},
            "candidates": torch.from_numpy(np.asarray(self._candidates, dtype=np.int64)),
            "picked": torch.from_numpy(self._picked.copy()),
            "model": None if self.model is None else {k: v.detach().cpu().clone()
                                                      for k, v in self.model.state_dict().items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> np.ndarray:
        """Continue an episode saved by :meth:`state_dict` (by an env of the same configuration); returns the
        observation it had. Raises ValueError for a state of another configuration."""
        if state.get("config_key") != self.config.config_key():
            raise ValueError("state was saved by an env of another configuration (config_key differs)")
        gym.Env.reset(self, seed=0)  # any seed: the generator's state is replaced below
        self.np_random.bit_generator.state = json.loads(state["rng"])
        self._set, self._cycle, self._map = int(state["set"]), int(state["cycle"]), float(state["map"])
        self._trained_cycle, self._ignored = int(state["trained_cycle"]), int(state["ignored"])
        self._cycle_seeds = [int(x) for x in state["cycle_seeds"]]
        self._labeled = state["labeled"].numpy().astype(bool)
        self._selections = [t.numpy().astype(np.int64) for t in state["selections"]]
        self._targets = {i: self.train_set.targets[i] for i in self.initial_sets[self._set]}
        self._targets.update({int(i): dict(t) for i, t in state["targets"].items()})
        self.model = None
        if state["model"] is not None:
            self.model = self.substrate.build_model(self.config.initial_model_seed + self._set)
            self.model.load_state_dict(state["model"])
            self.model.to(self.device)
        self._candidates = state["candidates"].numpy().astype(np.int64)
        self._picked = state["picked"].numpy().astype(bool)
        self._done = False
        self._describe_candidates()
        return self._observation()

    # ------------------------------------------------------------------ cycle mechanics
    def _finish_cycle(self, rows: np.ndarray) -> tuple[float, bool, dict[str, Any]]:
        """Label the candidates at ``rows``, train / estimate, and move to the next cycle."""
        selected = self._candidates[rows]
        self._labeled[selected] = True
        self._selections.append(np.sort(selected))
        i = self._cycle + 1
        info: dict[str, Any] = {"cycle": i, "labeled": int(self._labeled.sum()), "selected": selected.tolist()}
        if self.table is None:
            new_map, metrics = self._measure(i, info)
            info.update(reward_source="measured", metrics=metrics)
        else:
            new_map, metrics = self._lookup_map(i, info)
        reward = new_map - self._map
        self._map = new_map
        self._cycle = i
        info["map"] = new_map
        terminated = i >= self.cycles
        if terminated:
            info["final_metrics"] = metrics if metrics is not None else {self.config.map_metric: new_map}
        else:
            self._new_candidates()
        self._cycle_count += 1
        self.logger.scalars("sample_select", {"map": new_map, "reward": reward, "labeled": info["labeled"]},
                            self._cycle_count)
        return float(reward), terminated, info

    def _measure(self, cycle: int, info: dict[str, Any]) -> tuple[float, dict[str, float]]:
        """Train the detector up to ``cycle`` (the cycles not trained yet, in order) and evaluate it on val."""
        if self.model is None:
            self.model = self._initial_model(self._set)
        pseudo = 0
        for j in range(self._trained_cycle + 1, cycle + 1):
            if self.config.label_mode == "pseudo":
                pseudo += self._pseudo_label(self._selections[j - 1])
            else:
                for idx in self._selections[j - 1]:
                    self._targets[int(idx)] = self.train_set.targets[int(idx)]
            self._train_cycle(j, info)
        self._trained_cycle = cycle
        if self.config.label_mode == "pseudo":
            info["pseudo_boxes"] = pseudo
        metrics = self._evaluate(self.model)
        return float(metrics[self.config.map_metric]), metrics

    def _lookup_map(self, cycle: int, info: dict[str, Any]) -> tuple[float, dict[str, float] | None]:
        """MGRAL III-F: the table's estimate, or a real measurement added to the table when it refuses."""
        assert self.table is not None
        feature = self.selection_summary()
        estimate: Estimate = self.table.estimate(self._set, cycle, feature, self.config.lookup_neighbours,
                                                 estimator=self.config.lookup_estimator)
        info["lookup"] = estimate.info()
        if estimate.value is not None:
            info["reward_source"] = "estimated"
            return float(estimate.value), None
        value, metrics = self._measure(cycle, info)
        row = self.table.add(self._set, cycle, feature, value, source="fallback")
        self.table.save()
        info["lookup"]["added_record"] = row
        info.update(reward_source="measured", metrics=metrics)
        return value, metrics

    def _train_cycle(self, cycle: int, info: dict[str, Any]) -> None:
        labeled = np.flatnonzero(self._labeled_through(cycle))
        targets = [self._targets.get(i, _empty_target()) for i in range(self.n_train)]
        train = self.train_set.with_targets(targets).subset(labeled)
        seed = self._cycle_seeds[cycle - 1]
        if self.config.training == "finetune":
            trainer = self.substrate.build_trainer(0, seed, iterations=self.cycle_iterations, model=self.model,
                                                   train_set=train)
        else:
            trainer = self.substrate.build_trainer(self.config.initial_model_seed + self._set, seed,
                                                   iterations=self.initial_iterations, train_set=train)
        try:
            trainer.fit(progress=False)
        except NonFiniteLossError as err:  # the weights stay those of the last finite iteration
            info["diverged"] = str(err)
        trainer.close()
        self.model = trainer.model

    def _labeled_through(self, cycle: int) -> np.ndarray:
        mask = np.zeros(self.n_train, dtype=bool)
        mask[list(self.initial_sets[self._set])] = True
        for sel in self._selections[:cycle]:
            mask[sel] = True
        return mask

    @torch.no_grad()
    def _pseudo_label(self, indices: np.ndarray) -> int:
        """Targets of ``indices`` from the current detector's detections scoring >= ``pseudo_threshold``."""
        assert self.model is not None
        self.model.eval()
        n_boxes = 0
        threshold = float(self.config.pseudo_threshold)
        step = int(self.substrate.train_config.eval_batch_size)
        for start in range(0, len(indices), step):
            chunk = [int(i) for i in indices[start : start + step]]
            images, _ = self.train_set.batch(chunk, device=self.device)
            for idx, det in zip(chunk, self.model(images)):
                keep = det["scores"] >= threshold
                self._targets[idx] = {"boxes": det["boxes"][keep].float().cpu(), "labels": det["labels"][keep].cpu()}
                n_boxes += int(keep.sum())
        return n_boxes

    def _evaluate(self, model: torch.nn.Module) -> dict[str, float]:
        from detgym.metrics import coco_evaluate
        from detgym.train import predict_coco

        dets = predict_coco(model, self.val_set, batch_size=self.substrate.train_config.eval_batch_size,
                            device=self.device)
        return {k: float(v) for k, v in coco_evaluate(self.val_set.coco_gt(), dets).items()}

    # ------------------------------------------------------------------ initial detectors
    def _initial(self, k: int) -> _Initial:
        """The detector trained on initial set ``k``: trained once, then kept in memory and in the cache."""
        return self._initial_cache.get((self.config.table_key(), int(k)), lambda: self._cached_initial(k))

    def _train_initial(self, k: int) -> _Initial:
        seed = self.config.initial_model_seed + int(k)
        trainer = self.substrate.build_trainer(seed, seed, iterations=self.initial_iterations,
                                               train_set=self.train_set.subset(list(self.initial_sets[k])))
        trainer.fit(progress=False)
        trainer.close()
        state = {name: t.detach().cpu().clone() for name, t in trainer.model.state_dict().items()}
        return _Initial(state, self._evaluate(trainer.model))

    def _initial_entry(self, k: int, kind: str) -> tuple[Path, str]:
        key = stable_hash({"table": self.config.table_key(), "initial_set": int(k)})
        return cache_entry("sample_select", kind, key, self.cache_dir), key

    def _cached_initial(self, k: int) -> _Initial:
        if not self.caches_initial:
            return self._train_initial(k)
        directory, key = self._initial_entry(k, "initial")

        def build(tmp: Path) -> None:
            initial = self._train_initial(k)
            arrays = {name: t.numpy() for name, t in initial.state.items()}
            write_manifest(tmp, "initial", key, INITIAL_FORMAT, {"detector.npz": write_arrays(tmp / "detector.npz",
                                                                                            arrays)},
                           initial_set=int(k), metrics=initial.metrics)

        manifest, arrays = load_entry(directory, "initial", key, INITIAL_FORMAT, build)
        state = {name: torch.from_numpy(np.array(a)) for name, a in arrays["detector.npz"].items()}
        return _Initial(state, {str(n): float(v) for n, v in manifest["metrics"].items()})

    def _initial_model(self, k: int) -> torch.nn.Module:
        model = self.substrate.build_model(self.config.initial_model_seed + int(k))
        model.load_state_dict(self._initial(k).state)
        return model.to(self.device)

    def _initial_with_features(self, k: int) -> _Initial:
        """The initial detector with Φ_k and the detection statistics of every train image (computed once, cached
        beside the detector)."""
        initial = self._initial(k)
        if initial.features is not None:
            return initial

        def compute() -> tuple[np.ndarray, np.ndarray]:
            return self._features(self._initial_model(k), np.arange(self.n_train), stats=True)

        if self.caches_initial:
            directory, key = self._initial_entry(k, "initial-features")

            def build(tmp: Path) -> None:
                features, stats = compute()
                files = {"features.npz": write_arrays(tmp / "features.npz", {"features": features, "stats": stats})}
                write_manifest(tmp, "initial-features", key, INITIAL_FORMAT, files, initial_set=int(k))

            _, arrays = load_entry(directory, "initial-features", key, INITIAL_FORMAT, build)
            initial.features, initial.stats = arrays["features.npz"]["features"], arrays["features.npz"]["stats"]
        else:
            initial.features, initial.stats = compute()
        return initial

    def _lookup_reference(self, k: int) -> Reference:
        """Table reference of set ``k``; computed (and the table saved) when the table does not have it yet."""
        assert self.table is not None
        ref = self.table.reference(k)
        if ref is None:
            initial = self._initial_with_features(k)
            self.table.set_reference(k, initial.features, initial.stats, float(initial.metrics[self.config.map_metric]))
            self.table.save()
            ref = self.table.reference(k)
        return ref

    # ------------------------------------------------------------------ observations
    def _features(self, model: torch.nn.Module, indices: np.ndarray, stats: bool) -> tuple[np.ndarray, np.ndarray]:
        return image_features(model, self.detector_family, self.train_set, indices, device=self.device,
                              batch_size=int(self.substrate.train_config.eval_batch_size), stats=stats)

    def _new_candidates(self) -> None:
        """Draw this cycle's candidates and compute what the observation shows about them."""
        pool = np.flatnonzero(~self._labeled)
        m = self.config.pool_draw
        if m is not None:
            self._candidates = self.np_random.choice(pool, m, replace=False)
        else:
            self._candidates = self.np_random.permutation(pool)
        self._describe_candidates()
        self._picked = np.zeros(len(self._candidates), dtype=bool)

    def _describe_candidates(self) -> None:
        labeled = np.flatnonzero(self._labeled)
        if self.table is not None:
            ref = self._lookup_reference(self._set)
            emb, stats, lab_emb = ref.features[self._candidates], ref.stats[self._candidates], ref.features[labeled]
        else:
            assert self.model is not None
            emb, stats = self._features(self.model, self._candidates, stats=True)
            lab_emb, _ = self._features(self.model, labeled, stats=False)
        self._emb, self._stats = emb, stats
        self._nearest = pairwise_nearest(emb, lab_emb)

    def _observation(self) -> np.ndarray:
        n, rows = len(self._candidates), self.n_rows
        emb = np.zeros((rows, self.embed_dim), dtype=np.float32)
        stats = np.zeros((rows, len(DETECTION_STATS)), dtype=np.float32)
        nearest, picked, valid = np.zeros(rows), np.zeros(rows), np.zeros(rows)
        emb[:n], stats[:n], nearest[:n] = self._emb, self._stats, self._current_nearest()
        picked[:n], valid[:n] = self._picked, 1.0
        state = (self._cycle / self.cycles, float(self._labeled.sum()) / self.n_train, self._map,
                 (self.batch - int(self._picked.sum())) / rows)
        obs = row_features(emb, stats, nearest, picked, valid, state)
        return np.clip(obs, -F32_MAX, F32_MAX)

    def _current_nearest(self) -> np.ndarray:
        if not self._picked.any():
            return self._nearest
        return np.minimum(self._nearest, pairwise_nearest(self._emb, self._emb[self._picked]))

    def _valid_rows(self) -> np.ndarray:
        valid = np.zeros(self.n_rows, dtype=bool)
        valid[: len(self._candidates)] = True
        return valid

    def _initial_set_option(self, options: dict[str, Any]) -> int:
        k = options.get("initial_set")
        if k is None:
            return int(self.np_random.integers(len(self.initial_sets)))
        n = len(self.initial_sets)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k < n:
            raise ValueError(
                f"options['initial_set'] must be an integer in 0..{n - 1} (the preset's initial sets), got {k!r}"
            )
        return int(k)


def _empty_target() -> dict[str, torch.Tensor]:
    return {"boxes": torch.zeros((0, 4), dtype=torch.float32), "labels": torch.zeros((0,), dtype=torch.int64)}


class DetSampleSelectEnv(SampleSelectEnvBase):
    __doc__ = SampleSelectEnvBase.__doc__

    def _make_action_space(self) -> spaces.Space:
        return spaces.Box(-1.0, 1.0, (self.n_rows,), np.float32)

    def _step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        scores = self._scores(action)
        valid = self._valid_rows()
        order = np.argsort(-scores[valid], kind="stable")  # ties: the lower row first
        rows = np.flatnonzero(valid)[order[: self.batch]]
        reward, terminated, info = self._finish_cycle(rows)
        return self._observation(), reward, terminated, False, info

    def _scores(self, action: Any) -> np.ndarray:
        try:
            scores = np.asarray(action, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"action must be {self.n_rows} candidate scores, got {type(action).__name__}") from None
        if scores.shape != (self.n_rows,):
            raise ValueError(f"action must hold one score per candidate row, shape ({self.n_rows},); got shape "
                             f"{scores.shape}")
        if not np.all(np.isfinite(scores)):
            raise ValueError(f"action (candidate scores) must be finite; got NaN / inf at rows "
                             f"{np.flatnonzero(~np.isfinite(scores)).tolist()[:10]}")
        return scores


class DetSampleSelectSeqEnv(SampleSelectEnvBase):
    """DetSampleSelectSeq-v0: as :class:`DetSampleSelectEnv` (see its documentation), but one image per step.

    ## Action Space

    ``Discrete(M)``: the candidate row to label next. :meth:`action_masks` gives the valid rows not picked yet in
    this cycle (what sb3-contrib's MaskablePPO reads). A masked row is ignored: reward 0, ``info["ignored_action"]``
    True, the observation unchanged; ``M x cycles`` ignored actions in an episode truncate it.

    ## Rewards

    0 on the first ``b - 1`` picks of a cycle; ``mAP_i - mAP_{i-1}`` on its ``b``-th pick (the return telescopes to
    ``mAP_cycles - mAP_0``). Between picks only the ``picked``, ``nearest_distance`` and ``picks_left`` columns
    change (no detector runs).
    """

    def _make_action_space(self) -> spaces.Space:
        return spaces.Discrete(self.n_rows)

    def action_masks(self) -> np.ndarray:
        """Rows that may be picked now: valid and not picked yet in this cycle."""
        mask = self._valid_rows()
        if not self._done:
            mask[: len(self._picked)] &= ~self._picked
        return mask

    def _step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        row = self._row(action)
        if not self.action_masks()[row]:
            self._ignored += 1
            truncated = self._ignored >= self.n_rows * self.cycles
            info = {"cycle": self._cycle, "ignored_action": True, "ignored_actions": self._ignored}
            return self._observation(), 0.0, False, truncated, info
        self._picked[row] = True
        if int(self._picked.sum()) < self.batch:
            info = {"cycle": self._cycle, "picks": int(self._picked.sum()), "ignored_actions": self._ignored}
            return self._observation(), 0.0, False, False, info
        reward, terminated, info = self._finish_cycle(np.flatnonzero(self._picked))
        info["ignored_actions"] = self._ignored
        return self._observation(), reward, terminated, False, info

    def _row(self, action: Any) -> int:
        arr = np.asarray(action)
        if (arr.shape not in ((), (1,)) or not np.issubdtype(arr.dtype, np.integer)
                or not 0 <= int(arr.reshape(())) < self.n_rows):
            raise ValueError(f"action must be a candidate row, an integer in 0..{self.n_rows - 1}; got {action!r}")
        return int(arr.reshape(()))
