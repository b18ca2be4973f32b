"""Names shared by the detectors, the judge and the store (no imports, so every module can use them)."""

from __future__ import annotations

INJECTION_UNCERTAIN = "injection_uncertain"  # injection score in the band the gateway let through but doubts
POLICY_MONITOR = "policy_monitor"  # a monitor-mode policy rule matched (it would have acted)
NOVEL_PROMPT = "novel_prompt"  # far from every pattern the client used before
VOLUME_SPIKE = "volume_spike"  # requests per window far above the client's baseline
TOKEN_SPIKE = "token_spike"  # tokens per request far above the client's baseline
ERROR_SPIKE = "error_spike"  # error rate far above the client's baseline
NEW_TOOL = "new_tool"  # a tool the client never offered before
NEW_MODEL = "new_model"  # a model the client never used before

DETECTORS = (INJECTION_UNCERTAIN, POLICY_MONITOR, NOVEL_PROMPT, VOLUME_SPIKE, TOKEN_SPIKE, ERROR_SPIKE, NEW_TOOL, NEW_MODEL)
# Suspicions about what a prompt says. Only these are matched against (and added to) the verdict
# memory: a confirmed volume spike says nothing about the next prompt that happens to look alike.
PROMPT_DETECTORS = frozenset({INJECTION_UNCERTAIN, POLICY_MONITOR, NOVEL_PROMPT})

LABELS = ("attack", "false_positive")
VERDICT_OF_LABEL = {"attack": "malicious", "false_positive": "benign"}
LABEL_OF_VERDICT = {"malicious": "attack", "benign": "false_positive"}

# the job's resume point in job_cursors
CURSOR_NAME = "anomaly-job"
ACTOR = "anomaly-judge"
