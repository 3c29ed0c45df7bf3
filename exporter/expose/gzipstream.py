"""gzip for /metrics without compressing per scrape: a cached compressed prefix, a per-scrape tail.

The exposition is the same for every scrape between two changes except its last line (the age of
the oldest result). The prefix is compressed once per change and ended with a sync flush (byte
aligned, no final block); each scrape appends its tail as one final *stored* deflate block and the
gzip trailer (CRC-32 continued from the prefix's, total length). The result is a single ordinary
gzip member (RFC 1951 section 3.2.4, RFC 1952), which every gzip reader accepts.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

__all__ = ["GzipPrefix", "accepts_gzip", "compress_prefix", "finish"]

# magic, deflate, no flags, no mtime, no extra flags, OS unknown
_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
_MAX_STORED = 0xFFFF  # bytes of one stored block


@dataclass(frozen=True)
class GzipPrefix:
    """``data``: gzip header and the deflate blocks of a text, byte-aligned, not final; ``crc`` and
    ``size``: CRC-32 and length of that text."""

    data: bytes
    crc: int
    size: int


def compress_prefix(text: bytes, level: int = 6) -> GzipPrefix:
    """Compress ``text`` as the start of a gzip member that :func:`finish` completes."""
    deflate = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
    data = _HEADER + deflate.compress(text) + deflate.flush(zlib.Z_SYNC_FLUSH)
    return GzipPrefix(data, zlib.crc32(text), len(text))


def finish(prefix: GzipPrefix, tail: bytes) -> bytes:
    """The gzip member of ``prefix``'s text followed by ``tail`` (at most 65535 bytes, stored as is)."""
    if len(tail) > _MAX_STORED:
        raise ValueError(f"a stored tail holds at most {_MAX_STORED} bytes, not {len(tail)}")
    block = b"\x01" + struct.pack("<HH", len(tail), len(tail) ^ 0xFFFF) + tail  # BFINAL=1, BTYPE=00
    trailer = struct.pack("<II", zlib.crc32(tail, prefix.crc), (prefix.size + len(tail)) & 0xFFFFFFFF)
    return prefix.data + block + trailer


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an ``Accept-Encoding`` header value admits gzip (listed, or ``*``, with q above 0)."""
    quality: dict[str, float] = {}
    for item in accept_encoding.split(","):
        coding, *params = (part.strip() for part in item.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if coding:
            quality[coding.lower()] = q
    return quality.get("gzip", quality.get("x-gzip", quality.get("*", 0.0))) > 0
