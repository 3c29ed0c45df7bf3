"""The exporter's own health: scans, errors, build."""

from __future__ import annotations

import platform
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from exporter import __version__
from exporter.discover.roots import SKIP_REASONS, SKIPPED
from exporter.model import TRANSIENT_KIND, Snapshot
from exporter.scan import walk
from exporter.scan.budget import budget_totals
from exporter.snapshot.store import DURATION_BUCKETS, SnapshotStore

ERROR_KINDS = ("permission", "vanished", "io", TRANSIENT_KIND, "metadata")

BUILD_INFO = "conda_exporter_build_info"
BUILD_INFO_HELP = (
    "Always 1; labels give the exporter's version, the Python version and the walker in use "
    "(native: the C extension; python: the fallback where it could not be built, about 3x slower)."
)
LAST_SUCCESS = "conda_exporter_last_scan_success"
LAST_SUCCESS_HELP = "1 if the last scan completed, else 0 (the previous results stay served)."
LAST_SUCCESS_TIME = "conda_exporter_last_scan_success_timestamp_seconds"
LAST_SUCCESS_TIME_HELP = "Unix time at which the last successful scan completed."
LAST_DURATION = "conda_exporter_last_scan_duration_seconds"
LAST_DURATION_HELP = "Wall time of the last full scan."
SCAN_ERRORS = "conda_exporter_scan_errors"
SCAN_ERRORS_HELP = (
    "Paths that scans could not read, by kind (permission, vanished, io, transient: a network filesystem's "
    "passing error, the tree keeps its previous numbers and is walked again after a back-off; metadata)."
)
BUDGET_RATE = "conda_exporter_scan_budget_paths_per_second"
BUDGET_RATE_HELP = (
    "Scan budget in force at the last full scan (startup or reconcile), in paths stat()ed per second over all "
    "workers; 0: unlimited (--scan.max-rate 0, or auto and no tree on a network filesystem)."
)
BUDGET_WAIT = "conda_exporter_scan_budget_wait_seconds"
BUDGET_WAIT_HELP = (
    "Seconds full-scan walks slept waiting for the scan budget, added up over the walks (several workers wait "
    "at once)."
)
SCANS = "conda_exporter_scans"
SCANS_HELP = "Scans run, by trigger (startup, event, poll, reconcile, state, retry) and result."
WATCH_MODES = ("inotify", "poll")
SELF_GAUGES = {
    "conda_exporter_watches": "Directories watched with inotify now.",
    "conda_exporter_watch_limit_reached": "1 if the kernel refused a watch (inotify limits) and polling took over.",
    "conda_exporter_results_verified": (
        "0 while serving numbers loaded from the state file that no full scan has confirmed yet (after a warm start "
        "a low-priority reconcile confirms them); 1 says nothing of changes no watch sees, below an env's top-level "
        "dirs, until the next reconcile."
    ),
}
OLDEST_RESULT = "conda_exporter_oldest_result_timestamp_seconds"
OLDEST_RESULT_HELP = (
    "Unix time at which the least recently computed env result served was computed (no sample without envs); "
    "its age is time() - this."
)
STATE_LOADED = "conda_exporter_state_loaded"
STATE_LOADED_HELP = (
    "1 for how loading the state file at start went: ok, missing, corrupt (not JSON or not ours), version "
    "(another format), roots (written for other roots), invalid (a field of the wrong type or out of range), "
    "too_large or too_deep (refused before parsing); no series without --state.file."
)
STATE_RESULTS = ("ok", "missing", "corrupt", "version", "roots", "invalid", "too_large", "too_deep")
DAEMON_ERRORS = "conda_exporter_daemon_errors"
DAEMON_ERRORS_HELP = (
    "Errors the daemon's scheduling loop caught and survived, by kind (startup: retried after a back-off; "
    "loop: the next turn goes on)."
)
DAEMON_ERROR_PLACES = ("startup", "loop")
SKIPPED_DIRS = "conda_exporter_skipped_dirs"
SKIPPED_DIRS_HELP = (
    "Directories discovery left out, by reason: no_conda_meta (in an envs dir, not an env), permission, symlink "
    "(never followed), unreadable, missing (a stale --env or environments.txt entry); each is logged once."
)
ENVS = "conda_exporter_envs"
ENVS_HELP = "Environments in the latest snapshot, over all roots."


class ExporterCollector(Collector):
    """Renders the exporter's self-metrics; every one changes only with the store (see ``store.version``),
    none with the clock."""

    def __init__(self, store: SnapshotStore) -> None:
        self._store = store

    def collect(self) -> Iterator[Metric]:
        health = self._store.health()
        snapshot = self._store.snapshot

        build = GaugeMetricFamily(BUILD_INFO, BUILD_INFO_HELP, labels=("version", "python_version", "walker"))
        build.add_metric((__version__, platform.python_version(), walk.WALKER), 1)
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

        daemon_errors = CounterMetricFamily(DAEMON_ERRORS, DAEMON_ERRORS_HELP, labels=("kind",))
        for kind in DAEMON_ERROR_PLACES:  # both always present, so rate() works from the first error on
            daemon_errors.add_metric((kind,), health.daemon_errors_total.get(kind, 0))
        yield daemon_errors

        yield from scan_budget_metrics()
        yield GaugeMetricFamily(ENVS, ENVS_HELP, value=len(snapshot.envs) if snapshot else 0)
        yield skipped_dirs(snapshot)

        durations = HistogramMetricFamily(
            "conda_exporter_scan_duration_seconds", "Wall time of scans, by trigger.", labels=("trigger",)
        )
        for trigger, counts in sorted(health.duration_buckets.items()):
            bounds = [*(str(b) for b in DURATION_BUCKETS), "+Inf"]
            durations.add_metric(
                (trigger,), list(zip(bounds, (float(c) for c in counts), strict=True)), health.duration_sum[trigger]
            )
        yield durations
        mode = GaugeMetricFamily(
            "conda_exporter_watch_mode", "1 for the active change detection mode (inotify or poll).", labels=("mode",)
        )
        for name in WATCH_MODES:
            mode.add_metric((name,), 1 if health.watch_mode == name else 0)
        yield mode
        yield CounterMetricFamily(
            "conda_exporter_events", "Filesystem events received from inotify.", value=health.events_total
        )
        yield CounterMetricFamily(
            "conda_exporter_queue_overflows",
            "Times the kernel's inotify queue overflowed (events lost; a reconcile scan follows).",
            value=health.queue_overflows_total,
        )
        values = {
            "conda_exporter_watches": health.watches,
            "conda_exporter_watch_limit_reached": 1 if health.watch_limit_reached else 0,
            "conda_exporter_results_verified": 1 if health.results_verified else 0,
        }
        for name, help_text in SELF_GAUGES.items():
            yield GaugeMetricFamily(name, help_text, value=values[name])
        state = GaugeMetricFamily(STATE_LOADED, STATE_LOADED_HELP, labels=("result",))
        if health.state_loaded:  # no series without a state file
            for result in STATE_RESULTS:
                state.add_metric((result,), 1 if health.state_loaded == result else 0)
        yield state
        yield oldest_result(snapshot)


def scan_budget_metrics() -> Iterator[Metric]:
    """The scan budget in force and the seconds walks waited for it. Read from :mod:`exporter.scan.budget`,
    which full scans update before they publish: they change with the store, as the rest."""
    rate, waited = budget_totals()
    yield GaugeMetricFamily(BUDGET_RATE, BUDGET_RATE_HELP, value=rate)
    yield CounterMetricFamily(BUDGET_WAIT, BUDGET_WAIT_HELP, value=waited)


def skipped_dirs(snapshot: Snapshot | None) -> GaugeMetricFamily:
    """``conda_exporter_skipped_dirs{reason}`` over the roots of ``snapshot`` (and the envs given one by
    one), as their latest discovery found them; every reason always present, so alerts need no absent()."""
    family = GaugeMetricFamily(SKIPPED_DIRS, SKIPPED_DIRS_HELP, labels=("reason",))
    counts = SKIPPED.counts([*(r.path for r in snapshot.roots), ""] if snapshot else [])
    for reason in SKIP_REASONS:
        family.add_metric((reason,), counts.get(reason, 0))
    return family


def oldest_result(snapshot: Snapshot | None) -> GaugeMetricFamily:
    """``conda_exporter_oldest_result_timestamp_seconds``: when the least recently computed env result
    served was computed (an env's ``scanned_at``; after a warm restart possibly long before this
    process started). A timestamp, not an age, so the exposition only changes with the store and is
    rendered and compressed once per change; PromQL takes the age: ``time() - x``.

    Without envs (an empty root, or before the first scan) the family has no sample. There is then no
    env result that could be stale, and an absent series is what makes ``time() - x > N`` alerts and
    the age panel right: they stay silent or show no value. A 0 would read as 1970, a decades-old
    result that fires every staleness alert; the snapshot's completion time would pass off a scan as
    an env result and only repeat ``conda_exporter_last_scan_success_timestamp_seconds``, which
    already answers "are scans still completing" (and has its own alert).
    """
    family = GaugeMetricFamily(OLDEST_RESULT, OLDEST_RESULT_HELP)
    oldest = snapshot.oldest_scanned_at if snapshot is not None else None
    if oldest is not None:
        family.add_metric((), oldest)
    return family
