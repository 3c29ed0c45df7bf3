"""Daemon, state file: the published Snapshot and the change fingerprints, saved to and loaded from a file.

The format is JSON (never pickle: a state file must not be able to run code), versioned, and written
atomically (a temporary file in the same directory, fsync, rename). Dataclasses are encoded field by
field with their type's name, numpy arrays as base64 of their bytes with the dtype, so fields added to
the result types later round-trip without touching this module. A file that is missing, unreadable,
of another format version or of other roots is not used, and the load says why.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from typing import Any

import numpy as np

from exporter.model import (
    EnvContents,
    EnvUsage,
    OwnerReclaim,
    PkgsChunk,
    PkgsUsage,
    Reclaim,
    RootUsage,
    SharedInodes,
    Snapshot,
    StaleReclaim,
    TreeUsage,
    WalkError,
)

__all__ = ["FORMAT", "VERSION", "LoadedState", "load_state", "save_state"]

log = logging.getLogger(__name__)

FORMAT = "conda-env-exporter-state"
VERSION = 2  # 2: package-dir tables for what deleting envs frees
_TYPES: dict[str, type[Any]] = {
    cls.__name__: cls
    for cls in (Snapshot, RootUsage, EnvUsage, EnvContents, PkgsUsage, PkgsChunk, TreeUsage, SharedInodes, WalkError,
                Reclaim, OwnerReclaim, StaleReclaim)
}

Fingerprints = dict[tuple[str, str, str], list[list[int]]]
"""(target kind, path, root) -> the target's fingerprint stamps, as the daemon's poll mode computes them."""


@dataclasses.dataclass(frozen=True)
class LoadedState:
    """``result`` is ``ok``, ``missing``, ``corrupt``, ``version`` or ``roots``; the rest only with ``ok``."""

    result: str
    snapshot: Snapshot | None = None
    fingerprints: Fingerprints = dataclasses.field(default_factory=dict)


def _encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {"__type__": type(value).__name__, **fields}
    if isinstance(value, np.ndarray):
        return {"__ndarray__": base64.b64encode(value.tobytes()).decode("ascii"), "dtype": value.dtype.str}
    if isinstance(value, frozenset):
        return {"__frozenset__": sorted(_encode(v) for v in value)}
    if isinstance(value, tuple | list):
        return {"__tuple__": [_encode(v) for v in value]} if isinstance(value, tuple) else [_encode(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise TypeError(f"cannot save a {type(value).__name__} in a state file")


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "__ndarray__" in value:
        return np.frombuffer(base64.b64decode(value["__ndarray__"]), dtype=np.dtype(value["dtype"])).copy()
    if "__frozenset__" in value:
        return frozenset(_decode(v) for v in value["__frozenset__"])
    if "__tuple__" in value:
        return tuple(_decode(v) for v in value["__tuple__"])
    cls = _TYPES[value["__type__"]]  # KeyError for an unknown type: the file is not ours
    return cls(**{k: _decode(v) for k, v in value.items() if k != "__type__"})


def save_state(path: str, roots: Sequence[str], snapshot: Snapshot, fingerprints: Fingerprints) -> None:
    """Write the state file atomically; raises OSError when it cannot (the caller logs and goes on)."""
    document = {
        "format": FORMAT,
        "version": VERSION,
        "roots": list(roots),
        "snapshot": _encode(snapshot),
        "fingerprints": [[list(key), stamps] for key, stamps in sorted(fingerprints.items())],
    }
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".state-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(document, handle, separators=(",", ":"))
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


def _refusal(document: object, roots: Sequence[str], path: str) -> str | None:
    """Why a parsed document cannot be used (a LoadedState result), or None if it can."""
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        log.warning("ignoring state file %r: not a conda-env-exporter state file", path)
        return "corrupt"
    if document.get("version") != VERSION:
        log.warning("ignoring state file %r: format version %r, this exporter reads %d", path,
                    document.get("version"), VERSION)
        return "version"
    if document.get("roots") != list(roots):
        log.warning("ignoring state file %r: it was written for roots %r, not %r", path, document.get("roots"),
                    list(roots))
        return "roots"
    return None


def load_state(path: str, roots: Sequence[str]) -> LoadedState:
    """Read the state file for ``roots``; never raises for a bad file, the result says what was wrong."""
    try:
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
    except FileNotFoundError:
        return LoadedState("missing")
    except (OSError, ValueError, RecursionError) as exc:  # RecursionError: nested deeper than the parser goes
        log.warning("ignoring state file %r: cannot read it as JSON (%s)", path, exc)
        return LoadedState("corrupt")
    refusal = _refusal(document, roots, path)
    if refusal:
        return LoadedState(refusal)
    try:
        snapshot = _decode(document["snapshot"])
        if not isinstance(snapshot, Snapshot):
            raise TypeError("the snapshot is not a Snapshot")
        fingerprints: Fingerprints = {
            (str(k[0]), str(k[1]), str(k[2])): [list(map(int, s)) for s in stamps]
            for k, stamps in document.get("fingerprints", [])
        }
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as exc:
        log.warning("ignoring state file %r: its contents do not decode (%s)", path, exc)
        return LoadedState("corrupt")
    return LoadedState("ok", snapshot, fingerprints)
