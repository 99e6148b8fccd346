"""detgym: reinforcement-learning environments over object-detector training."""

__version__ = "0.1.0"

from detgym.envs import register_envs as _register_envs  # registers DetLossWeight-v0 & co. with gymnasium

_register_envs()
