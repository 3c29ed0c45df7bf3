"""Read an env's ``conda-meta/``: which package installed which path, how, and when the env last changed.

``conda-meta/<name>-<version>-<build>.json`` is conda's PrefixRecord (rattler, mamba and pixi write the
same shape): ``name``, ``version``, ``build``, ``files`` (paths relative to the prefix),
``paths_data.paths[]`` (``_path``, ``path_type``, ``size_in_bytes``) and ``link`` (``source``: the
extracted package dir it came from; ``type``: 1/``hardlink``, 2/``softlink``, 3/``copy``); and, to find
that dir when ``link.source`` is missing, ``extracted_package_dir``, ``url``, ``channel`` and ``subdir``
(a mamba >= 2.6 cache keeps it under ``<channel>/<subdir>/``).
A record that is unreadable or malformed is skipped and reported as a ``metadata`` error; it never
stops the env from being scanned.

Records are decoded with msgspec into typed structs that name only the fields used here: it checks
their shape while decoding and skips everything else (checksums, dependency lists) without building
it, about nine times faster than ``json.loads`` on a large env, where conda-meta can hold 10 MB.
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass
from typing import Any

import msgspec

from exporter.model import METADATA_DIR, WalkError
from exporter.scan.walk import error_kind

__all__ = ["EnvMetadata", "PackageRecord", "owner_name", "parse_record", "read_env_metadata"]

# conda's LinkType enum values, and the names rattler/pixi use for them
_LINK_TYPES = {1: "hardlink", 2: "softlink", 3: "copy", 4: "directory"}


@dataclass(frozen=True)
class PackageRecord:
    """One installed package. ``files`` are prefix-relative paths; ``link_type`` is ``hardlink``,
    ``softlink``, ``copy`` or ``None`` when the record does not say."""

    name: str
    version: str
    build: str
    files: tuple[str, ...]
    link_type: str | None
    source: str | None
    # Where the package was downloaded from (the archive's URL), its channel (a name or a URL) and
    # subdir (platform), when the record says: they place its dir in a hierarchical cache.
    url: str | None = None
    channel: str | None = None
    subdir: str | None = None
    # Paths whose text had the build prefix rewritten at install: copies by necessity, never relinkable.
    relocated: frozenset[str] = frozenset()

    @property
    def dist(self) -> str:
        return f"{self.name}-{self.version}-{self.build}"


@dataclass(frozen=True)
class EnvMetadata:
    """What conda-meta says of one env. ``last_transaction`` is the Unix time (seconds) of the last
    change to ``conda-meta/history``, or ``None`` without one."""

    packages: tuple[PackageRecord, ...]
    errors: tuple[WalkError, ...]
    last_transaction: float | None
    owner: str

    @property
    def python_version(self) -> str:
        """Version of the env's ``python`` package, or ``""`` when it has none."""
        return next((p.version for p in self.packages if p.name == "python"), "")


# Fields this module only reads when they make sense are typed Any: a record with an odd link or
# path entry still counts, as it did for conda; name, version, build and files must be right.
class _Link(msgspec.Struct):
    source: Any = None
    type: Any = None


class _PathEntry(msgspec.Struct):
    path: Any = msgspec.field(name="_path", default=None)
    prefix_placeholder: Any = None


class _PathsData(msgspec.Struct):
    paths: list[_PathEntry] = msgspec.field(default_factory=list)


class _Record(msgspec.Struct):
    """The fields of a PrefixRecord this module reads; any other field is skipped unparsed."""

    name: str
    version: str
    build: str = ""
    files: tuple[str, ...] = ()
    link: _Link | None = None
    extracted_package_dir: Any = None
    url: Any = None
    channel: Any = None
    subdir: Any = None


class _RecordWithPaths(_Record):
    paths_data: _PathsData | None = None


# paths_data repeats every file with its checksum: decode it only when the raw text names a placeholder.
_DECODE_RECORD = msgspec.json.Decoder(_Record).decode
_DECODE_RECORD_WITH_PATHS = msgspec.json.Decoder(_RecordWithPaths).decode


def _link_type(value: object) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return _LINK_TYPES.get(value)
    if isinstance(value, str) and value.lower() in _LINK_TYPES.values():
        return value.lower()
    return None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def parse_record(raw: bytes) -> PackageRecord:
    """Decode one ``conda-meta/*.json`` file's bytes; ValueError (with the reason) if it is not a
    PrefixRecord: invalid JSON or UTF-8, or a field of the wrong type."""
    try:
        if b"prefix_placeholder" in raw:
            record: _Record = _DECODE_RECORD_WITH_PATHS(raw)
        else:
            record = _DECODE_RECORD(raw)
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
        raise ValueError(str(exc)) from None
    link = record.link or _Link()
    paths_data = getattr(record, "paths_data", None)
    relocated = (
        frozenset(e.path for e in paths_data.paths if e.prefix_placeholder and isinstance(e.path, str))
        if paths_data is not None
        else frozenset()
    )
    return PackageRecord(
        name=record.name,
        version=record.version,
        build=record.build,
        files=record.files,
        link_type=_link_type(link.type),
        source=link.source if isinstance(link.source, str) else _text(record.extracted_package_dir),
        url=_text(record.url),
        channel=_text(record.channel),
        subdir=_text(record.subdir),
        relocated=relocated,
    )


def owner_name(uid: int) -> str:
    """User name of ``uid``, or the number as text when the system does not know it."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def read_env_metadata(prefix: str) -> EnvMetadata:
    """Read every record of ``prefix/conda-meta`` (sorted by file name)."""
    meta = os.path.join(prefix, METADATA_DIR)
    errors: list[WalkError] = []
    packages: list[PackageRecord] = []
    try:
        names = sorted(n for n in os.listdir(meta) if n.endswith(".json"))
    except OSError as exc:
        errors.append(WalkError(error_kind(exc), meta, exc.strerror or str(exc)))
        names = []
    for name in names:
        path = os.path.join(meta, name)
        try:
            with open(path, "rb") as handle:
                raw = handle.read()
            packages.append(parse_record(raw))
        except OSError as exc:
            errors.append(WalkError(error_kind(exc), path, exc.strerror or str(exc)))
        except (ValueError, RecursionError) as exc:
            errors.append(WalkError("metadata", path, f"not a conda package record: {exc}"))
    try:
        last: float | None = os.stat(os.path.join(meta, "history")).st_mtime
    except OSError:
        last = None
    try:
        owner = owner_name(os.lstat(prefix).st_uid)
    except OSError:
        owner = ""
    return EnvMetadata(tuple(packages), tuple(errors), last, owner)
