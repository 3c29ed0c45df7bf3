"""conda-env-exporter: Prometheus exporter of the true, hardlink-aware disk usage of conda envs.

Data flow: discover -> walk -> account -> snapshot -> collector/http; scheduling in daemon, change detection in watch.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("conda-env-exporter")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
