"""Scan stage, worker processes: run independent scan tasks on a small pool of processes.

A full scan is one task per env and per chunk of a package cache. Tasks run on processes, not
threads: the GIL makes threads slower than one process for this work (shared/FACTS.md). The task
function and its tasks must be picklable; results come back in the order of the tasks.

:func:`cancel_scans` ends every running pool at once (the exporter stopping): a worker process left
behind would block for ever on a pipe nobody reads, and keep the forkserver and multiprocessing's
resource tracker alive with it (each holds their pipes).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import CancelledError, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from exporter.model import ScanOptions

__all__ = ["ScanCancelledError", "cancel_scans", "run_tasks"]

TaskT = TypeVar("TaskT")
ResultT = TypeVar("ResultT")

_pools_lock = threading.Lock()  # held while a pool starts its processes, so cancel_scans sees all of them
_running_pools: set[ProcessPoolExecutor] = set()
_cancelled = threading.Event()
CANCEL_GRACE_SECONDS = 0.5  # how long a broken pool waits to learn whether the exporter is stopping


class ScanCancelledError(Exception):
    """The scan's worker processes were stopped by :func:`cancel_scans`: the exporter is stopping."""


def _pool_context() -> multiprocessing.context.BaseContext:
    # fork is fastest but unsafe once threads run (HTTP server, watchers); forkserver forks from a
    # clean single-threaded server process instead.
    method = "fork" if threading.active_count() == 1 else "forkserver"
    return multiprocessing.get_context(method)


_STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})


@contextlib.contextmanager
def _stop_signals_held() -> Iterator[None]:
    """Hold SIGTERM and SIGINT back (in the main thread) while a pool starts its processes. ``--once`` and
    ``report`` stop by raising SystemExit from the handler: raised between a worker's fork and the pool
    recording it, it left that worker unknown to the cleanup, alive for ever (1 in 3 tries of the shutdown
    test). Scans on other threads (the daemon's) are stopped by :func:`cancel_scans` instead, under the lock."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)  # a signal that came meanwhile is handled now


def _start_worker(nice: int) -> None:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)  # forked while they were held
    os.nice(nice)
    # Ctrl-C reaches the whole process group: the exporter stops its workers itself, without a
    # KeyboardInterrupt traceback from each of them in the log.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _kill_workers(pool: ProcessPoolExecutor) -> None:
    # SIGKILL: a walk holds nothing that needs cleaning up, and a worker blocked writing its result must
    # not be waited for. (ProcessPoolExecutor has no public way to end its workers before Python 3.14.)
    processes: dict[int, Any] = getattr(pool, "_processes", None) or {}
    for process in list(processes.values()):
        with contextlib.suppress(OSError, ValueError):  # already gone
            process.kill()


def cancel_scans() -> None:
    """Kill the worker processes of every scan running on a pool, and refuse new pools from now on: each
    scan in progress raises :class:`ScanCancelledError` in its thread. Returns at once (the dead workers
    are reaped by the scans' own threads). Called once, when the exporter stops."""
    with _pools_lock:
        _cancelled.set()
        pools = list(_running_pools)
    for pool in pools:
        _kill_workers(pool)


def run_tasks(
    run: Callable[[TaskT, ScanOptions], ResultT], tasks: Sequence[TaskT], options: ScanOptions
) -> Iterator[ResultT]:
    """``run(task, options)`` for each task, on ``options.workers`` processes at ``options.nice``
    (in this process when one worker suffices and no nice value is asked for). Raises
    :class:`ScanCancelledError` when :func:`cancel_scans` ends the pool, or was called before."""
    if not tasks:
        return  # (a pool of no workers is an error)
    # A niced scan runs in worker processes even with one worker: nice applies to whole processes.
    if options.nice == 0 and (options.workers <= 1 or len(tasks) <= 1):
        for task in tasks:
            yield run(task, options)
        return
    workers = min(options.workers, len(tasks))
    finished = False
    pool = ProcessPoolExecutor(  # (starts no process yet)
        max_workers=workers, mp_context=_pool_context(), initializer=_start_worker, initargs=(options.nice,)
    )
    try:
        # map submits every task, which starts the worker processes: cancel_scans waits for that
        with _pools_lock, _stop_signals_held():
            if _cancelled.is_set():
                raise ScanCancelledError("the exporter is stopping")
            _running_pools.add(pool)
            results = pool.map(run, tasks, [options] * len(tasks), chunksize=1)
        yield from results
        finished = True
    except (BrokenProcessPool, CancelledError):
        # Ctrl-C reaches the whole process group: a worker not yet past its initializer dies of it, breaking
        # the pool an instant before the exporter cancels the scans. Give that cancel a moment to come.
        if _cancelled.wait(CANCEL_GRACE_SECONDS):
            raise ScanCancelledError("the exporter is stopping") from None
        raise
    finally:
        with _pools_lock:
            _running_pools.discard(pool)
        if not finished:  # a worker of a broken or abandoned pool can be stuck on its pipes: none may outlive it
            _kill_workers(pool)
        pool.shutdown(wait=True)
