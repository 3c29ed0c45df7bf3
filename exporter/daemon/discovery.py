"""Daemon, discovery: the roots the daemon keeps up to date, and how each is discovered again."""

from __future__ import annotations

from exporter.discover.roots import Discovery, RootLayout, discover_external, discover_root

__all__ = ["RootSet"]

EMPTY = RootLayout(path="", envs=(), pkgs_dirs=(), envs_container=None, ignored_dirs=())


class RootSet:
    """What ``discovery`` names, as the daemon sees it: ``roots`` are the root paths, then ``""`` for
    the envs outside any root (``--env``, ``environments.txt``) when there can be any."""

    def __init__(self, discovery: Discovery) -> None:
        self.discovery = discovery
        self.roots: list[str] = list(discovery.roots)
        if discovery.extra_envs or discovery.environments_txt:
            self.roots.append("")

    def discover(self, root: str, layouts: dict[str, RootLayout]) -> RootLayout:
        """The layout of ``root`` now; for ``""``, the envs that no root in ``layouts`` holds."""
        if root:
            return discover_root(root)
        known = [layouts[r] for r in self.discovery.roots if r in layouts]
        return discover_external(self.discovery.extra_prefixes(), known) or EMPTY

    def discover_all(self) -> dict[str, RootLayout]:
        """Every root's layout now, by root path."""
        layouts: dict[str, RootLayout] = {}
        for root in self.roots:  # "" comes last: it needs the others
            layouts[root] = self.discover(root, layouts)
        return layouts
