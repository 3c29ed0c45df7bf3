"""Scan options for tests that scan in-process: the settings' defaults, with overrides."""

from __future__ import annotations

from typing import Any

from exporter.config import Settings
from exporter.model import ScanOptions


def scan_options(**overrides: Any) -> ScanOptions:
    """``ScanOptions`` from the default settings (the one place defaults live), then ``overrides``."""
    defaults = ScanOptions.from_settings(Settings())
    return ScanOptions(**{**defaults.__dict__, **overrides})
