"""The dashboard's SQL beyond the request log's and pattern memory's own repositories.

One repository per concern, each taking an ``AsyncConnection`` (or session) and never committing:

* :mod:`.alerts`: the ``events`` table (alert list, toasts, banner, acknowledgement)
* :mod:`.security`: blocked and redacted exchanges, detector hit rates, anomaly verdicts, the audit tail
* :mod:`.experiments`: enhancements, experiments with their exposure counts, experiment history
* :mod:`.spend`: the intelligence's own Claude calls per day
* :mod:`.live`: what the live feed reads (exchanges by id, since a time, the KPI window)

Traffic analytics (rollups, search, sessions) stay in :mod:`intelligence.analytics`. The UI (``ui/data.py``)
runs these through its database runner and caches the results; pages only lay out.
"""
