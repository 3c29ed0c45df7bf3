"""conda-env-exporter: Prometheus exporter of the true, hardlink-aware disk usage of conda envs.

Data flow: discover -> walk -> account -> snapshot -> collector/http; scheduling in daemon, change detection in watch.
"""

__version__ = "0.1.0"
"""The one place the version is written; pyproject.toml reads it from here."""
