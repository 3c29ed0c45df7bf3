"""Stage 4, snapshot: complete, immutable results, and the store that serves the latest.

``full`` (a full scan), ``assemble`` (the one way tree results become totals and a Snapshot, for
full and incremental scans alike), ``store`` (the latest Snapshot and the exporter's own health).
The result types themselves live in :mod:`exporter.model`.
"""
