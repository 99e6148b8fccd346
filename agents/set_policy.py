"""A permutation-equivariant actor-critic for observations that are sets of candidates (the DetBoxSelect envs).

A DetBoxSelect observation is a padded set of candidate boxes, one row of features each, and its action is one
decision per candidate (keep it, or a new score) or the choice of one candidate (or "stop"). A flat MLP over the
``n_max x F`` observation learns every slot's decision separately; here one shared network scores every candidate
from its own features and a pooled summary of the others (Deep Sets, Zaheer et al. 2017; optionally one layer of
self-attention between the candidates, the relation-network view of duplicate removal, Hu et al. 2018), so what is
learned for one slot holds for all, and reordering the candidates reorders the actions.

:class:`SetPolicy` is an SB3 ``ActorCriticPolicy`` (PPO, A2C) and :class:`MaskableSetPolicy` its sb3-contrib
MaskablePPO twin; the action head follows the env's action space:

* ``MultiBinary(n)`` (keep-mask): one Bernoulli logit per slot;
* ``Box(n)`` (new scores): one Gaussian mean per slot, ``2 * score - 1 + correction`` (SB3 acts in ``[-1, 1]``
  after ``RescaleAction``: the policy starts at the detector's own scores), one log std shared by all slots;
* ``Discrete(n + 1)`` (one candidate per step, or stop): a logit per slot and a stop logit from the summary.

Padded slots (valid flag 0) get a fixed, parameter-free output (logit -20, mean -1: "drop"), so they neither act nor
pass gradients. The value is read from the summary. ``policy_kwargs``: ``hidden`` (64), ``attention_heads`` (0:
Deep Sets only), ``valid_column`` (0) and ``score_column`` (5: DetBoxSelect's layout).

Example::

    from stable_baselines3 import PPO
    from detgym.agents.set_policy import SetPolicy
    model = PPO(SetPolicy, env, policy_kwargs={"hidden": 64})
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.distributions import DiagGaussianDistribution
from stable_baselines3.common.policies import ActorCriticPolicy
from torch import nn

__all__ = [
    "MaskableSetPolicy", "SetEncoder", "SetPolicy", "SlotHead", "decaying_learning_rate",
    "set_policy_fits",
]

_DROP_LOGIT = -20.0  # a padded slot's Bernoulli / categorical logit: never chosen, no gradient


def set_policy_fits(observation_space: spaces.Space, action_space: spaces.Space) -> bool:
    """Whether the set policy can act: a ``(n, F)`` Box observation and a MultiBinary(n), Box(n) or Discrete(n + 1)
    action."""
    if not isinstance(observation_space, spaces.Box) or len(observation_space.shape) != 2:
        return False
    n = observation_space.shape[0]
    if isinstance(action_space, spaces.MultiBinary):
        return tuple(np.atleast_1d(action_space.n)) == (n,)
    if isinstance(action_space, spaces.Box):
        return action_space.shape == (n,)
    return isinstance(action_space, spaces.Discrete) and int(action_space.n) == n + 1


class SetEncoder(nn.Module):
    """Per-candidate latents from each candidate and a pooled summary of the set, and the summary itself.

    The actor's latent is ``[B, (n + 1) * (hidden + 2)]``: per slot its ``hidden`` latents, its valid flag and its
    score, then one row with the summary (what :class:`SlotHead` reads); the critic's latent is the summary.
    """

    def __init__(self, n_slots: int, n_features: int, hidden: int = 64, attention_heads: int = 0,
                 valid_column: int = 0, score_column: int = 5) -> None:
        super().__init__()
        self.n_slots, self.n_features, self.hidden = int(n_slots), int(n_features), int(hidden)
        self.valid_column, self.score_column = int(valid_column), int(score_column)
        self.embed = nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.attention = nn.MultiheadAttention(hidden, attention_heads, batch_first=True) if attention_heads else None
        self.summary = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.ReLU())
        self.mix = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.ReLU())
        self.latent_dim_pi = (self.n_slots + 1) * (hidden + 2)
        self.latent_dim_vf = hidden

    def _encode(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = features.reshape(-1, self.n_slots, self.n_features)
        valid = x[..., self.valid_column] > 0.5
        e = self.embed(x)
        if self.attention is not None:
            # a set without candidates attends to itself (all keys masked makes softmax NaN)
            mask = ~valid & valid.any(dim=1, keepdim=True)
            e = e + self.attention(e, e, e, key_padding_mask=mask, need_weights=False)[0]
        v = valid.unsqueeze(-1).to(e.dtype)
        count = v.sum(dim=1).clamp(min=1.0)
        mean = (e * v).sum(dim=1) / count
        top = torch.where(valid.unsqueeze(-1), e, torch.zeros_like(e)).amax(dim=1)  # e >= 0 after ReLU
        g = self.summary(torch.cat([mean, top], dim=-1))
        slots = self.mix(torch.cat([e, g.unsqueeze(1).expand_as(e)], dim=-1))
        rows = torch.cat([slots, v, x[..., self.score_column:self.score_column + 1]], dim=-1)
        last = torch.cat([g, g.new_ones(g.shape[0], 2)], dim=-1).unsqueeze(1)
        return torch.cat([rows, last], dim=1).flatten(1), g

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._encode(features)

    def forward_actor(self, features: torch.Tensor) -> torch.Tensor:
        return self._encode(features)[0]

    def forward_critic(self, features: torch.Tensor) -> torch.Tensor:
        return self._encode(features)[1]


class SlotHead(nn.Module):
    """The action head over :class:`SetEncoder`'s actor latent: one shared linear map per slot.

    Args:
        n_slots, hidden: the encoder's sizes.
        kind: ``"bernoulli"`` (logits ``[B, n]``), ``"gaussian"`` (means ``[B, n]``, from ``2 * score - 1``) or
            ``"categorical"`` (logits ``[B, n + 1]``, the last one "stop").
    """

    def __init__(self, n_slots: int, hidden: int, kind: str) -> None:
        super().__init__()
        self.n_slots, self.hidden, self.kind = int(n_slots), int(hidden), kind
        self.slot = nn.Linear(hidden, 1)
        self.stop = nn.Linear(hidden, 1) if kind == "categorical" else None
        for layer in (self.slot, self.stop):
            if layer is not None:
                nn.init.orthogonal_(layer.weight, gain=0.01)
                nn.init.zeros_(layer.bias)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        rows = latent.reshape(-1, self.n_slots + 1, self.hidden + 2)
        slots, valid, score = rows[:, :-1, :self.hidden], rows[:, :-1, self.hidden] > 0.5, rows[:, :-1, -1]
        out = self.slot(slots).squeeze(-1)
        if self.kind == "gaussian":
            return torch.where(valid, 2.0 * score - 1.0 + out, torch.full_like(out, -1.0))
        out = torch.where(valid, out, torch.full_like(out, _DROP_LOGIT))
        if self.kind == "categorical":
            out = torch.cat([out, self.stop(rows[:, -1, :self.hidden])], dim=-1)
        return out


class _SetPolicyMixin:
    """What :class:`SetPolicy` and :class:`MaskableSetPolicy` add to their SB3 base: the encoder and the head."""

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space, lr_schedule: Any, *,
                 hidden: int = 64, attention_heads: int = 0, valid_column: int = 0, score_column: int = 5,
                 **kwargs: Any) -> None:
        if not set_policy_fits(observation_space, action_space):
            raise ValueError(f"the set policy needs a (n, F) Box observation and a MultiBinary(n), Box(n) or "
                             f"Discrete(n + 1) action; got {observation_space} and {action_space}")
        n_features = observation_space.shape[1]
        for name, column in (("valid_column", valid_column), ("score_column", score_column)):
            if not 0 <= int(column) < n_features:
                raise ValueError(f"{name} must be a feature column in 0..{n_features - 1}, got {column!r}")
        self.set_kwargs = {"hidden": int(hidden), "attention_heads": int(attention_heads),
                           "valid_column": int(valid_column), "score_column": int(score_column)}
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    def _build_mlp_extractor(self) -> None:
        n_slots, n_features = self.observation_space.shape
        self.mlp_extractor = SetEncoder(n_slots, n_features, **self.set_kwargs)

    def _build(self, lr_schedule: Any) -> None:
        super()._build(lr_schedule)
        n_slots = self.observation_space.shape[0]
        if isinstance(self.action_space, spaces.MultiBinary):
            kind = "bernoulli"
        elif isinstance(self.action_space, spaces.Box):
            kind = "gaussian"
        else:
            kind = "categorical"
        self.action_net = SlotHead(n_slots, self.set_kwargs["hidden"], kind)
        if isinstance(self.action_dist, DiagGaussianDistribution):
            self.log_std = nn.Parameter(torch.full((1,), float(self.log_std_init)))  # one std for every slot
        # the base built its optimizer over the replaced head
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {**super()._get_constructor_parameters(), **self.set_kwargs}


class SetPolicy(_SetPolicyMixin, ActorCriticPolicy):
    """SB3 actor-critic policy with the set encoder and per-slot head (module docstring); PPO / A2C."""


def _maskable_base() -> type:
    from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy

    return MaskableActorCriticPolicy


class MaskableSetPolicy(_SetPolicyMixin, _maskable_base()):  # type: ignore[misc]
    """sb3-contrib MaskablePPO policy with the set encoder and per-slot head (module docstring)."""


def decaying_learning_rate(progress_remaining: float) -> float:
    """1e-3 falling linearly to 0 over a run (SB3 passes the fraction of the run left): the box-selection learners'
    learning rate."""
    return 1e-3 * progress_remaining
