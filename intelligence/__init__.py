"""Knowledge and persistence: the request log, pattern memory, Claude. Imports nothing of extproc."""
