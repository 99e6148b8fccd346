"""Running a grid: in this process (one worker), in K spawned worker processes, or as Ray tasks.

Whatever the backend, only this (the parent) process writes ``runs.jsonl``: a run's record is appended the moment
it arrives, so a comparison stopped at any point (Ctrl-C, SIGTERM, SIGKILL, a crash) has lost no finished run, and
re-running the same command skips every run already recorded. A run that raises is reported and left out (it runs
again next time); the others go on.

Workers are forks of a ``forkserver`` that imported torch, detgym and the agents once (``spawn`` where there is no
forkserver; never a fork of this process, whose torch threads and open files a fork would copy), use one torch
thread each (``RunSpec.threads``), ignore SIGINT (Ctrl-C reaches the whole process group; the parent alone decides
and then terminates them), and exit by themselves the moment the comparison dies (they read EOF on a pipe whose
only writer is the comparison: a SIGKILLed comparison leaves no orphan running on).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from detgym.compare.grid import RunSpec
from detgym.compare.store import RunFile
from detgym.compare.worker import run_one
from detgym.parallel import BACKENDS, WorkerDied, check_backend, job_pool

__all__ = ["BACKENDS", "Outcome", "WorkerDied", "check_backend", "execute"]


@dataclass
class Outcome:
    """What :func:`execute` did."""

    finished: int = 0
    #: ``(run key, one-line error)`` of every run that raised.
    failed: list[tuple[str, str]] = field(default_factory=list)
    interrupted: bool = False
    wall_s: float = 0.0


class _Progress:
    """The parent's bookkeeping of arriving results: append, count, advance the bar."""

    def __init__(self, run_file: RunFile, outcome: Outcome, bar: Any) -> None:
        self.run_file, self.outcome, self.bar = run_file, outcome, bar

    def done(self, spec: RunSpec, record: dict[str, Any]) -> None:
        self.run_file.append(record)
        self.outcome.finished += 1
        self.bar.set_postfix_str(f"{spec.env.id} {spec.agent} seed {spec.seed}", refresh=False)
        self.bar.update(1)

    def failed(self, spec: RunSpec, err: BaseException) -> None:
        message = f"{type(err).__name__}: {err}".splitlines()[0]
        self.outcome.failed.append((spec.key, message))
        self.bar.write(f"run {spec.key} failed: {message}")
        self.bar.update(1)


def _preload() -> list[str]:
    """Modules the forkserver imports once for every worker: SB3 and every env module."""
    from detgym.envs import ENV_IDS

    return [__name__, "stable_baselines3", "sb3_contrib", *sorted({e.split(":")[0] for e, _, _ in ENV_IDS.values()})]


def _run(specs: Sequence[RunSpec], progress: _Progress, workers: int, backend: str, address: str | None) -> None:
    """Every run as a job of a :func:`detgym.parallel.job_pool`; records arrive (and are written) as runs finish."""
    threads = max(s.threads for s in specs)
    with job_pool(min(workers, len(specs)), backend=backend, threads=threads, preload=_preload(),
                  ray_address=address) as pool:
        for spec in specs:
            pool.submit(spec, run_one, spec)
        while pool.pending:
            for spec, result in pool.finished():
                try:
                    record = result()
                except WorkerDied:
                    raise
                except Exception as err:  # noqa: BLE001  one failed run must not stop the others
                    progress.failed(spec, err)
                else:
                    progress.done(spec, record)


# --------------------------------------------------------------------------------------------------- entry
def execute(specs: Sequence[RunSpec], run_file: RunFile, *, workers: int = 1, backend: str = "process",
            ray_address: str | None = None, total: int | None = None, initial: int = 0,
            progress: bool = True) -> Outcome:
    """Run ``specs``, appending each record to ``run_file`` as it arrives.

    Args:
        specs: the runs still to do.
        run_file: the open results file.
        workers: parallel runs (``process``: 1 runs in this process, K > 1 in K spawned processes; ``ray``: the
            size of a local Ray instance).
        backend: one of :data:`BACKENDS`.
        ray_address: a Ray cluster to connect to (``ray``; default: start a local instance).
        total, initial: the progress bar's grid size and runs already done.
        progress: show the tqdm bar.

    Returns:
        An :class:`Outcome`; ``interrupted`` on Ctrl-C (KeyboardInterrupt), after every finished run was written.
    """
    from tqdm.auto import tqdm

    outcome = Outcome()
    start = time.perf_counter()
    with tqdm(total=total if total is not None else len(specs), initial=initial, desc="compare", unit="run",
              disable=not progress, dynamic_ncols=True) as bar:
        tracker = _Progress(run_file, outcome, bar)
        try:
            if specs:
                _run(specs, tracker, workers, backend, ray_address)
        except KeyboardInterrupt:
            outcome.interrupted = True
    outcome.wall_s = time.perf_counter() - start
    return outcome
