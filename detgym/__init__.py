"""detgym: reinforcement-learning environments over object-detector training."""

from __future__ import annotations

import os
import sys

__version__ = "0.1.0"

from detgym.envs import register_envs as _register_envs  # registers DetLossWeight-v0 & co. with gymnasium


def _one_torch_thread_after_fork() -> None:
    # GNU OpenMP's thread pool does not survive fork(): a forked child (gymnasium's AsyncVectorEnv and SB3's
    # SubprocVecEnv fork their workers on Linux) that enters a parallel region of the parent's pool waits forever.
    # One thread never opens a parallel region; the workers of a vector env share the cores anyway.
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


os.register_at_fork(after_in_child=_one_torch_thread_after_fork)
_register_envs()
