"""Compatibility names for code outside the dashboard's own files: everything moved to :mod:`ui.data`.

The Experiments page (ui/app_pages/experiments.py) and tests/intelligence/test_dashboard_indexes.py still
import these from here; once they import them from ``ui.data`` (and ``intelligence.dashboard.security``),
this module goes. It holds no query and no cache of its own.
"""

from __future__ import annotations

from intelligence.dashboard.security import ENFORCED_WHERE
from ui.data import (
    effectiveness,
    effectiveness_frames,
    enhancements,
    experiment_history,
    experiments,
    parse_stats,
)

__all__ = [
    "ENFORCED_WHERE",
    "effectiveness",
    "effectiveness_frames",
    "enhancements",
    "experiment_history",
    "experiments",
    "parse_stats",
]
