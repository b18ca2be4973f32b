"""Policy throttles shared across gateway replicas (table ``policy_throttle_counts``).

The hot-path side is intelligence/policy/throttle.py (``Throttler``); see docs/policy.md, "Throttling".
"""

from .counts import DbWindowStore, WindowDelta, window_of
from .shared import SharedThrottleCounts, Window, WindowStore

__all__ = ["DbWindowStore", "SharedThrottleCounts", "Window", "WindowDelta", "WindowStore", "window_of"]
