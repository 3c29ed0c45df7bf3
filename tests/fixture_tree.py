"""The end-to-end fixture root: the demo root plus every awkward shape the accounting must handle."""

from __future__ import annotations

import os
from pathlib import Path

from exporter.demo import build_demo_root


def build_fixture_root(root: Path) -> Path:
    """Demo root + a nested deep dir, a non-env dir in envs/, a file hardlinked between two envs only,
    a file hardlinked twice inside one env, a dangling symlink, a stray file in envs/ and an index cache."""
    build_demo_root(root)
    envs = root / "envs"
    deep = envs / "web" / "share" / "a" / "b" / "c" / "d"
    deep.mkdir(parents=True)
    (deep / "data.bin").write_bytes(b"x" * 12_345)
    (envs / "not-an-env" / "stuff").mkdir(parents=True)
    (envs / "not-an-env" / "stuff" / "file").write_bytes(b"y" * 5000)
    (envs / "README").write_text("stray file in envs/\n")
    # shared between two envs and nowhere else
    (envs / "web" / "shared-with-analysis.dat").write_bytes(b"z" * 20_000)
    os.link(envs / "web" / "shared-with-analysis.dat", envs / "analysis" / "shared-with-web.dat")
    # two names of one inode inside one env: unique to it
    (envs / "analysis" / "twice-a").write_bytes(b"t" * 9000)
    os.link(envs / "analysis" / "twice-a", envs / "analysis" / "twice-b")
    os.symlink("/nonexistent/target", envs / "web" / "dangling")
    # downloaded repodata: what `conda clean --index-cache` removes
    (root / "pkgs" / "cache").mkdir()
    (root / "pkgs" / "cache" / "497deca9.json").write_bytes(b"{}" * 30_000)
    # leftovers: an extraction that never finished, an interrupted download
    (root / "pkgs" / "scipy-1.13.0-py311_0" / "lib").mkdir(parents=True)
    (root / "pkgs" / "scipy-1.13.0-py311_0" / "lib" / "half.so").write_bytes(b"h" * 33_000)
    (root / "pkgs" / "scipy-1.13.0-py311_0.conda.partial").write_bytes(b"p" * 21_000)
    return root
