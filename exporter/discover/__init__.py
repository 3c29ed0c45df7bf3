"""Stage 1, discover: find conda roots and lay out what in them is an env, a package cache, or neither.

``roots`` (roots, envs, caches, pixi projects, single envs) reads ``condarc`` (conda's own
configuration of extra env and package dirs). Nothing here reads a file's contents beyond
configuration, and nothing follows a symlink.
"""
