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

import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from functools import partial
from multiprocessing.connection import Connection
from typing import Any, Callable, Sequence

from detgym.compare.grid import RunSpec
from detgym.compare.worker import run_one
from detgym.compare.store import RunFile

__all__ = ["BACKENDS", "Outcome", "WorkerDied", "check_backend", "execute"]

#: Accepted ``--backend`` values.
BACKENDS: tuple[str, ...] = ("process", "ray")


class WorkerDied(RuntimeError):
    """A worker process died (killed, out of memory): the pool can run nothing more."""


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


# ------------------------------------------------------------------------------------------------ in-process
def _run_inline(specs: Sequence[RunSpec], progress: _Progress) -> None:
    for spec in specs:
        try:
            record = run_one(spec)
        except Exception as err:  # noqa: BLE001  one failed run must not stop the others
            progress.failed(spec, err)
        else:
            progress.done(spec, record)


# -------------------------------------------------------------------------------------------- worker processes
def _exit_with_parent(lifeline: Connection) -> None:
    try:
        lifeline.recv_bytes()  # nothing is ever sent: returns only by EOF, when the comparison's end closes
    except (EOFError, OSError):
        pass
    os._exit(1)


def _init_worker(threads: int, lifeline: Connection) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Not a watch on os.getppid(): a forkserver's workers keep the server alive, and it them.
    threading.Thread(target=_exit_with_parent, args=(lifeline,), daemon=True).start()
    import torch

    torch.set_num_threads(threads)
    # already there in a forkserver's workers; a spawned worker imports them here, not inside a run's wall time
    import detgym  # noqa: F401
    import sb3_contrib  # noqa: F401
    import stable_baselines3  # noqa: F401


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    terminate = getattr(pool, "terminate_workers", None)  # Python >= 3.14
    if terminate is not None:
        terminate()
        return
    # earlier Pythons have no public way to stop a running worker
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        proc.terminate()
    pool.shutdown(wait=True, cancel_futures=True)


def _context() -> multiprocessing.context.BaseContext:
    """``forkserver`` with this module, SB3 and every env module preloaded: torch, detgym, the detectors and the
    agents are imported once, in the server, and every worker is a fork of that clean, single-threaded process
    (``spawn`` would import them once per worker)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    from detgym.envs import ENV_IDS

    env_modules = sorted({entry.split(":")[0] for entry, _, _ in ENV_IDS.values()})
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__, "stable_baselines3", "sb3_contrib", *env_modules])
    return ctx


def _run_processes(specs: Sequence[RunSpec], progress: _Progress, workers: int) -> None:
    ctx = _context()
    # the workers' lifeline: this process alone holds the write end, so they read EOF the moment it dies
    lifeline, keep = ctx.Pipe(duplex=False)
    pool = ProcessPoolExecutor(min(workers, len(specs)), mp_context=ctx, initializer=_init_worker,
                               initargs=(max(s.threads for s in specs), lifeline))
    try:
        futures: dict[Future, RunSpec] = {pool.submit(run_one, spec): spec for spec in specs}
        for future in as_completed(futures):
            _collect(futures[future], future.result, progress)
    finally:
        # every result is in (or none is wanted): idle workers are stopped rather than left to tear down torch,
        # which takes seconds per process
        _stop_workers(pool)
        keep.close()
        lifeline.close()


def _collect(spec: RunSpec, result: Callable[[], dict[str, Any]], progress: _Progress) -> None:
    from concurrent.futures.process import BrokenProcessPool

    try:
        record = result()
    except BrokenProcessPool:
        # a worker died (killed, out of memory): nothing more will arrive
        raise WorkerDied("a worker process died (killed or out of memory); the finished runs are saved: run the "
                         "same command again to resume") from None
    except Exception as err:  # noqa: BLE001
        progress.failed(spec, err)
    else:
        progress.done(spec, record)


# ------------------------------------------------------------------------------------------------------- Ray
def check_backend(backend: str, ray_address: str | None) -> None:
    """One-line ValueError, before any run, for an unknown backend, Ray missing, or a ``HOST:PORT`` Ray address
    that accepts no connection (``ray.init`` would retry it for minutes)."""
    import socket

    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not supported; accepted: {', '.join(BACKENDS)}")
    if backend != "ray":
        return
    try:
        import ray  # noqa: F401
    except ImportError:
        raise ValueError("--backend ray needs Ray: pip install -e '.[ray]'") from None
    host, _, port = (ray_address or "").rpartition(":")
    if host and port.isdigit() and "://" not in ray_address:
        try:
            socket.create_connection((host, int(port)), timeout=5).close()
        except OSError as err:
            raise ValueError(f"--ray-address {ray_address}: no Ray cluster answers there ({err})") from None


def _run_ray(specs: Sequence[RunSpec], progress: _Progress, workers: int, address: str | None) -> None:
    import ray

    started = not ray.is_initialized()
    if started:
        # a local instance sized to --workers, or the cluster at --ray-address
        ray.init(address=address, num_cpus=None if address else workers, include_dashboard=False,
                 log_to_driver=False)
    try:
        gpus = 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0
        task = ray.remote(run_one).options(num_cpus=1, num_gpus=gpus)
        refs = {task.remote(spec): spec for spec in specs}
        pending = list(refs)
        try:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                for ref in ready:
                    _collect(refs[ref], partial(ray.get, ref), progress)
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
    finally:
        if started:
            ray.shutdown()


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
            if specs and backend == "ray":
                _run_ray(specs, tracker, workers, ray_address)
            elif specs and workers > 1:
                _run_processes(specs, tracker, workers)
            else:
                _run_inline(specs, tracker)
        except KeyboardInterrupt:
            outcome.interrupted = True
    outcome.wall_s = time.perf_counter() - start
    return outcome
