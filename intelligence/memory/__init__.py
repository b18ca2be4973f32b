"""Pattern memory: prompt embeddings in pgvector, grouped online into patterns with counts and success rates.

Entry points: :class:`~intelligence.memory.worker.PatternWorker` (background embedding and
assignment), :func:`~intelligence.memory.worker.add_feedback` (POST /v1/feedback),
:class:`~intelligence.memory.lookup.PatternLookup` (inline lookup on the hot path) and
:class:`~intelligence.memory.repository.PatternRepository` (every query). See docs/patterns.md.
"""
