"""The per-env view that the page (``/``) and ``report --format table|json|csv`` share: one row per env
with the fields both show, the sort keys of ``report --sort``, IEC units, and the env CSV.

Every byte figure is allocated bytes (as ``du -B1``), every time a Unix time in seconds, every count a
count: the values of the same-named ``conda_env_*`` series of ``/metrics``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import astuple, dataclass, fields
from typing import Any

from exporter.discover.roots import label_value
from exporter.model import Snapshot

__all__ = ["DEFAULT_SORT", "SORT_KEYS", "EnvRow", "env_csv", "env_rows", "human_bytes", "sort_rows"]

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def human_bytes(value: float) -> str:
    """``1536`` -> ``1.5 KiB``: IEC units (powers of 1024) as the dashboards show bytes, one decimal
    from KiB on, whole bytes below."""
    size = float(value)
    for unit in _UNITS:
        if abs(size) < 1024 or unit == _UNITS[-1]:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class EnvRow:
    """One env as the page and the report show it. ``root``, ``name``, ``prefix`` and ``owner`` are the
    names as the file system spells them (undecodable bytes as surrogates, see ``os.fsdecode``); the
    ``label_*`` properties give them as ``/metrics`` labels spell them, which is how the page and the
    CSV show them. ``last_transaction`` is None for an env without ``conda-meta/history``."""

    root: str
    name: str
    prefix: str
    owner: str
    python_version: str
    unique_bytes: int
    shared_bytes: int
    apparent_bytes: int
    reclaimable_bytes: int | None
    files: int
    hardlinked_files: int
    packages: int
    untracked_bytes: int
    copied_bytes: int
    last_transaction: float | None
    scan_errors: int

    @property
    def disk_bytes(self) -> int:
        """``du -s -B1`` of the prefix: unique plus shared."""
        return self.unique_bytes + self.shared_bytes

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


FIELDS = tuple(f.name for f in fields(EnvRow))


def env_rows(snapshot: Snapshot) -> list[EnvRow]:
    """The snapshot's envs in the order of :data:`DEFAULT_SORT`."""
    reclaim = snapshot.reclaim.by_prefix
    rows = [
        EnvRow(
            root=e.root, name=e.name, prefix=e.prefix, owner=e.contents.owner,
            python_version=e.contents.python_version, unique_bytes=e.usage.unique_bytes,
            shared_bytes=e.usage.shared_bytes, apparent_bytes=e.usage.apparent_bytes,
            reclaimable_bytes=reclaim.get(e.prefix), files=e.usage.files, hardlinked_files=e.usage.hardlinked_files,
            packages=e.contents.packages, untracked_bytes=e.contents.untracked_bytes,
            copied_bytes=e.contents.copied_bytes, last_transaction=e.contents.last_transaction,
            scan_errors=len(e.usage.errors),
        )
        for e in snapshot.envs
    ]
    return sort_rows(rows, DEFAULT_SORT)


@dataclass(frozen=True)
class SortKey:
    """How ``report --sort NAME`` orders envs: by ``value``, biggest first when ``descending``; ties by prefix."""

    value: Callable[[EnvRow], Any]
    descending: bool
    help: str


def _text(get: Callable[[EnvRow], str]) -> Callable[[EnvRow], Any]:
    return lambda row: get(row).casefold()


SORT_KEYS: dict[str, SortKey] = {
    "unique": SortKey(lambda r: r.unique_bytes, True, "what deleting the env frees at once, biggest first"),
    "reclaimable": SortKey(lambda r: r.reclaimable_bytes or 0, True,
                           "what deleting it and cleaning the cache frees, biggest first"),
    "shared": SortKey(lambda r: r.shared_bytes, True, "bytes shared with the cache or other envs, biggest first"),
    "disk": SortKey(lambda r: r.disk_bytes, True, "unique + shared (du -s), biggest first"),
    "apparent": SortKey(lambda r: r.apparent_bytes, True, "size without hardlinks (du -s -b -l), biggest first"),
    "files": SortKey(lambda r: r.files, True, "files, most first"),
    "packages": SortKey(lambda r: r.packages, True, "conda packages, most first"),
    "untracked": SortKey(lambda r: r.untracked_bytes, True, "bytes no package installed, biggest first"),
    "copied": SortKey(lambda r: r.copied_bytes, True, "bytes installed as copies, biggest first"),
    "errors": SortKey(lambda r: r.scan_errors, True, "unreadable paths, most first"),
    # Oldest first: the envs nobody touched for longest are the ones to ask about. No history: first.
    "last-transaction": SortKey(lambda r: r.last_transaction if r.last_transaction is not None else float("-inf"),
                                False, "last conda transaction, oldest first"),
    "name": SortKey(_text(lambda r: r.name), False, "env name, A to Z"),
    "owner": SortKey(_text(lambda r: r.owner), False, "owner, A to Z"),
    "prefix": SortKey(_text(lambda r: r.prefix), False, "prefix, A to Z"),
    "root": SortKey(_text(lambda r: r.root), False, "root, A to Z"),
}
DEFAULT_SORT = "unique"


def sort_rows(rows: Sequence[EnvRow], key: str) -> list[EnvRow]:
    """``rows`` in the order of ``SORT_KEYS[key]`` (a KeyError for an unknown key), ties by prefix."""
    sort = SORT_KEYS[key]
    by_prefix = sorted(rows, key=lambda r: r.prefix)
    return sorted(by_prefix, key=sort.value, reverse=sort.descending)  # stable: ties stay by prefix


def env_csv(rows: Sequence[EnvRow]) -> str:
    """One header row (the :class:`EnvRow` field names, as in the JSON) and one row per env. Names are
    spelled as ``/metrics`` labels spell them (valid UTF-8, undecodable bytes as ``\\xNN``); a
    missing value (no reclaim figure, no history) is an empty cell; times are Unix seconds."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(FIELDS)
    for row in rows:
        values = astuple(row)
        writer.writerow([label_value(v) if isinstance(v, str) else "" if v is None else v for v in values])
    return out.getvalue()
