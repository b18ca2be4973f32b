"""The Claude client seam of the intelligence: settings, feature flags, client, spend, and a fake server.

See docs/intelligence.md.
"""

from .client import ClaudeClient, DailyBudget, StructuredResult
from .fake import FakeClaude, FakeFault
from .prices import call_cost
from .settings import ClaudeSettings, IntelligenceFlags, openrouter_model
from .spend import spend_summary

__all__ = [
    "ClaudeClient",
    "ClaudeSettings",
    "DailyBudget",
    "FakeClaude",
    "FakeFault",
    "IntelligenceFlags",
    "StructuredResult",
    "call_cost",
    "openrouter_model",
    "spend_summary",
]
