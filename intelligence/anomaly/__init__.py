"""Anomaly verdicts: local detectors raise suspicions, a judge (verdict memory, Claude, or local rules)
decides, and the response publishes events, audits and may quarantine a gateway key. See docs/anomalies.md.

Modules: kinds (names), detectors + stats (suspicions), judge, response, store (contract API:
list_verdicts, confirm_verdict, memory_hit_rate), job (AnomalyJob), calibrate (memory threshold).
Nothing is imported here so that loading the ORM models stays cheap.
"""
