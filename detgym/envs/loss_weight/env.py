"""DetLossWeight-v0: per-FPN-level loss weighting during detector training (paper 000, AVW / RLO)."""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from detgym.envs.base import F32_MAX, SEED_HIGH, CompareDefaults, DetectorEnv
from detgym.metrics import STAT_NAMES
from detgym.train import NonFiniteLossError, Trainer

from .observation import build_observation, observation_size
from .presets import PRESETS, LossWeightPreset
from .weighting import N_ACTIONS, decrease_rate, interval_reward, interval_stats, scheme_weights
from .wrappers import LogScaleObservation

__all__ = ["DetLossWeightContinuousEnv", "DetLossWeightEnv", "check_seed"]

def check_seed(name: str, value: Any) -> int:
    """``value`` as an int seed in ``0..SEED_HIGH-1``; ValueError naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < SEED_HIGH:
        raise ValueError(f"{name} must be an integer in 0..{SEED_HIGH - 1}, got {value!r}")
    return int(value)


class DetLossWeightEnv(DetectorEnv):
    """
    ## Description

    Train an FPN object detector (RetinaNet / FCOS / Faster R-CNN) for one whole schedule of ``T`` iterations,
    and choose every ``alpha`` iterations how the per-pyramid-level losses are weighted in
    ``L_total = sum_i w_i L_i`` (eq. 1 of paper 000, "Multi-scale loss optimization ... AVW / RLO"). One env
    step trains one interval of ``alpha`` iterations (``Trainer.step(weights)`` ``alpha`` times) with the
    weights of the chosen scheme, computed from the last interval's statistics as the paper's AVW / RLO do.

    ## Action Space

    ``Discrete(4)``: the weighting scheme for the next interval (eq. 5, ``N = n_enhance`` levels enhanced with
    ``w_j = 1 + lambda_k L_{j,t} / sum_i L_{i,t}``, all other levels 1; ``lambdas`` = (4, 3) in the default preset,
    the paper's (1.5, 1.0) in ``retinanet`` and the others: see :mod:`detgym.envs.loss_weight.presets`).

    | Num | Scheme                                                | Paper      |
    |-----|-------------------------------------------------------|------------|
    | 0   | enhance the N levels whose variance fell fastest (r)  | a0 = AVW   |
    | 1   | enhance the N levels with the smallest interval loss  | a1         |
    | 2   | enhance the N levels with the largest interval loss   | a2         |
    | 3   | all weights 1                                         | a3         |

    Ties rank the lower (finer) level first. :class:`DetLossWeightContinuousEnv` instead takes the weights
    themselves: ``Box(weight_low, weight_high, (n_levels,), float32)``.

    ## Observation Space

    ``Box(float32, (5 n + 1,))`` for ``n`` pyramid levels (5 for RetinaNet / FCOS P3-P7), the state
    ``S_t = [L_{i,t}, L_{i,t-1}, Var_{i,t}, Var_{i,t-1}]`` of eq. 6 plus progress and current weights
    (layout helpers: :mod:`detgym.envs.loss_weight.observation`):

    | Index          | Observation                                                     | Min | Max          |
    |----------------|-----------------------------------------------------------------|-----|--------------|
    | 0 .. n-1       | ``L_{i,t}``: sum of level i's raw losses over interval t (eq. 2) | 0   | f32 max      |
    | n .. 2n-1      | ``L_{i,t-1}``: the same for the interval before                  | 0   | f32 max      |
    | 2n .. 3n-1     | ``Var_{i,t}``: unbiased variance of those losses (eq. 3)         | 0   | f32 max      |
    | 3n .. 4n-1     | ``Var_{i,t-1}``                                                  | 0   | f32 max      |
    | 4n             | training progress ``t / T_intervals``                            | 0   | 1            |
    | 4n+1 .. 5n     | weights ``w_i`` used during interval t                           | 1   | 1 + max(λ)   |

    Raw losses are not scaled (they grow with ``alpha``): for SB3 wrap the env in
    :class:`detgym.envs.loss_weight.wrappers.LogScaleObservation` (what :mod:`detgym.agents.sb3` does) or use
    ``VecNormalize``.
    (Continuous variant: the weight bounds are ``weight_bounds``.)

    ## Rewards

    ``reward="loss"`` (default, eq. 7): ``sign(sum_i L_{i,t-1} - sum_i L_{i,t})`` on raw losses: +1 if the
    total interval loss fell, -1 if it rose, 0 if equal. It is a function of the observation, so an agent can
    compute it itself (RLO does).
    ``reward="map"``: every ``map_every`` steps and at the last step, the change of the val-split COCO
    ``map_metric`` (default AP) since the previous evaluation (0 before the first); 0 on the other steps.
    The undiscounted return is then the final val AP.

    A diverging detector (the trainer raises ``NonFiniteLossError``: NaN / inf loss) ends the episode with
    ``terminated=True`` and reward ``nan_penalty``; by default ``-(steps left, this one included)`` for
    ``"loss"`` (never better than any continuation, each step's reward being >= -1) and ``-1`` for ``"map"``
    (the map return of any continuation is >= -1). The observation is the last valid one and every
    ``info["final_metrics"]`` stat is 0 (a diverged detector finds nothing); ``info["diverged"]`` is True.

    ## Starting State

    ``reset(seed=...)`` builds a freshly initialised detector and trainer seeded from the env's ``np_random``
    (same seed and same actions -> same rewards and final mAP on the CPU), then trains the first interval with
    all weights 1 (the paper initialises ``w_i = 1`` and decides first after ``alpha`` iterations). The first
    observation holds that interval's ``L_{i,1}`` and ``Var_{i,1}``, ``Var_{i,0} = 1`` (paper) and
    ``L_{i,0} = L_{i,1}`` (so the reward "before" the first action is 0, like the paper's initial R).
    ``reset(options={"model_seed": m, "train_seed": t})`` (either key optional) replaces the drawn seeds of the
    detector's initialisation and of the trainer's minibatch order; the reset ``info`` reports both
    (``model_seed``, ``train_seed``). ``gymnasium.make_vec(id, num_envs=N, vectorization_mode="vector_entry_point")``
    trains N such envs in lockstep on one minibatch order
    (:class:`~detgym.envs.loss_weight.vector.DetLossWeightVectorEnv`).

    ## Episode End

    Truncation after ``T_intervals - 1`` steps, when the training schedule (``T = T_intervals * alpha``
    iterations; ``iterations`` is rounded down to a multiple of ``alpha``) is complete; that step's
    ``info["final_metrics"]`` holds the val COCO stats of the trained detector. Termination only on divergence
    (see Rewards).

    ## Info

    Every ``reset`` / ``step`` info: ``interval_losses`` (float64 [n], ``L_{i,t}``), ``iteration_losses``
    (float64 [alpha, n], the raw per-level losses of each iteration), ``variances``, ``rates`` (eq. 4),
    ``weights`` (float64 [n], used during the interval), ``action`` (the scheme index, or ``None`` at reset;
    the weights for the continuous variant), ``iteration`` (trainer iterations done), ``interval`` (t),
    ``lr``, ``reward_loss`` (the eq. 7 value whatever the reward), ``level_names``; ``map`` when evaluated;
    ``final_metrics`` on the last step. The step that diverges has the same keys (its interval statistics and
    ``reward_loss`` are NaN) plus ``diverged`` and ``error``.

    ## Arguments

    ``gymnasium.make("detgym:DetLossWeight-v0", **kwargs)``; other ids pick other presets
    (``-RetinaNet``, ``-FCOS``, ``-FasterRCNN``, ``-RetinaNet-R50``, ``-FCOS-R50``, ``-FasterRCNN-R50``,
    ``-Test``; see :mod:`detgym.envs.loss_weight.presets`). Every field of
    :class:`~detgym.envs.loss_weight.presets.LossWeightPreset` is also a keyword argument that overrides the
    preset (``None`` keeps the preset's value; the dict arguments ``dataset_kwargs``, ``train_overrides`` and
    ``model_overrides`` are merged into the preset's); an unknown name raises ValueError listing the fields.

    * ``preset``: preset name (``"default"`` = ``"retinanet-lambda4"``, ``"retinanet"``, ``"fcos"``,
      ``"fasterrcnn"``, ``"*-r50"``, ``"test"``).
    * Substrate fields (every env family has them): ``recipe`` (a :data:`detgym.train.RECIPES` name),
      ``image_size``, ``dataset``, ``dataset_kwargs``, ``train_size``, ``val_size``, ``train_overrides``
      (TrainConfig changes), ``model_overrides`` (extra ``build_detector`` arguments), ``device``.
    * Family fields: ``alpha`` (iterations per step; paper 100), ``iterations`` (total ``T``), ``reward``
      (``"loss"`` / ``"map"``), ``map_every``, ``map_metric``, ``n_enhance`` (N of eq. 5, paper 2),
      ``lambdas`` (paper (1.5, 1.0)).
    * ``train_set`` / ``val_set``: ready :class:`detgym.data.DetectionDataset` objects instead of the preset's data.
    * ``nan_penalty``: reward on divergence (default: see Rewards).
    * ``log_dir``: TensorBoard directory for per-step weights, action, reward and per-level losses / variances
      (tags ``loss_weight/...``, global step = training iterations done by this env over all its episodes).
    * ``render_mode``: ``None`` or ``"ansi"`` (a text line per interval).
    * ``num_threads``: torch threads of the env's training and evaluation (default 1, whatever the caller set:
      results are the same in every vector env and worker; ``info["num_threads"]``), ``cache_dir``: the cache root.
    """

    family = "loss_weight"
    presets = PRESETS
    reset_options = ("model_seed", "train_seed")
    compare_defaults = CompareDefaults(
        # paper 000, table 3: ordinary training is the baseline. An episode is a whole training run (the CPU default:
        # 74 steps, about 3.5 minutes on one thread), so one evaluated episode per run and 256 timesteps of training.
        baseline="uniform", agents=("uniform", "avw", "rlo", "ppo"), train_budget=256, eval_episodes=1,
    )
    sb3_wrappers = (LogScaleObservation,)

    def __init__(
        self,
        preset: str = "default",
        *,
        train_set: Any = None,
        val_set: Any = None,
        nan_penalty: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(preset, splits={"train": train_set, "val": val_set}, **kwargs)
        self.config: LossWeightPreset
        if nan_penalty is not None and not math.isfinite(float(nan_penalty)):
            raise ValueError(f"nan_penalty must be a finite number, got {nan_penalty!r}")
        self.nan_penalty = None if nan_penalty is None else float(nan_penalty)
        with self.own_threads():
            self._configure_schedule()
            self._configure_levels()
        self.action_space = self._make_action_space()
        self.observation_space = self._make_observation_space()
        self._global_iteration = 0
        self.trainer: Trainer | None = None

    def _configure_schedule(self) -> None:
        cfg = self.config
        self.alpha = int(cfg.alpha)
        self.reward_mode = cfg.reward
        self.map_every = int(cfg.map_every)
        self.map_metric = cfg.map_metric
        self.n_enhance = int(cfg.n_enhance)
        self.lambdas = tuple(float(x) for x in cfg.lambdas)
        total = int(cfg.iterations) if cfg.iterations is not None else self.substrate.train_config.iterations
        self.n_intervals = total // self.alpha
        if self.n_intervals < 2:
            raise ValueError(
                f"iterations ({total}) must be at least 2 * alpha ({2 * self.alpha}): the first interval is trained "
                "in reset() and every step trains one more"
            )
        self.total_iterations = self.n_intervals * self.alpha
        #: Steps per episode (the first interval is trained by reset()).
        self.episode_steps = self.n_intervals - 1
        self.train_set, self.val_set = self.substrate.train_set, self.substrate.val_set
        self.num_classes = self.substrate.num_classes

    def _configure_levels(self) -> None:
        self.level_names: tuple[str, ...] = self.substrate.level_names
        self.n_levels = len(self.level_names)
        if self.n_enhance > self.n_levels:
            raise ValueError(f"n_enhance must be in 0..{self.n_levels} (the detector's levels), got {self.n_enhance}")

    def _make_observation_space(self) -> spaces.Box:
        w_low, w_high = self._weight_bounds()
        n = self.n_levels
        low = np.concatenate([np.zeros(4 * n), [0.0], np.full(n, w_low)]).astype(np.float32)
        high = np.concatenate([np.full(4 * n, F32_MAX), [1.0], np.full(n, w_high)]).astype(np.float32)
        space = spaces.Box(low=low, high=high, dtype=np.float32)
        assert space.shape == (observation_size(n),)
        return space

    # ------------------------------------------------------------------ gym API
    def _reset(self, options: dict[str, Any]) -> tuple[np.ndarray, dict]:
        """New detector and trainer, first interval trained with all weights 1.

        ``options`` (all optional): ``{"model_seed": int, "train_seed": int}`` replace the seeds drawn from the
        env's ``np_random`` for the detector's initialisation and for the trainer (minibatch order); both are
        reported in the reset ``info``. They reproduce one sub-env of
        :class:`~detgym.envs.loss_weight.vector.DetLossWeightVectorEnv`, whose sub-envs share one minibatch order.
        """
        model_seed, train_seed = self._episode_seeds(options)
        if self.trainer is not None:
            self.trainer.close()
        self.trainer = self.substrate.build_trainer(model_seed, train_seed, iterations=self.total_iterations)
        # A diverging first interval cannot be reported through reset(); NonFiniteLossError propagates.
        losses = self._train_interval(self.initial_weights())
        obs, info = self._begin_episode(losses)
        info.update(model_seed=model_seed, train_seed=train_seed)
        return obs, info

    def _step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        weights = self._action_to_weights(action)
        try:
            losses = self._train_interval(weights)
        except NonFiniteLossError as err:
            return self._diverged(action, weights, err)
        return self._end_interval(action, weights, losses)

    # ------------------------------------------------------------ episode phases (shared with the vector env)
    def initial_weights(self) -> np.ndarray:
        """The weights of the first interval (trained by ``reset``): all 1, as the paper initialises them."""
        return np.ones(self.n_levels, dtype=np.float64)

    def _episode_seeds(self, options: dict[str, Any]) -> tuple[int, int]:
        """(model seed, train seed): drawn from ``np_random`` (always both, so the stream does not depend on the
        options), then replaced by ``options["model_seed"]`` / ``options["train_seed"]`` where given."""
        drawn = self._draw_seeds(2)
        model_seed, train_seed = (
            drawn_seed if options.get(name) is None else check_seed(f"options['{name}']", options[name])
            for name, drawn_seed in zip(("model_seed", "train_seed"), drawn)
        )
        return model_seed, train_seed

    def _seed_episode(self, seed: int | None, options: dict[str, Any] | None) -> tuple[int, int]:
        """What ``reset`` does before training, for the vector env that trains its sub-envs itself: seed
        ``np_random`` (gymnasium's ``reset(seed=...)``), check the options, count the episode, draw the seeds."""
        gym.Env.reset(self, seed=seed)
        options = self._check_reset_options(options)
        self._episode += 1
        return self._episode_seeds(options)

    def _begin_episode(self, losses: np.ndarray) -> tuple[np.ndarray, dict]:
        """The state, observation and info after the first interval (``losses``: its ``[alpha, n]`` raw losses)."""
        self._steps = 0
        self._last_map = 0.0
        self._done = False
        self._global_iteration += self.alpha
        sums, var = interval_stats(losses)
        self._t = 1
        self._sums_prev, self._var_prev = sums.copy(), np.ones(self.n_levels)  # L_{i,0} := L_{i,1}, Var_{i,0} = 1
        self._sums, self._var = sums, var
        self._rates = decrease_rate(self._var_prev, self._var)
        self._weights = self.initial_weights()
        self._obs = self._observation()
        info = self._info(losses, None, 0.0)
        self._log(info, reward=None)
        return self._obs.copy(), info

    def _end_interval(
        self, action: Any, weights: np.ndarray, losses: np.ndarray
    ) -> tuple[np.ndarray, float, bool, bool, dict]:
        """Everything a step does after training its interval (``losses``: ``[alpha, n]``) with ``weights``."""
        self._global_iteration += self.alpha
        sums, var = interval_stats(losses)
        self._sums_prev, self._var_prev = self._sums, self._var
        self._sums, self._var = sums, var
        self._rates = decrease_rate(self._var_prev, self._var)
        self._weights = weights
        self._t += 1
        self._steps += 1
        truncated = self._t >= self.n_intervals
        loss_reward = interval_reward(self._sums_prev, self._sums)

        final_metrics = None
        if truncated:
            final_metrics = {k: float(v) for k, v in self.trainer.evaluate().items()}
        reward = loss_reward
        current_map = None
        if self.reward_mode == "map":
            reward = 0.0
            if truncated or self._steps % self.map_every == 0:
                stats = final_metrics if final_metrics is not None else self.trainer.evaluate()
                current_map = float(stats[self.map_metric])
                reward = current_map - self._last_map
                self._last_map = current_map

        self._obs = self._observation()
        info = self._info(losses, self._action_info(action, weights), loss_reward)
        if current_map is not None:
            info["map"] = current_map
        if truncated:
            info["final_metrics"] = final_metrics
            self._done = True
        self._log(info, reward=reward)
        return self._obs.copy(), float(reward), False, bool(truncated), info

    def render(self) -> str | None:
        """``render_mode="ansi"``: one line with the interval, the weights and the per-level interval losses."""
        if self.render_mode != "ansi" or self.trainer is None:
            return None
        w = " ".join(f"{name}={x:.2f}" for name, x in zip(self.level_names, self._weights))
        loss = " ".join(f"{x:.3f}" for x in self._sums)
        return f"t={self._t}/{self.n_intervals} it={self.trainer.iteration} w[{w}] L[{loss}]"

    def close(self) -> None:
        if self.trainer is not None:
            self.trainer.close()
        super().close()

    # ------------------------------------------------------------------ forking
    _EPISODE_ARRAYS = ("_sums", "_sums_prev", "_var", "_var_prev", "_rates", "_weights")
    _EPISODE_NUMBERS = {"_t": int, "_steps": int, "_last_map": float, "_episode": int, "_global_iteration": int}

    def state_dict(self) -> dict[str, Any]:
        """The running episode's whole state: the trainer's (detector, optimizer, schedule, data order, random
        state) and the env's interval statistics. :meth:`load_state_dict` continues from it exactly as the episode
        would have gone on (CompilerGym's ``fork``); what :mod:`detgym.envs.loss_weight.tree` builds trees with.
        Plain data (tensors and numbers), so :func:`detgym.train.checkpoint.atomic_torch_save` can write it."""
        self._check_running()
        import torch

        return {
            "trainer": self.trainer.state_dict(),
            **{name: torch.from_numpy(np.asarray(getattr(self, name), dtype=np.float64)).clone()
               for name in self._EPISODE_ARRAYS},
            **{name: getattr(self, name) for name in self._EPISODE_NUMBERS},
        }

    def load_state_dict(self, state: dict[str, Any]) -> np.ndarray:
        """Continue the episode saved by :meth:`state_dict` (of an env with the same configuration); returns the
        observation at that point."""
        if self.trainer is None:
            self.trainer = self.substrate.build_trainer(0, 0, iterations=self.total_iterations)
        self.trainer.load_state_dict(state["trainer"])
        for name in self._EPISODE_ARRAYS:
            setattr(self, name, state[name].numpy().astype(np.float64))
        for name, kind in self._EPISODE_NUMBERS.items():
            setattr(self, name, kind(state[name]))
        self._done = False
        self._obs = self._observation()
        return self._obs.copy()

    # ------------------------------------------------------------------ actions
    def _make_action_space(self) -> spaces.Space:
        return spaces.Discrete(N_ACTIONS)

    def _weight_bounds(self) -> tuple[float, float]:
        top = max(self.lambdas[: self.n_enhance]) if self.n_enhance > 0 else 0.0
        return 1.0, 1.0 + top

    def _action_to_weights(self, action: Any) -> np.ndarray:
        # scheme_weights validates the action and names the accepted values
        return scheme_weights(action, self._sums, self._rates, self.n_enhance, self.lambdas)

    def _action_info(self, action: Any, weights: np.ndarray) -> Any:
        return int(np.asarray(action).reshape(()))

    # ---------------------------------------------------------------- internals
    def _train_interval(self, weights: np.ndarray) -> np.ndarray:
        w = weights.astype(np.float32)
        losses = np.empty((self.alpha, self.n_levels), dtype=np.float64)
        step = self.trainer.step
        for m in range(self.alpha):
            losses[m] = step(w).level_losses
        return losses

    def _observation(self) -> np.ndarray:
        # float rounding can put a loss a hair below 0 (e.g. 1 - GIoU of a perfect box); the space starts at 0
        progress = self._t / self.n_intervals
        obs = build_observation(
            np.maximum(self._sums, 0.0), np.maximum(self._sums_prev, 0.0), self._var, self._var_prev, progress,
            self._weights,
        )
        return np.minimum(obs, self.observation_space.high)  # a finite loss can still overflow float32

    def _info(self, losses: np.ndarray, action: Any, loss_reward: float) -> dict[str, Any]:
        return {
            "interval_losses": self._sums.copy(),
            "iteration_losses": losses,
            "variances": self._var.copy(),
            "rates": self._rates.copy(),
            "weights": self._weights.copy(),
            "action": action,
            "iteration": int(self.trainer.iteration),
            "interval": int(self._t),
            "lr": self.trainer.lr,
            "reward_loss": float(loss_reward),
            "level_names": self.level_names,
        }

    def _diverged(self, action: Any, weights: np.ndarray, err: NonFiniteLossError) -> tuple:
        steps_left = self.n_intervals - self._t
        if self.nan_penalty is not None:
            penalty = self.nan_penalty
        else:
            penalty = -float(steps_left) if self.reward_mode == "loss" else -1.0
        self._done = True
        # the same keys as every other step; the statistics of the interval that diverged do not exist (NaN)
        nan = np.full(self.n_levels, np.nan)
        info = {
            "interval_losses": nan.copy(),
            "iteration_losses": np.full((self.alpha, self.n_levels), np.nan),
            "variances": nan.copy(),
            "rates": nan.copy(),
            "weights": np.asarray(weights, dtype=np.float64).copy(),
            "action": self._action_info(action, weights),
            "iteration": int(err.iteration),
            "interval": int(self._t + 1),
            "lr": self.trainer.lr,
            "reward_loss": float("nan"),
            "level_names": self.level_names,
            "diverged": True,
            "error": str(err),
            "final_metrics": {k: 0.0 for k in STAT_NAMES},
        }
        self.logger.scalar("loss_weight/diverged", 1.0, self._global_iteration)
        return self._obs.copy(), float(penalty), True, False, info

    def _log(self, info: dict[str, Any], reward: float | None) -> None:
        log, step = self.logger, self._global_iteration
        if not log.enabled:
            return
        for i, name in enumerate(self.level_names):
            log.scalar(f"loss_weight/weight/{name}", info["weights"][i], step)
            log.scalar(f"loss_weight/interval_loss/{name}", info["interval_losses"][i], step)
            log.scalar(f"loss_weight/variance/{name}", info["variances"][i], step)
        if info["action"] is not None and np.ndim(info["action"]) == 0:
            log.scalar("loss_weight/action", info["action"], step)
        if reward is not None:
            log.scalar("loss_weight/reward", reward, step)
        log.scalar("loss_weight/episode", self._episode, step)
        if "map" in info:
            log.scalar(f"loss_weight/val_{self.map_metric}", info["map"], step)
        for k, v in (info.get("final_metrics") or {}).items():
            log.scalar(f"loss_weight/final/{k}", v, step)


class DetLossWeightContinuousEnv(DetLossWeightEnv):
    """DetLossWeightContinuous-v0: as :class:`DetLossWeightEnv`, but the action is the weight vector itself.

    ## Action Space

    ``Box(weight_low, weight_high, (n_levels,), float32)`` (default bounds ``(0, 3)``; the discrete schemes use
    weights in ``[1, 2.5]``): ``w_i`` for the next interval. An action of the wrong shape, with NaN / inf, or
    outside the bounds raises ValueError. SB3 prefers a ``[-1, 1]`` box: wrap with
    ``gymnasium.wrappers.RescaleAction(env, -1.0, 1.0)`` (what :mod:`detgym.agents.sb3` does).

    The observation's weight entries are bounded by ``weight_bounds``; ``info["action"]`` is the weight vector.
    Every other part of the spec (observation, rewards, episode) is that of ``DetLossWeight-v0``;
    ``n_enhance`` and ``lambdas`` are unused.

    Args:
        weight_bounds: ``(low, high)`` with ``0 <= low < high``.
        **kwargs: as :class:`DetLossWeightEnv`.
    """

    reset_options = ("model_seed", "train_seed")

    def __init__(self, preset: str = "default", *, weight_bounds: tuple[float, float] = (0.0, 3.0),
                 **kwargs: Any) -> None:
        try:
            low, high = (float(x) for x in weight_bounds)
        except (TypeError, ValueError):
            raise ValueError(f"weight_bounds must be a pair (low, high), got {weight_bounds!r}") from None
        if not (math.isfinite(low) and math.isfinite(high) and 0.0 <= low < high):
            raise ValueError(f"weight_bounds must be finite with 0 <= low < high, got {weight_bounds!r}")
        self.weight_bounds = (low, high)
        super().__init__(preset, **kwargs)

    def _make_action_space(self) -> spaces.Space:
        low, high = self.weight_bounds
        return spaces.Box(low=low, high=high, shape=(self.n_levels,), dtype=np.float32)

    def _weight_bounds(self) -> tuple[float, float]:
        return self.weight_bounds

    def _action_to_weights(self, action: Any) -> np.ndarray:
        try:
            w = np.asarray(action, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(
                f"action must be {self.n_levels} level weights (shape ({self.n_levels},)), got {action!r}"
            ) from None
        if w.shape != (self.n_levels,):
            raise ValueError(
                f"action must be {self.n_levels} level weights {self.level_names}, shape ({self.n_levels},); "
                f"got shape {w.shape}"
            )
        if not np.all(np.isfinite(w)):
            raise ValueError(f"action (level weights) must be finite, got {w.tolist()}")
        low, high = self.weight_bounds
        tol = 1e-6 * max(1.0, high)
        if np.any(w < low - tol) or np.any(w > high + tol):
            raise ValueError(f"action (level weights) must lie in [{low}, {high}] (weight_bounds), got {w.tolist()}")
        return np.clip(w, low, high)

    def _action_info(self, action: Any, weights: np.ndarray) -> Any:
        return weights.copy()
