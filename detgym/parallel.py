"""Independent jobs run in parallel: in this process, in worker processes, or as Ray tasks.

What long builds (``detgym build-tree``) need, whatever the backend: submit a job, wait for any to finish, collect
its result or its error, and never leave a worker running after the parent is gone. Workers are forks of a
``forkserver`` that imported the given modules once (``spawn`` where there is none; never a fork of the caller,
whose torch threads a fork would copy), run ``threads`` torch threads each (CPU results depend on the thread
count), ignore SIGINT (the parent alone decides, then terminates them) and exit as soon as the parent dies (they
read EOF on a pipe only the parent writes to).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import socket
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from multiprocessing.connection import Connection
from typing import Any, Callable, Iterator, Sequence

__all__ = ["BACKENDS", "JobPool", "WorkerDied", "check_backend", "job_pool", "torch_threads"]

#: Accepted backend names.
BACKENDS: tuple[str, ...] = ("process", "ray")


class WorkerDied(RuntimeError):
    """A worker process died (killed, out of memory): the pool can run nothing more."""


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch threads, then restore the caller's count. CPU results are deterministic only
    for a given thread count (float sums change with it), so envs, runs and jobs each fix theirs; when the count
    already is ``n`` (an env's every step, usually) nothing is set."""
    import torch

    before, n = torch.get_num_threads(), int(n)
    if before == n:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def check_backend(backend: str, ray_address: str | None = None) -> None:
    """One-line ValueError for an unknown backend, Ray missing, or a ``HOST:PORT`` Ray address that accepts no
    connection (``ray.init`` would retry it for minutes)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not supported; accepted: {', '.join(BACKENDS)}")
    if backend != "ray":
        return
    try:
        import ray  # noqa: F401
    except ImportError:
        raise ValueError("backend 'ray' needs Ray: pip install -e '.[ray]'") from None
    host, _, port = (ray_address or "").rpartition(":")
    if host and port.isdigit() and "://" not in str(ray_address):
        try:
            socket.create_connection((host, int(port)), timeout=5).close()
        except OSError as err:
            raise ValueError(f"--ray-address {ray_address}: no Ray cluster answers there ({err})") from None


class JobPool:
    """Submit jobs, then take finished ones as they come: ``for key, result in pool.finished(): result()``.

    ``result()`` returns the job's value or raises its exception (:class:`WorkerDied` when a worker process died).
    """

    def __init__(self, submit: Callable[[Callable, tuple], Any], wait_any: Callable[[list], tuple[list, list]],
                 get: Callable[[Any], Any]) -> None:
        self._submit, self._wait_any, self._get = submit, wait_any, get
        self._pending: dict[Any, Any] = {}

    def submit(self, key: Any, fn: Callable, *args: Any) -> None:
        """Start ``fn(*args)``; ``key`` names it in :meth:`finished`."""
        self._pending[self._submit(fn, args)] = key

    @property
    def pending(self) -> int:
        return len(self._pending)

    def finished(self) -> list[tuple[Any, Callable[[], Any]]]:
        """Wait until at least one job is done; its ``(key, result)`` pairs."""
        if not self._pending:
            return []
        done, _ = self._wait_any(list(self._pending))
        return [(self._pending.pop(handle), (lambda h=handle: self._get(h))) for handle in done]


# ------------------------------------------------------------------------------------------------ in-process
class _Deferred:
    """An inline job: run when the caller waits for it, so results arrive one by one as they do from workers."""

    def __init__(self, fn: Callable, args: tuple, threads: int) -> None:
        self.fn, self.args, self.threads = fn, args, threads
        self.future: Future = Future()

    def run(self) -> None:
        try:
            with torch_threads(self.threads):
                self.future.set_result(self.fn(*self.args))
        except Exception as err:  # noqa: BLE001  reported through result()
            self.future.set_exception(err)


def _inline_pool(threads: int) -> Iterator[JobPool]:
    def wait_any(handles: list) -> tuple[list, list]:
        handles[0].run()
        return handles[:1], handles[1:]

    yield JobPool(lambda fn, args: _Deferred(fn, args, threads), wait_any, lambda job: job.future.result())


# -------------------------------------------------------------------------------------------- worker processes
def _exit_with_parent(lifeline: Connection) -> None:
    try:
        lifeline.recv_bytes()  # nothing is ever sent: returns only by EOF, when the parent's end closes
    except (EOFError, OSError):
        pass
    os._exit(1)


def _init_worker(threads: int, lifeline: Connection) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(lifeline,), daemon=True).start()
    import torch

    torch.set_num_threads(threads)


def _context(preload: Sequence[str]) -> multiprocessing.context.BaseContext:
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__, *preload])
    return ctx


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    terminate = getattr(pool, "terminate_workers", None)  # Python >= 3.14
    if terminate is not None:
        terminate()
        return
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        proc.terminate()
    pool.shutdown(wait=True, cancel_futures=True)


def _get_future(future: Future) -> Any:
    from concurrent.futures.process import BrokenProcessPool

    try:
        return future.result()
    except BrokenProcessPool:
        raise WorkerDied("a worker process died (killed or out of memory); finished work is saved: run the same "
                         "command again to resume") from None


def _process_pool(workers: int, threads: int, preload: Sequence[str]) -> Iterator[JobPool]:
    ctx = _context(preload)
    lifeline, keep = ctx.Pipe(duplex=False)
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(threads, lifeline))
    try:
        yield JobPool(lambda fn, args: pool.submit(fn, *args),
                      lambda handles: wait(handles, return_when=FIRST_COMPLETED), _get_future)
    finally:
        _stop_workers(pool)
        keep.close()
        lifeline.close()


# ------------------------------------------------------------------------------------------------------- Ray
def _ray_pool(workers: int, threads: int, address: str | None) -> Iterator[JobPool]:
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(address=address, num_cpus=None if address else workers, include_dashboard=False,
                 log_to_driver=False)
    handles: list[Any] = []
    gpus = 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0

    def submit(fn: Callable, args: tuple) -> Any:
        ref = ray.remote(_with_threads).options(num_cpus=threads, num_gpus=gpus).remote(threads, fn, *args)
        handles.append(ref)
        return ref

    def wait_any(refs: list) -> tuple[list, list]:
        return ray.wait(refs, num_returns=1)

    try:
        yield JobPool(submit, wait_any, ray.get)
    finally:
        for ref in handles:
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
        if started:
            ray.shutdown()


def _with_threads(threads: int, fn: Callable, *args: Any) -> Any:
    with torch_threads(threads):
        return fn(*args)


# --------------------------------------------------------------------------------------------------- entry
@contextlib.contextmanager
def job_pool(workers: int = 1, *, backend: str = "process", threads: int = 1, preload: Sequence[str] = (),
             ray_address: str | None = None) -> Iterator[JobPool]:
    """A :class:`JobPool`: ``workers`` == 1 with the process backend runs each job in this process when it is
    waited for; K > 1 runs K worker processes (forkserver preloading ``preload`` modules); ``backend="ray"`` runs Ray
    tasks on a local instance of ``workers`` CPUs, or on the cluster at ``ray_address``. Every job runs with
    ``threads`` torch threads. Leaving the block stops the workers (a job still running is lost; its caller
    resumes it)."""
    check_backend(backend, ray_address)
    if backend == "ray":
        yield from _ray_pool(workers, threads, ray_address)
    elif workers > 1:
        yield from _process_pool(workers, threads, preload)
    else:
        yield from _inline_pool(threads)
