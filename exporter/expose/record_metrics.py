"""Per-environment metrics from conda's own records: packages, untracked and copied files, owner."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from exporter.discover.roots import label_value
from exporter.expose.families import Definitions, gauge_families
from exporter.model import EnvUsage
from exporter.snapshot.store import SnapshotStore

LABELS = ("root", "env", "prefix")
INFO = "conda_env_info"
INFO_HELP = "Always 1; labels say who owns the env (user name, or uid without one) and its Python version."
INFO_LABELS = (*LABELS, "owner", "python_version")

PACKAGE_BYTES = "conda_env_package_bytes"
PACKAGE_BYTES_HELP = (
    "Allocated bytes of the paths a package installed in the env, shared ones included; only the "
    "biggest packages per env, and only with --collect.packages."
)

# name -> (help, value of one env or None when the env has no such value)
METRICS: Definitions[EnvUsage] = {
    "conda_env_packages": (
        "Packages installed in the env, by its conda-meta records.",
        lambda e: e.contents.packages,
    ),
    "conda_env_untracked_bytes": (
        "Allocated bytes of files no conda package installed (pip installs, caches, user files).",
        lambda e: e.contents.untracked_bytes,
    ),
    "conda_env_untracked_files": (
        "Non-directory paths no conda package installed (conda-meta/ excluded).",
        lambda e: e.contents.untracked_files,
    ),
    "conda_env_copied_bytes": (
        "Allocated bytes of files packages installed as copies instead of hardlinks (on a filesystem that "
        "can reflink, only what such copies do not share with other files).",
        lambda e: e.contents.copied_bytes,
    ),
    "conda_env_reflinked_bytes": (
        "Bytes of the env's single-link files that share their data by reflink (copies pixi, uv or "
        "cp --reflink made on XFS or btrfs), each byte once; 0 where the filesystem cannot reflink.",
        lambda e: e.usage.reflinked_bytes,
    ),
    "conda_env_last_transaction_timestamp_seconds": (
        "Unix time of the env's last conda transaction (last change of conda-meta/history).",
        lambda e: e.contents.last_transaction,
    ),
}


def env_labels(env: EnvUsage) -> tuple[str, str, str]:
    """The identity labels of an env, made safe for the exposition."""
    return label_value(env.root), label_value(env.name), label_value(env.prefix)


class ContentsCollector(Collector):
    """Renders the conda-record metrics of every env in the latest snapshot."""

    def __init__(self, store: SnapshotStore) -> None:
        self._store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        snapshot = self._store.snapshot
        envs = snapshot.envs if snapshot else ()
        yield from gauge_families(METRICS, envs, LABELS, env_labels)
        packages = GaugeMetricFamily(PACKAGE_BYTES, PACKAGE_BYTES_HELP, labels=(*LABELS, "package"))
        for env in envs:
            for package, size in env.contents.top_packages:
                packages.add_metric((*env_labels(env), label_value(package)), size)
        yield packages
        info = GaugeMetricFamily(INFO, INFO_HELP, labels=INFO_LABELS)
        for env in envs:
            info.add_metric((*env_labels(env), label_value(env.contents.owner), env.contents.python_version), 1)
        yield info
