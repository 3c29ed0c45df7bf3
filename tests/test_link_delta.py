"""Re-accounting without walking: link deltas applied to other trees' tables, on hand-computed tables."""

from __future__ import annotations

import numpy as np
import pytest

import exporter.account.links
from exporter.account.delta import apply_link_delta, link_delta
from exporter.account.links import distinct_bytes, distinct_bytes_update
from exporter.model import BLOCK_SIZE, SharedInodes, TreeUsage, narrow_unsigned


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


@pytest.mark.parametrize("reuse_limit", [0, 10**9], ids=["from-the-change", "counted-again"])
def test_totals_after_deleting_an_env_by_hand(monkeypatch: pytest.MonkeyPatch, reuse_limit: int) -> None:
    monkeypatch.setattr(exporter.account.links, "REUSE_LIMIT", reuse_limit)
    # X: 4 private blocks, inode 10 (8 blocks, shared with Y only), inode 11 (16 blocks, X, Y and cache)
    x = usage(table([(10, 2, 1, 8), (11, 3, 1, 16)]), unique_blocks=4)
    y = usage(table([(10, 2, 1, 8), (11, 3, 1, 16)]), unique_blocks=2)
    cache = usage(table([(11, 3, 1, 16)]), unique_blocks=100)
    before = distinct_bytes([x, y, cache])
    assert before == (4 + 2 + 100 + 8 + 16) * BLOCK_SIZE
    deltas = link_delta([x.shared], [])
    y_after, cache_after = apply_link_delta(y, deltas), apply_link_delta(cache, deltas)
    after = distinct_bytes_update(before, [(x, None), (y, y_after), (cache, cache_after)])
    assert after == (2 + 8 + 100 + 16) * BLOCK_SIZE  # X's 4 blocks freed; inode 10 now private to Y
    assert after == distinct_bytes([y_after, cache_after])


def test_totals_after_a_rescan_that_links_a_private_cache_file_by_hand(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(exporter.account.links, "REUSE_LIMIT", 0)
    # the cache's inode 20 (32 blocks) was private to it; an install links it into env E
    env_before = usage(table([]), unique_blocks=5)
    cache_before = usage(table([]), unique_blocks=32 + 50)
    before = distinct_bytes([env_before, cache_before])
    env_after = usage(table([(20, 2, 1, 32)]), unique_blocks=5)
    cache_after = usage(table([(20, 2, 1, 32)]), unique_blocks=50)
    after = distinct_bytes_update(before, [(env_before, env_after), (cache_before, cache_after)])
    assert after == before == (5 + 50 + 32) * BLOCK_SIZE  # one more link, not one more copy


def test_totals_when_a_tree_moves_to_another_device_by_hand(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(exporter.account.links, "REUSE_LIMIT", 0)
    # the same inode number on two devices is two inodes
    env_before = usage(table([(30, 2, 1, 8)], dev=7))
    other = usage(table([(30, 2, 1, 8)], dev=7))
    before = distinct_bytes([env_before, other])
    env_after = usage(table([(30, 2, 1, 8)], dev=9))
    after = distinct_bytes_update(before, [(env_before, env_after), (other, other)])
    assert before == 8 * BLOCK_SIZE and after == 16 * BLOCK_SIZE == distinct_bytes([env_after, other])


def narrow_table(rows: list[tuple[int, int, int, int]], dev: int = 7) -> SharedInodes:
    """Rows of (ino, nlink, found, blocks), each column narrowed as the walk's accounting stores it."""
    return SharedInodes(dev, *(narrow_unsigned(np.array([r[i] for r in rows], dtype=np.uint64)) for i in range(4)))


def test_counts_take_the_narrowest_unsigned_dtype_that_holds_them() -> None:
    cases = [([], np.uint8), ([0, 255], np.uint8), ([256], np.uint16), ([65535], np.uint16), ([65536], np.uint32),
             ([2**32 - 1], np.uint32), ([2**32], np.uint64), ([2**64 - 1], np.uint64)]
    for values, dtype in cases:
        column = narrow_unsigned(np.array(values, dtype=np.uint64))
        assert column.dtype == dtype and column.tolist() == values


def test_links_added_past_a_narrow_column_widen_it() -> None:
    # inode 10 has 255 links (nlink fits uint8), one of them in Y; a rescanned tree now holds 3 more
    y = usage(narrow_table([(10, 255, 1, 8), (11, 2, 1, 16)]), hardlinked=2)
    assert y.shared.nlink.dtype == np.uint8
    after = apply_link_delta(y, link_delta([], [table([(10, 258, 3, 8)])]))
    assert after.shared.nlink.tolist() == [258, 2]  # not 2: 258 wrapped round in a uint8
    assert after.shared_bytes == y.shared_bytes and after.unique_bytes == y.unique_bytes
    assert y.shared.nlink.tolist() == [255, 2]  # the table it came from is never written


def test_totals_over_tables_of_different_dtypes_are_exact() -> None:
    # inode 10 is 70000 blocks in X (uint32 column) and, modified since, 200 in Y (uint8): the fewest count;
    # X's inode numbers need 64 bits, Y's 8
    x = usage(narrow_table([(10, 3, 1, 70000), (12, 2, 1, 3), (2**40, 2, 1, 5)]), unique_blocks=1)
    y = usage(narrow_table([(10, 3, 1, 200), (11, 2, 1, 2**33)]), unique_blocks=2)
    assert x.shared.blocks.dtype == np.uint32 and y.shared.blocks.dtype == np.uint64
    assert x.shared.ino.dtype == np.uint64 and y.shared.ino.dtype == np.uint8
    assert distinct_bytes([x, y]) == (1 + 2 + 200 + 3 + 5 + 2**33) * BLOCK_SIZE
    # Y deleted: inode 10 keeps X's blocks, inode 11 goes
    after = distinct_bytes_update(distinct_bytes([x, y]), [(x, apply_link_delta(x, link_delta([y.shared], []))),
                                                            (y, None)])
    assert after == (1 + 70000 + 3 + 5) * BLOCK_SIZE
