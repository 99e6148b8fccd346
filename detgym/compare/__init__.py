"""The comparison harness behind ``detgym compare`` and ``detgym replay``, as a library.

:func:`run` runs the grid env x agent x seed (resumable, in worker processes or Ray tasks) and returns the records
and the summary; :func:`replay` re-executes recorded runs and checks their rewards; :func:`list_agents` says which
agents fit which env. Modules: :mod:`~detgym.compare.plan` (options -> runs), :mod:`~detgym.compare.grid` (runs,
keys, seeds), :mod:`~detgym.compare.execute` (backends), :mod:`~detgym.compare.worker` (one run),
:mod:`~detgym.compare.store` (``runs.jsonl``), :mod:`~detgym.compare.reproduce` (replay),
:mod:`~detgym.compare.stats`, :mod:`~detgym.compare.report`, :mod:`~detgym.compare.plots`, and
:mod:`~detgym.compare.cli` (the command line's options).
"""

from detgym.compare.api import Comparison, Replay, list_agents, replay, run

__all__ = ["Comparison", "Replay", "list_agents", "replay", "run"]
