"""The one way our collectors turn a table of metric definitions and a list of objects into gauges."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TypeVar

from prometheus_client.core import GaugeMetricFamily

T = TypeVar("T")

Definitions = Mapping[str, tuple[str, Callable[[T], float | None]]]
"""metric name -> (help text, value of one object, or None to leave that object out)."""


def gauge_families(
    definitions: Definitions[T],
    items: Iterable[T],
    labels: Sequence[str],
    label_values: Callable[[T], Sequence[str]],
) -> Iterator[GaugeMetricFamily]:
    """One gauge family per definition, with a sample per item; every family is yielded, even empty."""
    items = list(items)
    for name, (help_text, value) in definitions.items():
        family = GaugeMetricFamily(name, help_text, labels=labels)
        for item in items:
            number = value(item)
            if number is not None:
                family.add_metric(label_values(item), number)
        yield family
