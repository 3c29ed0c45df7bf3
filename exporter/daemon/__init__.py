"""On the side, the daemon: keep the snapshot current while serving.

``scheduler`` (the loop), ``debounce`` (the pure dirty/quiet rule), ``detect`` with ``targets``
and ``inotify`` (change detection, watching or polling), ``discovery`` (which roots, discovered
again), ``incremental`` (rescans of what changed), ``warm`` and ``state`` (the fingerprints behind
the served numbers, and the state file for warm restarts).
"""
