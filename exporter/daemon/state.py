"""Daemon, state file: the published Snapshot and the change fingerprints, saved to and loaded from a file.

The format is JSON (never pickle: a state file must not be able to run code), versioned, and written
atomically (a temporary file in the same directory, fsync, rename). The result dataclasses of
:mod:`exporter.model` are the schema: msgspec encodes them field by field (a numpy column as its dtype's
name and the base64 of its bytes, ``"uint16:AQACAA=="``) and decodes the whole document against their type
annotations in one strict call, so a field added to a result type later round-trips without touching this
module, and a number where a string goes, a list where an object goes, a dtype its annotation does not
allow (a column annotated uint64 is uint64; one annotated unsigned is uint8, 16, 32 or 64) or a missing
field is refused.

A file is read only after these checks, each refusing it with the reason as the load result:

* ``too_large``: bigger than :data:`MAX_BYTES` (checked with ``fstat`` on the open file, before reading);
  a FIFO or device is ``corrupt`` (never read, since it could block or never end);
* ``too_deep``: arrays/objects nested deeper than :data:`MAX_DEPTH` (counted on the bytes before parsing,
  so no parser recursion limit is ever met);
* ``corrupt``: not JSON, or not a conda-env-exporter state file; ``version``: another format version;
  ``roots``: written for other roots;
* ``invalid``: ours, but a field has the wrong type, a count or size is negative or past 2**64, a time is
  not finite, or columns that must pair row by row have different lengths.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import logging
import math
import os
import re
import tempfile
import typing
from collections.abc import Sequence
from typing import Literal

import msgspec
import numpy as np

from exporter.discover.smallfile import FileTooLargeError, NotRegularFileError, read_small_file
from exporter.model import PkgsChunk, SharedInodes, Snapshot

__all__ = ["FORMAT", "MAX_BYTES", "MAX_DEPTH", "VERSION", "LoadedState", "load_state", "max_depth", "save_state"]

log = logging.getLogger(__name__)

FORMAT = "conda-env-exporter-state"
VERSION = 5  # 5: columns name their dtype (counts narrowed); 4: reflink extent rows settled from extent_within_bytes

MAX_BYTES = 128 * 1024 * 1024
"""Largest state file read. The file costs ~13 bytes per hardlinked path (the shared-inode columns, each
in its narrowest dtype, as base64): 8.6 MB for the 100-env ``wide`` benchmark tree (692k shared rows),
14 MB for the ``large`` one (1.1M). 128 MiB covers ~10M hardlinked paths; loading peaks near twice the
file's size, so a bigger file could get the exporter OOM-killed at start under the shipped 512 MiB memory
limit (README, Deploy). Past it a full scan runs instead, which is always correct."""

MAX_DEPTH = 32
"""Deepest nesting of arrays and objects accepted. The deepest the schema goes is 9 (document, snapshot,
pkgs, a cache, chunks, a chunk, usage, errors, an error); anything past 32 is not ours."""

StateResult = Literal["ok", "missing", "corrupt", "version", "roots", "invalid", "too_large", "too_deep"]
Fingerprints = dict[tuple[str, str, str], list[list[int]]]
"""(target kind, path, root) -> the target's fingerprint stamps, as the daemon's poll mode computes them."""

_U64_LIMIT = 2**64


class _Header(msgspec.Struct):
    """The fields that say whose file this is; read before the rest is checked."""

    format: str = ""
    version: int = -1
    roots: list[str] = []


TargetKey = tuple[Literal["env", "pkgs", "root"], str, str]


class _Document(msgspec.Struct, forbid_unknown_fields=True):
    format: str
    version: int
    roots: list[str]
    snapshot: Snapshot
    fingerprints: list[tuple[TargetKey, list[tuple[int, int]]]]


@dataclasses.dataclass(frozen=True)
class LoadedState:
    """``result`` says how the load went (see the module doc); the rest only with ``ok``."""

    result: StateResult
    snapshot: Snapshot | None = None
    fingerprints: Fingerprints = dataclasses.field(default_factory=dict)


_UNSIGNED = {np.dtype(t).name: np.dtype(t) for t in (np.uint8, np.uint16, np.uint32, np.uint64)}


def _enc_hook(value: object) -> object:
    if isinstance(value, np.ndarray):
        return f"{value.dtype.name}:{base64.b64encode(value.tobytes()).decode('ascii')}"
    raise NotImplementedError(f"cannot save a {type(value).__name__} in a state file")


def _allowed_dtypes(kind: type) -> dict[str, np.dtype[typing.Any]]:
    """The dtypes a column annotated ``kind`` may have, by name: the one it names, or for an abstract
    unsigned annotation (a narrowed count column, :func:`exporter.model.narrow_unsigned`) each unsigned one."""
    scalar = typing.get_args(typing.get_args(kind)[1])[0]
    if typing.get_origin(scalar) is np.unsignedinteger or scalar is np.unsignedinteger:
        return _UNSIGNED
    dtype = np.dtype(scalar)
    return {dtype.name: dtype}


def _dec_hook(kind: type, value: object) -> object:
    """A numpy column from ``"<dtype>:<base64>"``, the dtype one its annotation allows (the file only chooses
    among those)."""
    if typing.get_origin(kind) is not np.ndarray or not isinstance(value, str):
        raise NotImplementedError(f"expected a base64 column for {kind!r}")
    name, _, text = value.partition(":")
    dtype = _allowed_dtypes(kind).get(name)
    if dtype is None:
        raise ValueError(f"a column of dtype {name[:16]!r}, where {kind!r} goes")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"a column is not base64: {exc}") from None
    if len(raw) % dtype.itemsize:
        raise ValueError(f"a {dtype} column of {len(raw)} bytes")
    return np.frombuffer(raw, dtype=dtype).copy()


_ENCODER = msgspec.json.Encoder(enc_hook=_enc_hook)
_HEADER = msgspec.json.Decoder(_Header)
_DECODER = msgspec.json.Decoder(_Document, dec_hook=_dec_hook, strict=True)


def save_state(path: str, roots: Sequence[str], snapshot: Snapshot, fingerprints: Fingerprints) -> None:
    """Write the state file atomically; raises OSError when it cannot (the caller logs and goes on)."""
    document = _Document(
        format=FORMAT, version=VERSION, roots=list(roots), snapshot=snapshot,
        fingerprints=[(typing.cast(TargetKey, key), [(s[0], s[1]) for s in stamps])
                      for key, stamps in sorted(fingerprints.items())],
    )
    data = _ENCODER.encode(document)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".state-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)  # the rename itself must survive a crash
    finally:
        os.close(dir_fd)


_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')  # a JSON string (its brackets are not structure)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_DEPTH_STEP = np.zeros(256, np.int8)
_DEPTH_STEP[list(b"[{")] = 1
_DEPTH_STEP[list(b"]}")] = -1


def max_depth(data: bytes) -> int:
    """How deep arrays and objects nest in the JSON text ``data`` (0 for a scalar), brackets inside strings
    not counted; linear time, no recursion, memory bounded by 1 MiB steps."""
    brackets = _STRING.sub(b"", data).translate(None, _NOT_BRACKETS)
    deepest, level = 0, 0
    step = 1 << 20
    for start in range(0, len(brackets), step):
        levels = np.cumsum(_DEPTH_STEP[np.frombuffer(brackets[start:start + step], np.uint8)], dtype=np.int64)
        deepest = max(deepest, level + int(levels.max()))
        level += int(levels[-1])
    return deepest


class _RefusedError(Exception):
    """The file is not used; ``result`` says why (its message was logged)."""

    def __init__(self, result: StateResult) -> None:
        super().__init__(result)
        self.result: StateResult = result


def _read_bounded(path: str) -> bytes:
    """The file's bytes; :class:`_RefusedError` ``too_large``, or ``corrupt`` for a non-regular file, without
    reading it. Raises FileNotFoundError and other OSErrors."""
    try:
        return read_small_file(path, MAX_BYTES)
    except FileTooLargeError as exc:
        log.warning("ignoring state file: %s", exc)
        raise _RefusedError("too_large") from None
    except NotRegularFileError as exc:
        log.warning("ignoring state file: %s", exc)
        raise _RefusedError("corrupt") from None


def _refusal(header: _Header, roots: Sequence[str], path: str) -> StateResult | None:
    """Why a file whose header is ``header`` cannot be used, or None if it can."""
    if header.format != FORMAT:
        log.warning("ignoring state file %r: not a conda-env-exporter state file", path)
        return "corrupt"
    if header.version != VERSION:
        log.warning("ignoring state file %r: format version %r, this exporter reads %d", path, header.version, VERSION)
        return "version"
    if header.roots != list(roots):
        log.warning("ignoring state file %r: it was written for roots %r, not %r", path, header.roots, list(roots))
        return "roots"
    return None


def _check_values(value: object, where: str = "$") -> None:
    """Raise ValueError unless every count and size in ``value`` (a result dataclass, recursively) is in
    [0, 2**64), every time finite, and paired columns have equal lengths. Recursion is bounded by the
    schema's depth, not by the file."""
    if isinstance(value, bool | str | None | np.ndarray):
        return
    if isinstance(value, int):
        if not 0 <= value < _U64_LIMIT:
            raise ValueError(f"{where} is {value}: a count or size must be in [0, 2**64)")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where} is {value}")
        return
    if isinstance(value, tuple | list | frozenset):
        for i, item in enumerate(value):
            _check_values(item, f"{where}[{i}]")
        return
    if isinstance(value, SharedInodes):
        lengths = {len(value.ino), len(value.nlink), len(value.found), len(value.blocks)}
        # (not np.diff: unsigned, it wraps a step down round to a huge step up)
        if len(lengths) != 1 or not bool(np.all(value.ino[1:] > value.ino[:-1])):
            raise ValueError(f"{where}: its columns differ in length or its inodes are not sorted")
    if isinstance(value, PkgsChunk):
        dirs = len(value.package_dirs)
        if len(value.dir_private_bytes) not in (0, dirs) or len(value.cleanable) not in (0, dirs) or (
            len(value.row_package) not in (0, len(value.usage.shared))
            or bool(np.any((value.row_package < -1) | (value.row_package >= dirs)))
        ):
            raise ValueError(f"{where}: its package tables do not match its package dirs")
    if dataclasses.is_dataclass(value):
        for field in dataclasses.fields(value):
            _check_values(getattr(value, field.name), f"{where}.{field.name}")


def _load(path: str, roots: Sequence[str]) -> _Document:
    """The checked document; :class:`_RefusedError` with the reason when the file cannot be used."""
    data = _read_bounded(path)
    depth = max_depth(data)
    if depth > MAX_DEPTH:
        log.warning("ignoring state file %r: nested %d levels deep, a state file nests at most %d", path, depth,
                    MAX_DEPTH)
        raise _RefusedError("too_deep")
    try:
        header = _HEADER.decode(data)
    except msgspec.DecodeError as exc:  # not JSON, or not an object with our header's types
        log.warning("ignoring state file %r: cannot read it as JSON (%s)", path, exc)
        raise _RefusedError("corrupt") from None
    refusal = _refusal(header, roots, path)
    if refusal:
        raise _RefusedError(refusal)
    try:
        document = _DECODER.decode(data)
        _check_values(document.snapshot, "$.snapshot")
    except (msgspec.DecodeError, ValueError) as exc:  # msgspec.ValidationError is a DecodeError
        log.warning("ignoring state file %r: its contents do not match the result types (%s)", path, exc)
        raise _RefusedError("invalid") from None
    return document


def load_state(path: str, roots: Sequence[str]) -> LoadedState:
    """Read the state file for ``roots``; never raises for a bad file, the result says what was wrong
    (and a warning was logged)."""
    try:
        document = _load(path, roots)
    except FileNotFoundError:
        return LoadedState("missing")
    except OSError as exc:
        log.warning("ignoring state file %r: cannot read it (%s)", path, exc)
        return LoadedState("corrupt")
    except _RefusedError as refused:
        return LoadedState(refused.result)
    fingerprints: Fingerprints = {key: [list(s) for s in stamps] for key, stamps in document.fingerprints}
    return LoadedState("ok", document.snapshot, fingerprints)
