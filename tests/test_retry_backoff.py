"""The back-off of retries after transient errors (exporter.daemon.retry), a pure rule: times are given."""

from __future__ import annotations

from exporter.daemon.retry import RETRY_FIRST, RETRY_MAX, Retries
from exporter.daemon.targets import Target

ENV = Target("env", "/r/envs/a", "/r")
OTHER = Target("env", "/r/envs/b", "/r")


def test_back_off_doubles_up_to_the_most_and_ends_on_a_clean_walk() -> None:
    retries = Retries()
    now, waits = 1000.0, []
    for _ in range(10):  # each retry's walk meets the error again
        retries.scanned({ENV}, {ENV.path}, now)
        due = retries.next_due()
        waits.append(due - now)
        assert retries.take_due(due - 0.001) == []
        assert retries.take_due(due) == [ENV]
        assert retries.take_due(due) == []  # handed out once per failure
        now = due
    assert RETRY_FIRST == 5.0 and RETRY_MAX == 600.0
    assert waits == [5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0, 600.0, 600.0, 600.0]

    retries.scanned(set(), {OTHER.path}, now)  # a walk of another tree changes nothing for this one
    assert len(retries) == 1
    retries.scanned(set(), {ENV.path}, now)  # walked without a transient error: done
    assert len(retries) == 0
    assert retries.next_due() == float("inf")
    retries.scanned({ENV}, {ENV.path}, now)  # a new failure starts again from the first wait
    assert retries.next_due() - now == 5.0
