"""The debounce rule on its own: times are given, so no thread, clock or sleep is involved."""

from __future__ import annotations

import math

from exporter.daemon.debounce import DirtyTargets
from exporter.daemon.targets import Target

ENV = Target("env", "/r/envs/a", "/r")
OTHER = Target("env", "/r/envs/b", "/r")
ROOT = Target("root", "/r", "/r")


def test_a_target_is_due_once_quiet_for_the_debounce() -> None:
    dirty = DirtyTargets(debounce=2.0)
    assert dirty.next_due() == math.inf and dirty.take_due(100.0) == {}
    dirty.mark(ENV, "event", now=10.0)
    assert dirty.next_due() == 12.0
    assert dirty.take_due(11.9) == {}
    assert dirty.take_due(12.0) == {ENV: "event"}
    assert len(dirty) == 0


def test_each_change_restarts_the_quiet_period() -> None:
    dirty = DirtyTargets(debounce=2.0)
    dirty.mark(ENV, "event", now=10.0)
    dirty.mark(ENV, "event", now=11.5)
    assert dirty.take_due(12.0) == {}
    assert dirty.next_due() == 13.5
    assert dirty.take_due(13.5) == {ENV: "event"}


def test_a_poll_does_not_delay_a_pending_change() -> None:
    dirty = DirtyTargets(debounce=2.0)
    dirty.mark(ENV, "poll", now=10.0, restart=False)
    dirty.mark(ENV, "poll", now=11.0, restart=False)
    assert dirty.take_due(12.0) == {ENV: "poll"}


def test_targets_become_due_independently() -> None:
    dirty = DirtyTargets(debounce=1.0)
    dirty.mark(ENV, "event", now=0.0)
    dirty.mark(OTHER, "state", now=0.5)
    assert dirty.take_due(1.2) == {ENV: "event"}
    assert OTHER in dirty and ENV not in dirty
    assert dirty.take_due(1.5) == {OTHER: "state"}


def test_a_change_during_a_batch_requeues_only_the_changed_target() -> None:
    dirty = DirtyTargets(debounce=1.0)
    dirty.mark(ENV, "event", now=0.0)
    assert dirty.take_due(1.0) == {ENV: "event"}
    dirty.begin_batch()
    dirty.mark(ROOT, "event", now=1.5)  # elsewhere, while the batch's walks run
    dirty.end_batch(walked={"/r/envs/a", "/r/pkgs"})
    assert ROOT in dirty and ENV not in dirty  # the batch is not queued again
    assert dirty.take_due(2.5) == {ROOT: "event"}
    assert dirty.take_due(10.0) == {}
    # what the batch walked may have seen part of ROOT's change: ROOT's rescan gets it as suspects, once
    assert dirty.take_suspects({ROOT: "event"}) == {"/r/envs/a", "/r/pkgs"}
    assert dirty.take_suspects({ROOT: "event"}) == frozenset()


def test_churn_elsewhere_never_requeues_a_finished_batch() -> None:
    """The fault: every event during a batch queued the whole batch again, so a batch holding a vanished env
    (rescanned with a walk of its whole cache) ran again and again while another env kept changing."""
    dirty = DirtyTargets(debounce=1.0)
    vanished = Target("env", "/r/envs/gone", "/r")
    dirty.mark(vanished, "event", now=0.0)
    now, batches = 1.0, []
    for _ in range(10):
        batch = dirty.take_due(now)
        batches.append(set(batch))
        dirty.begin_batch()
        dirty.mark(OTHER, "event", now=now + 0.5)  # churn: OTHER changes during every batch
        dirty.end_batch(walked={t.path for t in batch})
        now += 2.0
    assert sum(vanished in b for b in batches) == 1
    assert all(b == {OTHER} for b in batches[1:])


def test_a_quiet_batch_is_not_marked_again() -> None:
    dirty = DirtyTargets(debounce=1.0)
    dirty.mark(ENV, "event", now=0.0)
    batch = dirty.take_due(1.0)
    dirty.begin_batch()
    dirty.end_batch(walked={t.path for t in batch})
    assert len(dirty) == 0
    dirty.mark(OTHER, "event", now=3.0)  # after the batch: no effect on the finished batch
    assert ENV not in dirty
    assert dirty.take_suspects({OTHER: "event"}) == frozenset()


def test_a_target_changed_again_during_its_batch_keeps_its_later_time() -> None:
    dirty = DirtyTargets(debounce=1.0)
    dirty.mark(ENV, "event", now=0.0)
    batch = dirty.take_due(1.0)
    dirty.begin_batch()
    dirty.mark(ENV, "event", now=5.0)
    dirty.end_batch(walked={t.path for t in batch})
    assert dirty.next_due() == 6.0


def test_a_full_scan_drops_earlier_suspects() -> None:
    dirty = DirtyTargets(debounce=1.0)
    dirty.begin_batch()
    dirty.mark(ROOT, "event", now=0.5)
    dirty.end_batch(walked={"/r/envs/a"})
    dirty.begin_batch()  # a reconcile: everything walked again, ROOT not changing meanwhile
    dirty.end_batch(walked={"/r/envs/a", "/r/envs/b"}, full=True)
    assert dirty.take_suspects({ROOT: "event"}) == frozenset()
    assert ROOT in dirty  # still to rescan: a full scan does not take marks away by itself


def test_pending_tells_a_trigger_apart() -> None:
    dirty = DirtyTargets(debounce=1.0)
    dirty.mark(ENV, "state", now=0.0)
    assert dirty.pending("state") and not dirty.pending("event")
    dirty.take_due(1.0)
    assert not dirty.pending("state")
