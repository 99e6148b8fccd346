"""MGRAL's data-sampling agent (papers 002/003, section III-C to III-E): an LSTM over the candidates, REINFORCE on mAP.

Network (eq. 1-2): the candidates of one cycle are read in order by one LSTM cell shared by all images,
``h_i, c_i = LSTM([Φ(I_i), A_{i-1}], h_{i-1}, c_{i-1})``, ``A_i = Ψ(h_i)``. Here ``Φ(I_i)`` is the candidate's
observation row (the ``embed()`` vector and the per-image columns standardised over the cycle's candidates, so the
ranking does not depend on the feature scale; the state columns as they are), ``A_{i-1}`` the previous unit's
selection score (a sigmoid of its logit; 0 before the first image), the hidden size equals the input size (the
paper: 257 = 256 + 1), and ``Ψ`` is one linear layer shared across images (the paper's per-image decoders
``Ψ_i`` share parameters) giving each candidate a logit.

Policy: a batch of ``b`` distinct images is drawn from the logits by sampling without replacement (Plackett-Luce:
each next image with probability softmax over the images not drawn yet), implemented with the Gumbel-top-b
trick; ``log π`` is the sum of the successive log-softmax terms. The action for ``DetSampleSelect-v0`` is the
candidates' ranks with the drawn images first; ``deterministic=True`` ranks by the logits.

Learning (III-E): after each cycle, with the (estimated) ``mAP_i`` the env reports in ``info["map"]``,
``loss = -(mAP_i - mAP_ref) log π(batch)`` (eq. 4) and one Adam step (lr 3.5e-4, IV-A). The baseline is a
moving average of ``mAP_i``, one per cycle index since mAP levels grow with the labeled set (the paper trains the
agent cycle by cycle). The paper's eq. 3 reads ``mAP_ref = λ mAP_ref + (1 - λ)(mAP_i - mAP_ref)``, which would
drive the reference towards a fraction of the *advantage*; detgym uses the exponential moving average
``mAP_ref = λ mAP_ref + (1 - λ) mAP_i`` (decay λ = 0.5, IV-A), a baseline that tracks mAP. The advantage is taken
against the reference *before* it absorbs ``mAP_i`` (an unbiased baseline; after the update, with λ = 0.5, it
would only halve the advantage), and the first visit of a cycle index only initialises its reference.

:meth:`MGRALAgent.learn` trains on the env given at construction: the paper trains against its fast look-up table,
i.e. an env with ``reward_mode="lookup"`` (``detgym build-table`` first).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from detgym.agents.active_learning import fits_sample_select, rank_scores
from detgym.agents.base import Agent
from detgym.envs.sample_select.observation import COLUMNS, column, embed_dim

__all__ = ["MGRALAgent", "MGRALPolicy", "ema_baseline", "plackett_luce_log_prob", "standardise_candidates"]

#: Per-candidate columns standardised over the cycle's candidates (the rest are flags and state, kept as they are).
_STANDARDISED = ("n_detections", "mean_score", "max_score", "mean_entropy", "sum_entropy", "nearest_distance")


def ema_baseline(reference: float | None, value: float, decay: float = 0.5) -> float:
    """``λ mAP_ref + (1 - λ) mAP_i`` (the moving average of eq. 3 of paper 002, read as an EMA); the first value
    initialises it."""
    return float(value) if reference is None else decay * float(reference) + (1.0 - decay) * float(value)


def standardise_candidates(obs: np.ndarray) -> np.ndarray:
    """The LSTM input of one observation ``[M, D + N_EXTRA]``: embedding and per-image statistics z-scored over the
    valid rows (padding rows 0), flags and state columns unchanged."""
    obs = np.asarray(obs, dtype=np.float64)
    d = embed_dim(obs)
    valid = column(obs, "valid") > 0
    cols = list(range(d)) + [d + COLUMNS.index(c) for c in _STANDARDISED]
    x = obs.copy()
    part = obs[valid][:, cols]
    if part.shape[0]:
        mean, std = part.mean(axis=0), part.std(axis=0)
        x[:, cols] = (obs[:, cols] - mean) / np.where(std > 1e-8, std, 1.0)
    x[~valid] = 0.0
    return x.astype(np.float32)


def plackett_luce_log_prob(logits: torch.Tensor, order: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """``log P(order)`` of drawing the rows ``order`` one after another without replacement, each with probability
    softmax(logits) over the allowed rows not drawn yet."""
    remaining = allowed.clone()
    rows = torch.arange(logits.shape[0])
    total = logits.new_zeros(())
    for j in order.tolist():
        total = total + logits[j] - torch.logsumexp(logits.masked_fill(~remaining, float("-inf")), dim=0)
        remaining = remaining & (rows != j)  # a new tensor: autograd keeps the mask it saved
    return total


class MGRALPolicy(nn.Module):
    """The LSTM of eq. 1-2: one shared cell over the candidates, input ``[row, A_{i-1}]``, hidden = input size."""

    def __init__(self, row_size: int) -> None:
        super().__init__()
        self.input_size = int(row_size) + 1
        self.cell = nn.LSTMCell(self.input_size, self.input_size)
        self.decoder = nn.Linear(self.input_size, 1)  # Ψ, shared across images

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        """Logits ``[M]`` of one cycle's candidates ``rows`` ``[M, row_size]``, read in row order."""
        h = rows.new_zeros((1, self.input_size))
        c = rows.new_zeros((1, self.input_size))
        previous = rows.new_zeros((1, 1))
        logits = []
        for i in range(rows.shape[0]):
            h, c = self.cell(torch.cat([rows[i : i + 1], previous], dim=1), (h, c))
            logit = self.decoder(h)
            logits.append(logit)
            previous = torch.sigmoid(logit)  # A_{i-1}: the previous unit's selection score
        return torch.cat(logits).reshape(-1)


class MGRALAgent(Agent):
    """MGRAL's sampling agent for ``DetSampleSelect-v0`` (see the module docstring).

    Args:
        env: the env :meth:`learn` trains on (a DetSampleSelect env, usually ``reward_mode="lookup"``); its spaces
            also size the network. ``None`` needs ``observation_space`` and ``action_space``.
        seed: seed of the network initialisation, the sampling and the training episodes' reset seeds.
        lr: Adam learning rate (paper: 3.5e-4).
        baseline_decay: λ of the moving-average baseline (paper: 0.5).
    """

    eval_deterministic = True

    def __init__(
        self,
        env: gym.Env | None = None,
        seed: int | None = None,
        lr: float = 3.5e-4,
        baseline_decay: float = 0.5,
        observation_space: spaces.Space | None = None,
        action_space: spaces.Space | None = None,
    ) -> None:
        observation_space = observation_space if env is None else env.observation_space
        action_space = action_space if env is None else env.action_space
        if not isinstance(action_space, spaces.Box) or not isinstance(observation_space, spaces.Box):
            raise ValueError("MGRALAgent acts in DetSampleSelect-v0 (Box scores); give env= or both spaces")
        if not 0.0 <= float(baseline_decay) < 1.0:
            raise ValueError(f"baseline_decay must be in [0, 1), got {baseline_decay!r}")
        if not float(lr) > 0:
            raise ValueError(f"lr must be > 0, got {lr!r}")
        super().__init__(observation_space, action_space)
        self.env = env
        self.rng = np.random.default_rng(seed)
        self.generator = torch.Generator().manual_seed(int(self.rng.integers(2**31 - 1)))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(self.rng.integers(2**31 - 1)))
            self.policy = MGRALPolicy(int(observation_space.shape[-1]))
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=float(lr))
        self.baseline_decay = float(baseline_decay)
        #: mAP_ref per cycle index (eq. 3, as an EMA).
        self.baselines: dict[int, float] = {}
        #: One dict per training cycle: cycle, map, baseline before the update, advantage, loss, reward_source.
        self.history: list[dict[str, Any]] = []

    @classmethod
    def fits(cls, env: gym.Env) -> bool:
        return fits_sample_select(env) and isinstance(env.action_space, spaces.Box)

    # ------------------------------------------------------------------ acting
    def _logits(self, obs: np.ndarray) -> torch.Tensor:
        return self.policy(torch.as_tensor(standardise_candidates(obs)))

    def _draw(self, obs: np.ndarray, deterministic: bool) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
        """``(action, drawn rows in order, logits)`` for one observation."""
        valid = column(obs, "valid") > 0
        b = int(round(float(column(obs, "picks_left")[0]) * obs.shape[0]))
        logits = self._logits(obs)
        keys = logits.detach().double()
        if not deterministic:  # Gumbel-top-b = Plackett-Luce sampling without replacement
            u = torch.rand(keys.shape, generator=self.generator, dtype=torch.float64).clamp_min(1e-12)
            keys = keys - torch.log(-torch.log(u))
        keys = torch.where(torch.as_tensor(valid), keys, torch.full_like(keys, -np.inf))
        order = torch.argsort(keys, descending=True, stable=True)[: min(b, int(valid.sum()))]
        return rank_scores(keys.numpy(), valid), order, logits

    def _act(self, batch: Any, deterministic: bool, action_masks: np.ndarray | None) -> np.ndarray:
        with torch.no_grad():
            return np.stack([self._draw(obs, deterministic)[0] for obs in np.asarray(batch)])

    # ------------------------------------------------------------------ learning
    def learn(self, total_timesteps: int, progress_bar: bool = False) -> "MGRALAgent":
        """REINFORCE for ``total_timesteps`` env steps (cycles) on the env given at construction."""
        if self.env is None:
            raise ValueError("MGRALAgent.learn needs the env it trains on: MGRALAgent(env=...)")
        if int(total_timesteps) < 1:
            raise ValueError(f"total_timesteps must be >= 1, got {total_timesteps!r}")
        from tqdm.auto import tqdm

        obs, _ = self.env.reset(seed=int(self.rng.integers(2**31 - 1)))
        for _ in tqdm(range(int(total_timesteps)), desc="mgral", disable=not progress_bar):
            action, order, logits = self._draw(obs, deterministic=False)
            valid = torch.as_tensor(column(obs, "valid") > 0)
            obs, _, terminated, truncated, info = self.env.step(action)
            self._update(logits, order, valid, info)
            if terminated or truncated:
                obs, _ = self.env.reset(seed=int(self.rng.integers(2**31 - 1)))
        return self

    def _update(self, logits: torch.Tensor, order: torch.Tensor, valid: torch.Tensor, info: dict[str, Any]) -> None:
        cycle, value = int(info["cycle"]), float(info["map"])
        reference = self.baselines.get(cycle)
        advantage = 0.0 if reference is None else value - reference  # eq. 4's mAP_i - mAP_ref
        self.baselines[cycle] = ema_baseline(reference, value, self.baseline_decay)  # eq. 3 (as an EMA)
        loss = -advantage * plackett_luce_log_prob(logits, order, valid)
        if advantage != 0.0:
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        self.history.append({"cycle": cycle, "map": value, "baseline": reference, "advantage": advantage,
                             "loss": float(loss.detach()), "reward_source": info.get("reward_source")})

    def __repr__(self) -> str:
        return f"MGRALAgent(input={self.policy.input_size})"
