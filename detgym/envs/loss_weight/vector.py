"""The native vector env of DetLossWeight-v0: N detectors trained in one process, in lockstep, on one minibatch
sequence.

``gymnasium.make_vec("DetLossWeight-v0", num_envs=N, vectorization_mode="vector_entry_point")`` builds it (the
registration's ``vector_entry_point``; ``DetLossWeightContinuous-v0`` likewise). Every sub-env is a
:class:`~detgym.envs.loss_weight.env.DetLossWeightEnv` that keeps its own state, seeds, observation, reward and
info; only the training is shared, by a :class:`detgym.train.VectorTrainer`: one minibatch per iteration for all
sub-envs (common random numbers: the sub-envs' agents are compared on the same data), the transform, anchors and
ground-truth matching once per iteration (dense detectors), each detector its own initialisation, weights and
optimizer. On the CPU a sub-env computes bit for bit what a single env computes with the same model seed and
minibatch order (``reset(options={"model_seed": ..., "train_seed": ...})`` of the single env, the seeds being in
the reset ``info``).

Seeding: ``reset(seed=s)`` seeds sub-env ``i`` with ``s + i`` (``seed=[s_0, ..., s_{N-1}]`` gives each its own;
sub-envs with equal seeds get the same initialisation), as gymnasium's ``SyncVectorEnv`` does. Each sub-env draws
its model seed as a single env with that seed would; the minibatch sequence is the one sub-env 0 draws, so sub-env
0 is exactly ``DetLossWeightEnv`` reset with seed ``s_0``.

Autoreset (gymnasium's ``AutoresetMode.NEXT_STEP``): a sub-env whose episode ended is reset by the next ``step``,
which ignores its action and returns its first observation with reward 0. All sub-envs of a preset end together,
so usually all reset together: new detectors and a new minibatch sequence. A sub-env that ended early (a diverged
detector) restarts alone and joins the running minibatch sequence (``info["joined_at"]`` > 0, the batches it
skipped): such an episode is no longer a single env's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from detgym.train import NonFiniteLossError
from detgym.train.trainer import resolve_device
from detgym.train.vector import VectorTrainer, available_memory, member_memory_bytes, resolve_batching

from .env import DetLossWeightContinuousEnv, DetLossWeightEnv, check_seed

__all__ = ["DetLossWeightContinuousVectorEnv", "DetLossWeightVectorEnv", "MEMORY_FRACTION"]

#: A vector env may plan to use at most this fraction of the device's free memory.
MEMORY_FRACTION = 0.8


class DetLossWeightVectorEnv(VectorEnv):
    """``num_envs`` DetLossWeight sub-envs trained in lockstep (see the module docstring).

    Spaces are the single env's batched (``Discrete(4)`` actions become ``MultiDiscrete([4] * N)``, observations
    ``Box((N, 5 n + 1))``). ``info`` holds the single env's keys as arrays over the sub-envs with gymnasium's
    ``_key`` masks (``final_metrics`` is a dict of such arrays, present for the sub-envs whose episode ended);
    reset infos add ``model_seed``, ``train_seed`` (the shared sequence's) and ``joined_at``.

    Args:
        num_envs: number of sub-envs (detectors trained together), >= 1.
        preset: one preset name for every sub-env (they train in lockstep on one recipe and schedule).
        batching: how the members train (:class:`detgym.train.VectorTrainer`): ``"loop"`` (exact: each sub-env
            is a single env bit for bit; the CPU's choice), ``"vmap"`` (one forward / backward for all, float
            tolerance; dense detectors; the GPU's choice) or ``"auto"``.
        **kwargs: :class:`~detgym.envs.loss_weight.env.DetLossWeightEnv` arguments (preset fields, ``train_set``,
            ``val_set``, ``nan_penalty``, ``log_dir``: sub-env ``i`` logs to ``log_dir/env{i}``).

    Raises:
        ValueError: ``num_envs`` < 1, or more sub-envs than fit in the device's free memory (the message gives the
            estimate), or ``preset`` is not one name.
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}
    single_env_class: type[DetLossWeightEnv] = DetLossWeightEnv

    def __init__(self, num_envs: int = 1, preset: str = "default", *, batching: str = "auto", **kwargs: Any) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}")
        if not isinstance(preset, str):
            raise ValueError(
                "preset must be one preset name for all sub-envs (they train in lockstep on one recipe), "
                f"got {preset!r}"
            )
        kwargs.pop("max_episode_steps", None)  # gymnasium passes the spec's; every episode ends with its schedule
        kwargs.pop("render_mode", None)
        log_dir = kwargs.pop("log_dir", None)
        self.num_envs = int(num_envs)
        first = self.single_env_class(preset, log_dir=_sub_dir(log_dir, 0), **kwargs)
        device = resolve_device(first.substrate.train_config.device)
        #: ``"loop"`` or ``"vmap"`` (see :class:`detgym.train.VectorTrainer`).
        self.batching = resolve_batching(batching, device, first.substrate.recipe.family != "fasterrcnn")
        #: Bytes one sub-env's detector needs (parameters, gradients, optimizer state); see :meth:`_check_memory`.
        self.memory_estimate = self._check_memory(first)
        kwargs.update(train_set=first.train_set, val_set=first.val_set)  # one copy of the data for every sub-env
        self.envs = [first] + [
            self.single_env_class(preset, log_dir=_sub_dir(log_dir, i), **kwargs) for i in range(1, self.num_envs)
        ]
        self.preset = preset
        self.config = first.config
        self.single_observation_space = first.observation_space
        self.single_action_space = first.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.n_levels, self.alpha = first.n_levels, first.alpha
        self.trainer: VectorTrainer | None = None
        self._autoreset = np.zeros(self.num_envs, dtype=bool)
        self._obs: np.ndarray | None = None

    # ------------------------------------------------------------------ gym API
    def reset(
        self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset every sub-env: new detectors, a new minibatch sequence, the first interval trained.

        ``options``: ``{"model_seed": [N ints], "train_seed": int}`` (both optional) replace the drawn seeds.
        """
        with self.envs[0].own_threads():
            return self._reset(seed, options)

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        with self.envs[0].own_threads():
            return self._step(actions)

    def _reset(self, seed: Any, options: dict[str, Any] | None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=None if isinstance(seed, (list, tuple)) else seed)
        seeds = self._sub_seeds(seed)
        model_opts, train_seed = self._parse_options(options)
        drawn = [env._seed_episode(s, {"model_seed": m}) for env, s, m in zip(self.envs, seeds, model_opts)]
        train_seed = drawn[0][1] if train_seed is None else train_seed
        models = [self.envs[0].substrate.build_model(model_seed) for model_seed, _ in drawn]
        config = self.envs[0].substrate.train_config.replace(seed=train_seed, iterations=self.envs[0].total_iterations)
        if self.trainer is None:
            self.trainer = VectorTrainer(models, self.envs[0].train_set, self.envs[0].val_set, config, self.batching)
        else:
            self.trainer.restart(models, train_seed)
        for env, member in zip(self.envs, self.trainer.members):
            env.trainer = member
        starting = np.ones(self.num_envs, dtype=bool)
        losses, errors = self._train_interval(np.ones((self.num_envs, self.n_levels)), starting)
        self._raise_first_interval(errors)
        infos: dict[str, Any] = {}
        obs = np.empty(self.observation_space.shape, dtype=np.float32)
        for i, env in enumerate(self.envs):
            obs[i], info = env._begin_episode(losses[i])
            info.update(model_seed=drawn[i][0], train_seed=int(train_seed), joined_at=0)
            infos = self._add_info(infos, _present(info), i)
        self._autoreset[:] = False
        self._obs = obs
        return obs.copy(), infos

    def _step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if self._obs is None or self.trainer is None:
            raise ValueError("call reset() before step()")
        if self._autoreset.all():
            obs, infos = self._reset(None, None)
            zeros = np.zeros(self.num_envs, dtype=bool)
            return obs, np.zeros(self.num_envs), zeros, zeros.copy(), infos
        actions = self._check_actions(actions)
        starting = self._autoreset.copy()
        weights = np.ones((self.num_envs, self.n_levels))
        for i in np.flatnonzero(~starting):
            self.envs[i]._check_running()
            try:
                weights[i] = self.envs[i]._action_to_weights(actions[i])
            except ValueError as err:
                raise ValueError(f"actions[{i}]: {err}") from None
        joined_at = self.trainer.order.drawn
        model_seeds = {}
        for i in np.flatnonzero(starting):
            model_seeds[i], _ = self.envs[i]._seed_episode(None, None)  # the train seed is unused: the sequence runs on
            self.envs[i].trainer = self.trainer.replace_member(i, self.envs[i].substrate.build_model(model_seeds[i]))
        losses, errors = self._train_interval(weights, np.ones(self.num_envs, dtype=bool))
        self._raise_first_interval([e if s else None for e, s in zip(errors, starting)])

        obs = np.empty(self.observation_space.shape, dtype=np.float32)
        rewards = np.zeros(self.num_envs)
        terminated = np.zeros(self.num_envs, dtype=bool)
        truncated = np.zeros(self.num_envs, dtype=bool)
        infos: dict[str, Any] = {}
        for i, env in enumerate(self.envs):
            if starting[i]:
                obs[i], info = env._begin_episode(losses[i])
                info.update(model_seed=model_seeds[i], train_seed=int(self.trainer.config.seed), joined_at=joined_at)
            elif errors[i] is not None:
                obs[i], rewards[i], terminated[i], truncated[i], info = env._diverged(actions[i], weights[i], errors[i])
            else:
                obs[i], rewards[i], terminated[i], truncated[i], info = env._end_interval(
                    actions[i], weights[i], losses[i]
                )
            infos = self._add_info(infos, _present(info), i)
        self._autoreset = terminated | truncated
        self._obs = obs
        return obs.copy(), rewards, terminated, truncated, infos

    def close_extras(self, **kwargs: Any) -> None:
        for env in self.envs:
            env.close()
        if self.trainer is not None:
            self.trainer.close()

    # ------------------------------------------------------------------ internals
    def _train_interval(self, weights: np.ndarray, active: np.ndarray) -> tuple[np.ndarray, list]:
        """``alpha`` lockstep iterations; a member that diverges stops there (as a single env's interval does)."""
        losses = np.full((self.num_envs, self.alpha, self.n_levels), np.nan)
        errors: list[NonFiniteLossError | None] = [None] * self.num_envs
        on = active.copy()
        w = weights.astype(np.float32)
        for m in range(self.alpha):
            step = self.trainer.step(w, on)
            for i in np.flatnonzero(on):
                if step.errors[i] is not None:
                    errors[i], on[i] = step.errors[i], False
                else:
                    losses[i, m] = step.results[i].level_losses
        return losses, errors

    def _raise_first_interval(self, errors: list) -> None:
        # a single env's reset() cannot report a diverging first interval either: it raises
        for i, err in enumerate(errors):
            if err is not None:
                raise NonFiniteLossError(err.iteration, err.parts) from ValueError(f"sub-env {i}'s first interval")

    def _check_actions(self, actions: Any) -> np.ndarray:
        shape = self.action_space.shape
        try:
            arr = np.asarray(actions)
        except (TypeError, ValueError):
            arr = None
        if arr is None or arr.shape != shape:
            got = "not an array" if arr is None else f"shape {arr.shape}"
            raise ValueError(f"actions must have shape {shape} (one action per sub-env), got {got}")
        return arr

    def _sub_seeds(self, seed: Any) -> list[int | None]:
        if seed is None:
            return [None] * self.num_envs
        if isinstance(seed, (list, tuple)):
            if len(seed) != self.num_envs:
                raise ValueError(f"seed must be an int or a list of {self.num_envs} seeds, got {len(seed)} seeds")
            return list(seed)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ValueError(f"seed must be None, an int or a list of {self.num_envs} ints, got {seed!r}")
        return [int(seed) + i for i in range(self.num_envs)]

    def _parse_options(self, options: dict[str, Any] | None) -> tuple[list[int | None], int | None]:
        if options is None:
            return [None] * self.num_envs, None
        if not isinstance(options, dict) or set(options) - {"model_seed", "train_seed"}:
            raise ValueError(
                f"options must be None or a dict with the keys 'model_seed' / 'train_seed', got {options!r}"
            )
        model_seeds = options.get("model_seed")
        if model_seeds is None:
            model_seeds = [None] * self.num_envs
        elif not isinstance(model_seeds, (list, tuple, np.ndarray)) or len(model_seeds) != self.num_envs:
            raise ValueError(f"options['model_seed'] must be a list of {self.num_envs} seeds, got {model_seeds!r}")
        train_seed = options.get("train_seed")
        if train_seed is not None:
            train_seed = check_seed("options['train_seed']", train_seed)
        return list(model_seeds), train_seed

    def _check_memory(self, first: DetLossWeightEnv) -> int:
        """Estimate the memory of ``num_envs`` sub-envs and refuse what does not fit (see ``MEMORY_FRACTION``).

        Every sub-env keeps its detector's parameters, gradients and optimizer state; activations (measured on a
        probe detector) are needed for one member at a time in the loop, for all members at once under vmap."""
        device = resolve_device(first.substrate.train_config.device)
        model = first.substrate.build_model(0).to(device)
        count = min(first.substrate.train_config.batch_size, len(first.train_set))
        images, targets = first.train_set.batch(range(count), device=device)
        optimizer = first.substrate.train_config.optimizer
        activations = member_memory_bytes(model, images, targets, optimizer) - _static_bytes(model, optimizer)
        per_env = _static_bytes(model, optimizer)
        if self.batching == "vmap":  # all members' activations at once
            per_env, activations = per_env + activations, 0
        need = self.num_envs * per_env + activations
        free = available_memory(device)
        if free is not None and need > MEMORY_FRACTION * free:
            raise ValueError(
                f"num_envs={self.num_envs} needs about {need / 2**30:.2f} GiB on {device} ({per_env / 2**20:.1f} MiB "
                f"per sub-env for parameters, gradients and optimizer state, plus {activations / 2**20:.0f} MiB of "
                f"activations) but only {free / 2**30:.2f} GiB are free; use at most "
                f"{max(int((MEMORY_FRACTION * free - activations) // per_env), 0)} sub-envs"
            )
        return per_env


class DetLossWeightContinuousVectorEnv(DetLossWeightVectorEnv):
    """The native vector env of ``DetLossWeightContinuous-v0``: actions ``[N, n_levels]`` weights."""

    single_env_class = DetLossWeightContinuousEnv


def _static_bytes(model: torch.nn.Module, optimizer: str) -> int:
    params = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return params * (4 if optimizer == "adamw" else 3)  # parameters, gradients, optimizer moments


def _sub_dir(log_dir: Any, index: int) -> Any:
    import os

    return None if log_dir is None else os.path.join(os.fspath(log_dir), f"env{index}")


def _present(info: dict[str, Any]) -> dict[str, Any]:
    """The info without its ``None`` entries (e.g. the reset's ``action``): the vector info's mask says absent."""
    return {k: v for k, v in info.items() if v is not None}
