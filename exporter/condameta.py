"""Read an env's ``conda-meta/``: which package installed which path, how, and when the env last changed.

``conda-meta/<name>-<version>-<build>.json`` is conda's PrefixRecord (rattler, mamba and pixi write the
same shape): ``name``, ``version``, ``build``, ``files`` (paths relative to the prefix),
``paths_data.paths[]`` (``_path``, ``path_type``, ``size_in_bytes``) and ``link`` (``source``: the
extracted package dir it came from; ``type``: 1/``hardlink``, 2/``softlink``, 3/``copy``).
A record that is unreadable or malformed is skipped and reported as a ``metadata`` error; it never
stops the env from being scanned.
"""

from __future__ import annotations

import json
import os
import pwd
from dataclasses import dataclass

from exporter.walk import METADATA_DIR, WalkError, error_kind

__all__ = ["EnvMetadata", "PackageRecord", "owner_name", "read_env_metadata"]

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

    def owned_paths(self) -> dict[str, int]:
        """Prefix-relative path -> index in ``packages`` of the package that installed it (the last
        record wins a clash)."""
        return {path: index for index, record in enumerate(self.packages) for path in record.files}


def _link_type(value: object) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return _LINK_TYPES.get(value)
    if isinstance(value, str) and value.lower() in _LINK_TYPES.values():
        return value.lower()
    return None


def _relocated_paths(paths_data: object) -> frozenset[str]:
    """Paths of ``paths_data.paths[]`` that carry a ``prefix_placeholder``."""
    entries = paths_data.get("paths") if isinstance(paths_data, dict) else None
    if not isinstance(entries, list):
        return frozenset()
    return frozenset(
        entry["_path"]
        for entry in entries
        if isinstance(entry, dict) and entry.get("prefix_placeholder") and isinstance(entry.get("_path"), str)
    )


def _parse_record(data: object, has_placeholders: bool = True) -> PackageRecord:
    """Build a PackageRecord from parsed JSON; ValueError if the shape is not a PrefixRecord.
    ``has_placeholders`` False skips looking for prefix-rewritten paths (the raw text had none)."""
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    name, version, build = data.get("name"), data.get("version"), data.get("build", "")
    if not isinstance(name, str) or not isinstance(version, str) or not isinstance(build, str):
        raise ValueError("name, version and build must be strings")
    files = data.get("files", [])
    # set(map(type, ...)) checks every element at C speed: records list thousands of files
    if not isinstance(files, list) or not set(map(type, files)) <= {str}:
        raise ValueError("files must be a list of strings")
    link = data.get("link") or {}
    if not isinstance(link, dict):
        raise ValueError("link must be an object")
    source = link.get("source")
    relocated = _relocated_paths(data.get("paths_data")) if has_placeholders else frozenset()
    return PackageRecord(
        name=name,
        version=version,
        build=build,
        files=tuple(files),
        link_type=_link_type(link.get("type")),
        source=source if isinstance(source, str) else None,
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
            packages.append(_parse_record(json.loads(raw), b"prefix_placeholder" in raw))
        except OSError as exc:
            errors.append(WalkError(error_kind(exc), path, exc.strerror or str(exc)))
        except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
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
