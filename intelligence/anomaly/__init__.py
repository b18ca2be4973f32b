"""See docs/intelligence.md."""
