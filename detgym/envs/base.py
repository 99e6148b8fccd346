"""The shell of every detgym env: presets, the loaded substrate, options, episode bookkeeping, threads, logging.

An env family subclasses :class:`DetectorEnv`, sets ``family`` (its name in :data:`detgym.envs.VARIANTS`),
``presets`` (a :class:`~detgym.envs.substrate.PresetTable`), ``reset_options`` (the keys ``reset(options=...)``
accepts), and implements only its own decision:

* ``__init__``: ``super().__init__(preset, **kwargs)`` resolves ``preset`` plus any preset field given as a keyword
  argument (``gym.make("DetLossWeight-v0", alpha=50)``), validates it, loads the substrate and checks the shell's
  own arguments; the family then declares its spaces (heavy set-up inside ``with self.own_threads():``).
* ``_reset(options)``: the new episode's observation and info (``np_random`` is already seeded, ``options``
  checked);
* ``_step(action)``: the step's 5-tuple.

The shell's ``reset`` / ``step`` do the rest, the same way for every family: ``super().reset(seed=...)``, the
reset-options check, "episode over: call reset" (``ResetNeeded``), the episode's return and length logged to
TensorBoard, and the torch thread count (for families whose steps run torch: ``steps_use_torch``). An env runs
its training and evaluation with ``num_threads`` torch threads whatever its caller set (CPU float results depend
on the count), so gymnasium's sync and async vector envs, SB3's SubprocVecEnv, ``detgym compare`` workers and Ray
give the same rewards for the same seeds and actions; ``info["num_threads"]`` reports it.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping

import gymnasium as gym
import numpy as np
from gymnasium.error import ResetNeeded

from detgym.envs.substrate import LoadedSubstrate, PresetTable, Substrate, check_positive_int
from detgym.parallel import torch_threads
from detgym.tensorboard import TensorBoardLogger

__all__ = ["F32_MAX", "SEED_HIGH", "CompareDefaults", "DetectorEnv", "check_cache_dir"]

#: Seeds drawn for detectors and trainers lie in ``[0, SEED_HIGH)``.
SEED_HIGH = 2**31 - 1
#: Bound of unbounded float32 observation features (as CartPole does: finite bounds keep env checkers quiet).
F32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class CompareDefaults:
    """What ``detgym compare`` does for an env when its command line does not say (data, not code paths)."""

    #: The agent the others are compared with (when it is in the comparison; else the first agent).
    baseline: str = ""
    #: Agents compared when ``--agents`` is not given (empty: ``--agents`` is required).
    agents: tuple[str, ...] = ()
    #: Training timesteps of a learning agent per run.
    train_budget: int = 256
    #: Evaluated episodes per run.
    eval_episodes: int = 1
    #: Constructor arguments of the env learning agents train on, and of the env every agent is evaluated on
    #: (e.g. ``{"split": "train"}`` / ``{"split": "val"}``: evaluated on data no agent trained on).
    train_env_kwargs: Mapping[str, Any] = field(default_factory=dict)
    eval_env_kwargs: Mapping[str, Any] = field(default_factory=dict)
    #: Scalars of an evaluated episode's last ``info`` that a run records (mean over its episodes) and the summary
    #: reports beside AP and return (e.g. ``("regret",)``).
    info_metrics: tuple[str, ...] = ()


def check_cache_dir(cache_dir: str | os.PathLike | None) -> Path | None:
    """``cache_dir`` as a path, refused with a one-line ValueError when it exists and is not a writable directory
    (``None``: ``$DETGYM_CACHE`` or ``~/.cache/detgym``, see :func:`detgym.data.io.cache_root`)."""
    if cache_dir is None:
        return None
    path = Path(cache_dir).expanduser()
    probe = next((p for p in [path, *path.parents] if p.exists()), None)
    if probe is None or not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"cache_dir={str(cache_dir)!r} is not a writable directory (nor inside one)")
    return path


class DetectorEnv(gym.Env):
    """The shared shell of the detgym envs (see the module docstring).

    Args:
        preset: preset name (``"default"`` is the family's CPU default).
        splits: ready datasets that replace the preset's (``{"train": ..., "val": ...}``).
        cache_dir: where trained detectors and tables are cached (default ``$DETGYM_CACHE``, else
            ``~/.cache/detgym``); ValueError when it is not writable.
        log_dir: TensorBoard directory (``None``: no logs).
        render_mode: ``None`` or one of ``metadata["render_modes"]``.
        num_threads: torch threads of the env's training and evaluation (default 1; ValueError below 1).
        **overrides: preset fields (``None`` keeps the preset's value).

    Attributes: ``preset_name``, ``config`` (the resolved preset), ``substrate`` (a
    :class:`~detgym.envs.substrate.LoadedSubstrate`, ``None`` for presets without a detector), ``logger`` (a
    :class:`~detgym.tensorboard.TensorBoardLogger`), ``num_threads``, ``cache_dir``.
    """

    metadata: dict[str, Any] = {"render_modes": ["ansi"]}
    #: The family's name in the registration table (``"loss_weight"``, ...): agents read it to know where they fit.
    family: ClassVar[str]
    #: The family's presets; ``preset="default"`` means ``presets.default``.
    presets: ClassVar[PresetTable]
    #: Keys ``reset(options=...)`` accepts.
    reset_options: ClassVar[tuple[str, ...]] = ()
    #: What ``detgym compare`` defaults to for this env.
    compare_defaults: ClassVar[CompareDefaults] = CompareDefaults()
    #: Wrappers an SB3 learner needs on this env, innermost first (e.g. observation scaling).
    sb3_wrappers: ClassVar[tuple[Callable[[gym.Env], gym.Env], ...]] = ()
    #: Per SB3 algorithm name, options over :data:`detgym.agents.sb3.SB3_DEFAULTS` that fit this env (a policy
    #: class, ``n_envs`` training copies, rollout sizes); the user's own arguments win.
    sb3_options: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    #: Info entries SB3 never reads, left out of its training env's info (SB3's vector env deep-copies every info).
    sb3_unread_info: ClassVar[tuple[str, ...]] = ()
    #: Whether ``_reset`` / ``_step`` run torch. Families whose steps are compiled kernels over precomputed tables
    #: say False: their results do not depend on torch's thread count, and setting and restoring it would cost
    #: more than their step (construction still runs inside ``own_threads``).
    steps_use_torch: ClassVar[bool] = True

    def __init__(
        self,
        preset: str = "default",
        *,
        splits: Mapping[str, Any] | None = None,
        cache_dir: str | os.PathLike | None = None,
        log_dir: str | os.PathLike | None = None,
        render_mode: str | None = None,
        num_threads: int = 1,
        **overrides: Any,
    ) -> None:
        super().__init__()
        accepted = (None, *self.metadata.get("render_modes", ()))
        if render_mode not in accepted:
            raise ValueError(
                f"render_mode={render_mode!r} is not supported; accepted: {', '.join(map(repr, accepted))}"
            )
        self.render_mode = render_mode
        check_positive_int("num_threads", num_threads)
        self.num_threads = int(num_threads)
        self.cache_dir = check_cache_dir(cache_dir)
        config = self.presets.get_preset(preset)
        if isinstance(config, Substrate):
            config = config.merged(**overrides)
            config.validate()
        elif overrides:
            raise ValueError(f"unknown argument(s) {sorted(overrides)} of {type(self).__name__}")
        self.preset_name = preset
        self.config = config
        self.substrate = LoadedSubstrate(config, splits) if isinstance(config, Substrate) else None
        self.logger = TensorBoardLogger(log_dir)
        self._done = True
        self._episode = -1
        self._episode_return, self._episode_length = 0.0, 0

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        options = self._check_reset_options(options)
        self._episode += 1
        self._episode_return, self._episode_length = 0.0, 0
        obs, info = self._in_own_threads(self._reset, options)
        self._done = False
        info["num_threads"] = self.num_threads
        return obs, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        self._check_running()
        obs, reward, terminated, truncated, info = self._in_own_threads(self._step, action)
        self._episode_return += float(reward)
        self._episode_length += 1
        if terminated or truncated:
            self._done = True
            if self.logger.enabled:
                self.logger.scalars(f"{self.family}/episode", {"return": self._episode_return,
                                                               "length": self._episode_length}, self._episode)
        return obs, reward, terminated, truncated, info

    def close(self) -> None:
        logger = getattr(self, "logger", None)
        if logger is not None:
            logger.close()
        super().close()

    # ---------------------------------------------------------------- for the families
    def _reset(self, options: dict[str, Any]) -> tuple[Any, dict]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:  # pragma: no cover - abstract
        raise NotImplementedError

    def own_threads(self) -> contextlib.AbstractContextManager[None]:
        """Run a block with the env's torch thread count (``num_threads``), then restore the caller's."""
        return torch_threads(self.num_threads)

    def _in_own_threads(self, fn: Callable[[Any], Any], arg: Any) -> Any:
        """``fn(arg)`` with the env's torch threads when the family's steps run torch (``steps_use_torch``)."""
        if not self.steps_use_torch:
            return fn(arg)
        with self.own_threads():
            return fn(arg)

    @property
    def episode_over(self) -> bool:
        """True before the first ``reset`` and after an episode ended."""
        return self._done

    def _check_running(self) -> None:
        if self._done:
            raise ResetNeeded("call reset() before step(): the episode has not started or is over")

    def _draw_seeds(self, n: int) -> list[int]:
        """``n`` seeds from the env's ``np_random`` (seeded by ``reset``)."""
        return [int(s) for s in self.np_random.integers(0, SEED_HIGH, size=n)]

    def _check_reset_options(self, options: dict[str, Any] | None) -> dict[str, Any]:
        if options is None:
            return {}
        if not isinstance(options, dict) or set(options) - set(self.reset_options):
            keys = ", ".join(map(repr, self.reset_options)) or "none"
            raise ValueError(f"options must be None or a dict with the keys {keys}, got {options!r}")
        return dict(options)
