"""Helpers to read an exposition into plain dicts (parsing by prometheus_client's own parser)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

Sample = dict[tuple[tuple[str, str], ...], float]


def samples(text: str) -> dict[str, Sample]:
    """``{sample name: {sorted label items: value}}``."""
    out: dict[str, Sample] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def by_label(text: str, name: str, label: str) -> dict[str, float]:
    """Values of metric ``name`` keyed by one label's value."""
    return {dict(k)[label]: v for k, v in samples(text).get(name, {}).items()}
