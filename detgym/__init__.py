"""detgym: reinforcement-learning environments over object-detector training."""

__version__ = "0.1.0"
