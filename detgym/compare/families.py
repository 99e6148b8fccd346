"""What ``detgym compare`` does for each env family when the command line does not say: the baseline agent
(paired differences and probabilities of improvement are given against it), the agents compared, the learning
agents' training budget and the number of evaluated episodes per run. Presets are data: one row per family.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FAMILY_DEFAULTS", "FamilyDefaults", "family_defaults"]


@dataclass(frozen=True)
class FamilyDefaults:
    """One env family's comparison defaults."""

    #: The agent the others are compared with (used when it is in the comparison; else the first agent).
    baseline: str
    #: Agents compared when ``--agents`` is not given (empty: ``--agents`` is required).
    agents: tuple[str, ...] = ()
    #: Training timesteps of a learning agent per run.
    train_budget: int = 256
    #: Evaluated episodes per run.
    eval_episodes: int = 1


FAMILY_DEFAULTS: dict[str, FamilyDefaults] = {
    # paper 000, table 3: ordinary training is the baseline. One episode is a whole training run (DetLossWeight-v0:
    # 74 steps, about 3.5 minutes on one thread of a 2-core CPU), so one evaluated episode per run and 256 timesteps
    # (about 3.5 episodes) of training.
    "loss_weight": FamilyDefaults("uniform", ("uniform", "avw", "rlo", "ppo"), train_budget=256, eval_episodes=1),
    # paper 001: greedy NMS is the baseline. One episode is one image (milliseconds): many of both.
    "box_select": FamilyDefaults("nms", ("nms", "random", "ppo"), train_budget=2048, eval_episodes=100),
    # papers 002/003: random selection is the baseline.
    "sample_select": FamilyDefaults("random", ("random", "ppo")),
}


def family_defaults(family: str | None) -> FamilyDefaults:
    """The row of ``family``; an env outside the table gets the first agent as baseline and needs ``--agents``."""
    return FAMILY_DEFAULTS.get(family or "", FamilyDefaults(baseline=""))
