"""The exporter's own health: scans, errors, build."""

from __future__ import annotations

import platform
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from exporter import __version__
from exporter.snapshot import SnapshotStore

ERROR_KINDS = ("permission", "vanished", "io", "metadata")

BUILD_INFO = "conda_exporter_build_info"
BUILD_INFO_HELP = "Always 1; labels give the exporter's version and Python version."
LAST_SUCCESS = "conda_exporter_last_scan_success"
LAST_SUCCESS_HELP = "1 if the last scan completed, else 0 (the previous results stay served)."
LAST_SUCCESS_TIME = "conda_exporter_last_scan_success_timestamp_seconds"
LAST_SUCCESS_TIME_HELP = "Unix time at which the last successful scan completed."
LAST_DURATION = "conda_exporter_last_scan_duration_seconds"
LAST_DURATION_HELP = "Wall time of the last full scan."
SCAN_ERRORS = "conda_exporter_scan_errors"
SCAN_ERRORS_HELP = "Paths that scans could not read, by kind (permission, vanished, io, metadata)."
SCANS = "conda_exporter_scans"
SCANS_HELP = "Scans run, by trigger and result."
ENVS = "conda_exporter_envs"
ENVS_HELP = "Environments in the latest snapshot, over all roots."


class ExporterCollector(Collector):
    """Renders the exporter's self-metrics."""

    def __init__(self, store: SnapshotStore) -> None:
        self._store = store

    def collect(self) -> Iterator[Metric]:
        health = self._store.health()
        snapshot = self._store.snapshot

        build = GaugeMetricFamily(BUILD_INFO, BUILD_INFO_HELP, labels=("version", "python_version"))
        build.add_metric((__version__, platform.python_version()), 1)
        yield build
        yield GaugeMetricFamily(LAST_SUCCESS, LAST_SUCCESS_HELP, value=1 if health.last_success else 0)
        yield GaugeMetricFamily(LAST_SUCCESS_TIME, LAST_SUCCESS_TIME_HELP, value=health.last_success_at)
        yield GaugeMetricFamily(LAST_DURATION, LAST_DURATION_HELP, value=health.last_duration_seconds)

        errors = CounterMetricFamily(SCAN_ERRORS, SCAN_ERRORS_HELP, labels=("kind",))
        for kind in ERROR_KINDS:  # every kind always present, so rate() works from the first error on
            errors.add_metric((kind,), health.errors_total.get(kind, 0))
        yield errors

        scans = CounterMetricFamily(SCANS, SCANS_HELP, labels=("trigger", "result"))
        for (trigger, result), count in sorted(health.scans_total.items()):
            scans.add_metric((trigger, result), count)
        yield scans

        yield GaugeMetricFamily(ENVS, ENVS_HELP, value=len(snapshot.envs) if snapshot else 0)
