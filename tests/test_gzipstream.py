"""The cached-prefix gzip of /metrics, checked by GNU gzip and Python's gzip reader."""

from __future__ import annotations

import gzip
import random
import subprocess
import zlib

import pytest

from exporter.expose.gzipstream import accepts_gzip, compress_prefix, finish

TEXTS = {
    "empty": (b"", b""),
    "empty-tail": (b"# HELP x y\nx 1.0\n" * 500, b""),
    "exposition-like": (b"# HELP x y\n" + b"".join(b'x{env="e%d"} %d.0\n' % (i, i * 4096) for i in range(5000)),
                        b"conda_exporter_oldest_result_age_seconds 12.345\n"),
    "incompressible": (random.Random(1).randbytes(300_000), random.Random(2).randbytes(0xFFFF)),
}


@pytest.mark.parametrize("name", sorted(TEXTS))
def test_prefix_and_tail_make_one_gzip_member_that_gnu_gzip_reads(name: str) -> None:
    head, tail = TEXTS[name]
    member = finish(compress_prefix(head), tail)
    gnu = subprocess.run(["gzip", "-dc"], input=member, capture_output=True, check=True)
    assert gnu.stdout == head + tail and gnu.stderr == b""  # no "trailing garbage" warning either
    assert gzip.decompress(member) == head + tail
    strict = zlib.decompressobj(wbits=31)  # one member, nothing after it
    assert strict.decompress(member) == head + tail and strict.eof and strict.unused_data == b""
    if len(head) > 10_000 and name != "incompressible":
        assert len(member) < len(head) // 2  # it is really compressed


def test_the_prefix_is_reused_for_many_tails() -> None:
    prefix = compress_prefix(b"a" * 100_000)
    for i in range(3):
        assert gzip.decompress(finish(prefix, b"tail %d\n" % i)) == b"a" * 100_000 + b"tail %d\n" % i


def test_a_tail_too_long_for_one_stored_block_is_refused() -> None:
    with pytest.raises(ValueError, match="65535"):
        finish(compress_prefix(b"x"), b"y" * 0x10000)


@pytest.mark.parametrize(
    ("header", "accepted"),
    [("gzip", True), ("GZIP", True), ("gzip, deflate, br", True), ("br;q=1.0, gzip;q=0.8", True),
     ("x-gzip", True), ("*", True), ("", False), ("identity", False), ("deflate", False),
     ("gzip;q=0", False), ("gzip;q=0, *", False), ("gzip;q=bogus", False), ("*;q=0", False)],
)
def test_accept_encoding(header: str, accepted: bool) -> None:
    assert accepts_gzip(header) is accepted
