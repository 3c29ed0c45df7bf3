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

import msgspec

from exporter.discover.smallfile import UnsafeFileError, read_small_file
from exporter.model import METADATA_DIR, WalkError
from exporter.scan.walk import error_kind

__all__ = [
    "MAX_ENV_FILES",
    "MAX_RECORD_BYTES",
    "MAX_RECORD_FILES",
    "EnvMetadata",
    "PackageRecord",
    "RecordLimitError",
    "owner_name",
    "parse_record",
    "read_env_metadata",
]

# conda's LinkType enum values, and the names rattler/pixi use for them
_LINK_TYPES = {1: "hardlink", 2: "softlink", 3: "copy", 4: "directory"}

MAX_RECORD_BYTES = 64 * 1024 * 1024
"""A record file larger than this is not read. Real records take about 200-300 bytes per file they list
(the path in ``files``, again in ``paths_data`` with its checksums): 190 on average in the benchmark's
generated roots, whose biggest, python's, lists 1,877 files in 343 kB; the biggest real packages
(pytorch, boost's headers, go's source tree) list some tens of thousands of files, 5-10 MB. 64 MiB holds
a quarter of a million files, several times that, and bounds what one read costs."""
MAX_RECORD_FILES = 250_000
"""A record listing more paths (in ``files``, or in ``paths_data`` when decoded) is skipped, before they
are built: within the byte limit a record of short names could list ten million, and each costs some
60 bytes once decoded (a record of 3 million short paths made a rescan peak at 643 MB)."""
MAX_ENV_FILES = 1_000_000
"""Records are skipped once those already read list this many paths in the env: what an env's records
hold stays under some 100 MB, with the walker's table of them. The largest real envs list a few hundred
thousand files."""


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


# Fields this module only reads when they make sense are kept raw (msgspec.Raw: a slice of the record,
# nothing built) and decoded only when they are what they should be: a record with an odd link or path
# entry still counts, as it did for conda, and an odd value (a huge array where a string belongs) costs
# no memory. name, version, build and files must be right.
_NULL = msgspec.Raw(b"null")


class _Link(msgspec.Struct):
    source: msgspec.Raw = _NULL
    type: msgspec.Raw = _NULL


class _PathEntry(msgspec.Struct):
    path: msgspec.Raw = msgspec.field(name="_path", default=_NULL)
    prefix_placeholder: msgspec.Raw = _NULL


class _PathsData(msgspec.Struct):
    paths: list[_PathEntry] = msgspec.field(default_factory=list)


class _Record(msgspec.Struct):
    """The fields of a PrefixRecord this module reads; any other field is skipped unparsed, and ``files``
    and ``paths_data`` are kept raw until their size is known."""

    name: str
    version: str
    build: str = ""
    files: msgspec.Raw = msgspec.Raw(b"[]")
    link: _Link | None = None
    extracted_package_dir: msgspec.Raw = _NULL
    url: msgspec.Raw = _NULL
    channel: msgspec.Raw = _NULL
    subdir: msgspec.Raw = _NULL
    paths_data: msgspec.Raw = _NULL


_DECODE_RECORD = msgspec.json.Decoder(_Record).decode
_DECODE_FILES = msgspec.json.Decoder(tuple[str, ...]).decode
_DECODE_PATHS_DATA = msgspec.json.Decoder(_PathsData | None).decode
_DECODE_SCALAR = msgspec.json.Decoder(str | int | float | bool | None).decode


class RecordLimitError(ValueError):
    """A record past one of the size limits (see :data:`MAX_RECORD_BYTES`); it is skipped."""


def _bounded_count(raw: msgspec.Raw, marker: bytes) -> int:
    """An upper bound on the items of the raw JSON array ``raw`` that each hold ``marker`` at least once
    (``"``: strings hold two), found without building any of them, nor copying ``raw`` whole."""
    view = memoryview(raw)
    if len(view) < 3 * MAX_RECORD_FILES:
        return len(view) // 3  # an item takes 3 bytes at least (``"",``): no need to look
    step = 1 << 20
    # an occurrence starting in a chunk is found in it: each chunk reaches len(marker) - 1 bytes further
    found = sum(bytes(view[i : i + step + len(marker) - 1]).count(marker) for i in range(0, len(view), step))
    return found // 2 if marker == b'"' else found


def _scalar(raw: msgspec.Raw) -> object:
    """The string, number, boolean or null ``raw`` holds; None for anything else (an array, an object)."""
    view = memoryview(raw)
    if not view or view[:1].tobytes() in (b"[", b"{"):
        return None
    try:
        return _DECODE_SCALAR(raw)
    except msgspec.DecodeError:
        return None


def _link_type(value: object) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return _LINK_TYPES.get(value)
    if isinstance(value, str) and value.lower() in _LINK_TYPES.values():
        return value.lower()
    return None


def _text(raw: msgspec.Raw) -> str | None:
    value = _scalar(raw)
    return value if isinstance(value, str) and value else None


def _relocated(raw: msgspec.Raw) -> frozenset[str]:
    """The paths of ``paths_data`` entries that name a prefix placeholder."""
    if _bounded_count(raw, b'"_path"') > MAX_RECORD_FILES:
        raise RecordLimitError(f"paths_data lists more than {MAX_RECORD_FILES} paths")
    paths_data = _DECODE_PATHS_DATA(raw)
    if paths_data is None:
        return frozenset()
    found = ((_scalar(e.path), _scalar(e.prefix_placeholder)) for e in paths_data.paths)
    return frozenset(path for path, placeholder in found if placeholder and isinstance(path, str))


def parse_record(raw: bytes) -> PackageRecord:
    """Decode one ``conda-meta/*.json`` file's bytes; ValueError (with the reason) if it is not a
    PrefixRecord: invalid JSON or UTF-8, or a field of the wrong type; :class:`RecordLimitError` if it
    lists more than :data:`MAX_RECORD_FILES` paths (found before they are built)."""
    try:
        record = _DECODE_RECORD(raw)
        if _bounded_count(record.files, b'"') > MAX_RECORD_FILES:
            raise RecordLimitError(f"lists more than {MAX_RECORD_FILES} files")
        files = _DECODE_FILES(record.files)
        # paths_data repeats every file with its checksum: decode it only when the text names a placeholder
        relocated = _relocated(record.paths_data) if b"prefix_placeholder" in raw else frozenset()
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
        raise ValueError(str(exc)) from None
    link = record.link or _Link()
    source = _scalar(link.source)
    return PackageRecord(
        name=record.name,
        version=record.version,
        build=record.build,
        files=files,
        link_type=_link_type(_scalar(link.type)),
        source=source if isinstance(source, str) else _text(record.extracted_package_dir),
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


def _read_record(meta_fd: int, name: str) -> bytes:
    """The bytes of record ``name`` in the open ``conda-meta/``: a regular file, not followed if a
    symlink, at most :data:`MAX_RECORD_BYTES` read. OSError, or RecordLimitError if refused."""
    try:
        return read_small_file(name, MAX_RECORD_BYTES, follow_symlinks=False, dir_fd=meta_fd)
    except UnsafeFileError as exc:
        raise RecordLimitError(str(exc)) from None


def _read_records(meta: str, meta_fd: int, errors: list[WalkError]) -> list[PackageRecord]:
    """Every record in the open ``conda-meta/`` at ``meta``, sorted by file name, within the limits."""
    packages: list[PackageRecord] = []
    listed = 0
    for name in sorted(n for n in os.listdir(meta_fd) if n.endswith(".json")):
        path = os.path.join(meta, name)
        try:
            record = parse_record(_read_record(meta_fd, name))
        except RecordLimitError as exc:
            errors.append(WalkError("metadata", path, f"record not read: {exc}"))
            continue
        except OSError as exc:
            errors.append(WalkError(error_kind(exc), path, exc.strerror or str(exc)))
            continue
        except (ValueError, RecursionError) as exc:
            errors.append(WalkError("metadata", path, f"not a conda package record: {exc}"))
            continue
        if listed + len(record.files) > MAX_ENV_FILES:
            errors.append(WalkError(
                "metadata", path, f"record not used: the env's records would list over {MAX_ENV_FILES} files"
            ))
            continue
        listed += len(record.files)
        packages.append(record)
    return packages


def read_env_metadata(prefix: str) -> EnvMetadata:
    """Read every record of ``prefix/conda-meta`` (sorted by file name), within the limits above;
    ``conda-meta`` itself is not followed if it is a symlink."""
    meta = os.path.join(prefix, METADATA_DIR)
    errors: list[WalkError] = []
    packages: list[PackageRecord] = []
    last: float | None = None
    try:
        meta_fd = os.open(meta, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        errors.append(WalkError(error_kind(exc), meta, exc.strerror or str(exc)))
    else:
        try:
            packages = _read_records(meta, meta_fd, errors)
        except OSError as exc:
            errors.append(WalkError(error_kind(exc), meta, exc.strerror or str(exc)))
        try:
            last = os.stat("history", dir_fd=meta_fd, follow_symlinks=False).st_mtime  # a symlink: its own
        except OSError:
            last = None
        finally:
            os.close(meta_fd)
    try:
        owner = owner_name(os.lstat(prefix).st_uid)
    except OSError:
        owner = ""
    return EnvMetadata(tuple(packages), tuple(errors), last, owner)
