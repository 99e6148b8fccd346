"""The base class of every detgym env: preset resolution, the loaded substrate, episode seeds, TensorBoard.

An env family subclasses :class:`DetectorEnv`, sets ``family`` (its name in :data:`detgym.envs.VARIANTS`), names
its :class:`~detgym.envs.substrate.PresetTable` in ``presets`` and implements only its own decision (spaces, ``reset``, ``step``). Its constructor takes
``preset`` plus any preset field as a keyword argument (``gym.make("DetLossWeight-v0", alpha=50)``), which
:meth:`DetectorEnv._setup` merges, validates and loads.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar, Mapping

import gymnasium as gym

from detgym.envs.substrate import LoadedSubstrate, PresetTable, Substrate
from detgym.tensorboard import TensorBoardLogger

__all__ = ["DetectorEnv", "SEED_HIGH"]

#: Seeds drawn for detectors and trainers lie in ``[0, SEED_HIGH)``.
SEED_HIGH = 2**31 - 1


class DetectorEnv(gym.Env):
    """Shared set-up of the detgym envs (see the module docstring).

    Attributes set by :meth:`_setup`: ``preset_name``, ``config`` (the resolved preset), ``substrate`` (a
    :class:`~detgym.envs.substrate.LoadedSubstrate`: splits, recipe, seeded detectors and trainers) and
    ``logger`` (a :class:`~detgym.tensorboard.TensorBoardLogger`, a no-op without ``log_dir``).
    """

    #: The family's name in the registration table (``"loss_weight"``, ...): agents read it to know where they fit.
    family: ClassVar[str]
    #: The family's presets; ``preset="default"`` means ``presets.default``.
    presets: ClassVar[PresetTable]

    def _setup(
        self,
        preset: str,
        overrides: Mapping[str, Any],
        *,
        splits: Mapping[str, Any] | None = None,
        log_dir: str | os.PathLike | None = None,
    ) -> None:
        """Resolve ``preset`` + ``overrides`` (preset field names; ``None`` keeps the preset's value), validate
        the result and load the substrate; ``splits`` are ready datasets that replace the preset's
        (``{"train": ..., "val": ...}``)."""
        config: Substrate = self.presets.get_preset(preset).merged(**overrides)
        config.validate()
        self.preset_name = preset
        self.config = config
        self.substrate = LoadedSubstrate(config, splits)
        self.logger = TensorBoardLogger(log_dir)

    def _draw_seeds(self, n: int) -> list[int]:
        """``n`` seeds from the env's ``np_random`` (call after ``super().reset(seed=...)``)."""
        return [int(s) for s in self.np_random.integers(0, SEED_HIGH, size=n)]

    @staticmethod
    def _check_render_mode(render_mode: str | None, accepted: tuple[str | None, ...]) -> str | None:
        if render_mode not in accepted:
            raise ValueError(f"render_mode={render_mode!r} is not supported; accepted: {', '.join(map(repr, accepted))}")
        return render_mode

    def close(self) -> None:
        logger = getattr(self, "logger", None)
        if logger is not None:
            logger.close()
        super().close()

