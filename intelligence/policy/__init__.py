"""The policy engine: declarative rules (a YAML file for GitOps plus database policies from the
dashboard) compiled into one immutable :class:`PolicySnapshot`, evaluated per request and response
without I/O, hot-reloaded by :class:`PolicyWatcher`. See docs/policy.md.

Typical use in the exchange::

    decision = watcher.snapshot.evaluate_request(facts)        # RequestFacts
    throttled = watcher.throttler.check(decision, facts)       # in-process token buckets
    if decision.blocked: return refusal(decision.block, api)   # extproc.errors: in the API's error format
    changes = apply_request(decision, api, doc, provider=...)  # extproc.policy.apply: JSON edits made
"""

from .decision import (
    Alert,
    Block,
    FieldEdit,
    FiredRule,
    Mode,
    Phase,
    PromptEdit,
    Quarantine,
    RedactPlan,
    RequestDecision,
    ResponseDecision,
    Route,
    Throttle,
)
from .errors import PolicyError, PolicyIssue
from .facts import Detections, RequestFacts, ResponseFacts
from .parse import PolicyDocument, parse_policy, validate
from .snapshot import PolicySnapshot
from .throttle import Throttler, ThrottleResult
from .watcher import DEFAULT_POLICY_FILE, POLICY_FILE_ENV, PolicyWatcher, compose_snapshot, load_file, resolve_policy_path

__all__ = [
    "DEFAULT_POLICY_FILE",
    "POLICY_FILE_ENV",
    "Alert",
    "Block",
    "Detections",
    "FieldEdit",
    "FiredRule",
    "Mode",
    "Phase",
    "PolicyDocument",
    "PolicyError",
    "PolicyIssue",
    "PolicySnapshot",
    "PolicyWatcher",
    "PromptEdit",
    "Quarantine",
    "RedactPlan",
    "RequestDecision",
    "RequestFacts",
    "ResponseDecision",
    "ResponseFacts",
    "Route",
    "Throttle",
    "ThrottleResult",
    "Throttler",
    "compose_snapshot",
    "load_file",
    "parse_policy",
    "resolve_policy_path",
    "validate",
]
