"""The intelligence process: the background jobs that think about traffic, off the hot path.

`python -m intelligence.jobs` (started by `llmproxy up`) runs, as the feature flags allow:
- PatternLabelJob: asks Claude for readable pattern labels;
- CandidateJob: finds failing patterns and asks Claude for candidate enhancements;
- ExperimentEvaluator: computes A/B statistics and auto-promotes or rolls back;
- AnomalyJob: local statistical detectors, then verdicts (memory, Claude, or local);
- SpikeMonitor: fleet error-rate and p95-latency alerts against LLMPROXY_ALERT_* thresholds;
- ControlServer: the authenticated gRPC control API (WatchEvents, experiments, verdicts, feedback).

Alert webhooks are delivered by the sidecars (intelligence/events/webhook.py), which already hold the
events of their own requests; row locks keep replicas from sending an event twice.
"""
