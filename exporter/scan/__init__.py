"""Stage 2, scan: walk trees and read what conda wrote, without interpreting it.

``walk`` (one tree, flat arrays; its per-path loop in C in ``_walker.c`` with a Python fallback),
``records`` (``conda-meta/*.json``), ``cache`` (a package cache, chunk by chunk, with conda clean's
rules), ``workers`` (independent tasks on a pool of processes).
"""
