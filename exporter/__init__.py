"""conda-env-exporter: Prometheus exporter of the true, hardlink-aware disk usage of conda envs.

The packages are the pipeline's stages, in order: discover -> scan -> account -> snapshot -> expose, each
importing only earlier stages and :mod:`exporter.model` (the result types they share); :mod:`exporter.daemon`
keeps the snapshot current on the side. :mod:`exporter.config` declares every setting once.
"""

__version__ = "0.1.0"
"""The one place the version is written; pyproject.toml reads it from here."""
