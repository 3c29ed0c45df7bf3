"""Re-accounting without walking: link deltas applied to other trees' tables, on hand-computed tables."""

from __future__ import annotations

import numpy as np

from exporter.account import BLOCK_SIZE, SharedInodes, TreeUsage, apply_link_delta, distinct_bytes, link_delta


def table(rows: list[tuple[int, int, int, int]], dev: int = 7) -> SharedInodes:
    """Rows of (ino, nlink, found, blocks)."""
    cols = [np.array([r[i] for r in rows], dtype=np.uint64) for i in range(4)]
    return SharedInodes(dev, *cols)


def usage(shared: SharedInodes, unique_blocks: int = 0, hardlinked: int = 0) -> TreeUsage:
    shared_blocks = int(shared.blocks.sum())
    return TreeUsage("/t", shared.dev, unique_blocks * BLOCK_SIZE, shared_blocks * BLOCK_SIZE, 0, 0, hardlinked,
                     hardlinked, 0, (), shared)


def test_deleting_an_env_makes_files_shared_only_with_it_unique() -> None:
    # inode 10: in env X (1 link) and env Y (1 link); inode 11: X, Y and the cache (3 links)
    x_old = table([(10, 2, 1, 8), (11, 3, 1, 16)])
    y = usage(table([(10, 2, 1, 8), (11, 3, 1, 16)]), unique_blocks=4, hardlinked=2)
    deltas = link_delta([x_old], [])
    assert list(deltas[7].ino) == [10, 11] and list(deltas[7].removed) == [1, 1]
    after = apply_link_delta(y, deltas)
    assert after.unique_bytes == (4 + 8) * BLOCK_SIZE  # inode 10 now has its only link in Y
    assert after.shared_bytes == 16 * BLOCK_SIZE
    assert after.hardlinked_files == 1  # inode 10 has nlink 1 now
    assert list(after.shared.nlink) == [1, 2]
    assert distinct_bytes([after]) == (12 + 16) * BLOCK_SIZE


def test_added_links_raise_nlink_and_can_move_a_row_back_to_shared() -> None:
    y = usage(table([(10, 2, 1, 8)]), hardlinked=1)
    private = apply_link_delta(y, link_delta([table([(10, 2, 1, 8)])], []))
    assert private.shared_bytes == 0 and private.unique_bytes == 8 * BLOCK_SIZE
    again = apply_link_delta(private, link_delta([], [table([(10, 2, 1, 8)])]))
    assert again.shared_bytes == 8 * BLOCK_SIZE and again.unique_bytes == 0 and again.hardlinked_files == 1


def test_rescan_with_unchanged_links_is_no_change_and_other_devices_untouched() -> None:
    t = table([(10, 3, 1, 8)])
    y = usage(table([(10, 3, 1, 8)]))
    assert len(link_delta([t], [t])[7].ino) == 0
    assert apply_link_delta(y, link_delta([t], [t])) is y
    other_dev = usage(table([(10, 2, 1, 8)], dev=9))
    assert apply_link_delta(other_dev, link_delta([t], [])) is other_dev
