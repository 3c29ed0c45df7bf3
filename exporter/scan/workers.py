"""Scan stage, worker processes: run independent scan tasks on a small pool of processes.

A full scan is one task per env and per chunk of a package cache. Tasks run on processes, not
threads: the GIL makes threads slower than one process for this work (shared/FACTS.md). The task
function and its tasks must be picklable; results come back in the order of the tasks.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

from exporter.model import ScanOptions

__all__ = ["run_tasks"]

TaskT = TypeVar("TaskT")
ResultT = TypeVar("ResultT")


def _pool_context() -> multiprocessing.context.BaseContext:
    # fork is fastest but unsafe once threads run (HTTP server, watchers); forkserver forks from a
    # clean single-threaded server process instead.
    method = "fork" if threading.active_count() == 1 else "forkserver"
    return multiprocessing.get_context(method)


def run_tasks(
    run: Callable[[TaskT, ScanOptions], ResultT], tasks: Sequence[TaskT], options: ScanOptions
) -> Iterator[ResultT]:
    """``run(task, options)`` for each task, on ``options.workers`` processes at ``options.nice``
    (in this process when one worker suffices and no nice value is asked for)."""
    if not tasks:
        return  # (a pool of no workers is an error)
    # A niced scan runs in worker processes even with one worker: nice applies to whole processes.
    if options.nice == 0 and (options.workers <= 1 or len(tasks) <= 1):
        for task in tasks:
            yield run(task, options)
        return
    workers = min(options.workers, len(tasks))
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=_pool_context(), initializer=os.nice, initargs=(options.nice,)
    ) as pool:
        yield from pool.map(run, tasks, [options] * len(tasks), chunksize=1)
