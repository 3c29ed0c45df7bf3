"""What deleting envs and cleaning the package cache would free: per env, per owner, for stale envs."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from exporter.discover.roots import label_value
from exporter.expose.families import Definitions, gauge_families
from exporter.expose.record_metrics import env_labels
from exporter.model import EnvUsage, OwnerReclaim, Reclaim, StaleReclaim
from exporter.snapshot.store import SnapshotStore

ENV_RECLAIMABLE = "conda_env_reclaimable_bytes"
ENV_RECLAIMABLE_HELP = (
    "Allocated bytes that deleting the env and then running 'conda clean --packages' would free, beyond "
    "what that clean alone frees (conda_pkgs_unreferenced_bytes); at least conda_env_unique_bytes."
)

OWNER_METRICS: Definitions[OwnerReclaim] = {
    "conda_owner_reclaimable_bytes": (
        "Allocated bytes that deleting all of the owner's envs in the root (the base env excepted) and then "
        "running 'conda clean --packages' would free, beyond what that clean alone frees.",
        lambda o: o.bytes,
    ),
    "conda_owner_envs": (
        "Envs of the owner in the root (user name, or uid without one), the base env excepted.",
        lambda o: o.envs,
    ),
}

STALE_METRICS: Definitions[StaleReclaim] = {
    "conda_root_stale_envs": (
        "Envs of the root whose last conda transaction is older than --stale.after (the base env excepted).",
        lambda s: s.envs,
    ),
    "conda_root_stale_reclaimable_bytes": (
        "Allocated bytes that deleting all stale envs of the root and then running 'conda clean --packages' "
        "would free, beyond what that clean alone frees.",
        lambda s: s.bytes,
    ),
}


class ReclaimCollector(Collector):
    """Renders the what-can-be-freed figures of the latest snapshot."""

    def __init__(self, store: SnapshotStore) -> None:
        self._store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        snapshot = self._store.snapshot
        reclaim = snapshot.reclaim if snapshot else Reclaim()
        envs: tuple[EnvUsage, ...] = snapshot.envs if snapshot else ()
        by_prefix = reclaim.by_prefix
        per_env: Definitions[EnvUsage] = {ENV_RECLAIMABLE: (ENV_RECLAIMABLE_HELP, lambda e: by_prefix.get(e.prefix))}
        yield from gauge_families(per_env, envs, ("root", "env", "prefix"), env_labels)
        yield from gauge_families(
            OWNER_METRICS, reclaim.owners, ("root", "owner"), lambda o: (label_value(o.root), label_value(o.owner))
        )
        yield from gauge_families(STALE_METRICS, reclaim.stale, ("root",), lambda s: (label_value(s.root),))
