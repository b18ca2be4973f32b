"""The request guard: detectors, then the policy, then its edits, on the typed request.

Runs in the request-body phase, after routing and before tool-name aliasing. It fails closed: a
detector or policy error blocks the request with a 503 rather than letting an unscreened request out.
Everything here is in-process and bounded (no database, no network); the embedding layer of the
injection detector is off inline unless LLMPROXY_INJECTION_EMBEDDINGS=1, because it costs tens of
milliseconds per prompt on a 2-core machine (docs/security.md).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Mapping

from .errors import gateway_error
from .policy import Detections, Redactions, RequestDecision, RequestFacts, apply_request, redact_text
from .providers.segments import rewrite_texts, segments
from .wire import Immediate

log = logging.getLogger("llmproxy.guard")


@dataclass
class GuardOutcome:
    decision: RequestDecision | None = None
    detections: Detections | None = None
    immediate: Immediate | None = None
    redacted: int = 0  # strings changed by redaction
    edits: list[str] = field(default_factory=list)
    set_headers: dict[str, str] = field(default_factory=dict)
    strip_headers: list[str] = field(default_factory=list)

    @property
    def changed_body(self) -> bool:
        return bool(self.redacted or self.edits)

    def record(self) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        if self.decision is not None:
            doc["policy"] = self.decision.to_record()
        if self.detections is not None:
            doc["detections"] = self.detections.to_dict()
        if self.edits:
            doc["edits"] = self.edits
        if self.redacted:
            doc["redacted_strings"] = self.redacted
        return doc


class Guard:
    def __init__(self, policy: Any, *, secrets: Any, pii: Any, injection: Any, audit: Any = None,
                 quarantine: Callable[[str, str, str], None] | None = None):
        self.policy = policy  # .snapshot -> PolicySnapshot, .throttler -> Throttler
        self.secrets, self.pii, self.injection = secrets, pii, injection
        self.audit = audit  # AuditWriter (submit never blocks) or None
        self.quarantine = quarantine  # (key_id, reason, rule) -> schedules the quarantine off the hot path

    def check_request(self, *, request_id: str, api: str | None, doc: dict, provider: str | None, path: str, method: str,
                      key: Any, client: str | None, client_addr: str | None, size: int, headers: Mapping[str, str],
                      now: datetime) -> GuardOutcome:
        try:
            return self._check(request_id, api, doc, provider, path, method, key, client, client_addr, size, headers, now)
        except Exception:
            log.exception("request %s: guard failed; refusing (fail closed)", request_id)
            return GuardOutcome(immediate=gateway_error(503, "llmproxy: the request could not be screened; retry", api=api,
                                                        code="guard_error"))

    def _check(self, request_id, api, doc, provider, path, method, key, client, client_addr, size, headers, now) -> GuardOutcome:
        snapshot = self.policy.snapshot
        wanted = snapshot.detectors
        segs = segments(api, doc)
        texts = [t for _, t in segs]
        secret_spans = [s for t in texts for s in self.secrets.find(t)] if "secrets" in wanted else []
        pii_spans = [s for t in texts for s in self.pii.find(t)] if "pii" in wanted and self.pii is not None else []
        verdict = self.injection.scan(segs) if wanted & {"injection", "flags"} and segs else None
        detections = Detections.from_results(pii=pii_spans, secrets=secret_spans, injection=verdict)
        facts = RequestFacts(api=api, path=path, method=method, provider=provider, model=doc.get("model"),
                             key_id=getattr(key, "id", None), key_name=getattr(key, "name", None), client=client,
                             client_addr=client_addr, request_bytes=size, headers=headers, detections=detections, now=now)
        decision = snapshot.evaluate_request(facts)
        out = GuardOutcome(decision=decision, detections=detections)
        throttled = self.policy.throttler.check(decision, facts)
        if decision.fired and self.audit is not None:
            self.audit.submit("policy_decision", request_id, decision.to_record(), "sidecar")
        self._respond(decision, request_id, key)
        block = decision.immediate(api)
        if block is None and getattr(throttled, "block", None) is not None:
            block = throttled.block.immediate(api)
        if block is not None:
            out.immediate = block
            return out
        plan = decision.redact
        if plan is not None and plan.selectors and (secret_spans or pii_spans):
            state = Redactions.new()

            def redact(text: str) -> str:
                spans = [("secrets", s) for s in self.secrets.find(text)]
                if "pii" in plan.categories and self.pii is not None:
                    spans += [("pii", s) for s in self.pii.find(text)]
                return redact_text(plan, text, spans, state) if spans else text

            out.redacted = rewrite_texts(doc, redact)
        out.edits = apply_request(decision, api or "", doc, provider=provider)
        out.set_headers = dict(decision.set_headers)
        out.strip_headers = list(decision.strip_headers)
        return out

    def _respond(self, decision: RequestDecision, request_id: str, key: Any) -> None:
        """Automated response: alerts go to the log and the audit chain; a quarantine is carried out
        in the background (the key cache then refuses the key on every replica via NOTIFY)."""
        for alert in decision.alerts:
            log.warning("ALERT %s: %s (rule %s, request %s)", alert.severity, alert.message, alert.rule, request_id)
            if self.audit is not None:
                self.audit.submit("automated_action", request_id, {"action": "alert", **alert.to_dict()}, "sidecar")
        q = decision.quarantine
        if q is None:
            return
        key_id = getattr(key, "id", None)
        if key_id is None:
            log.warning("rule %s asks to quarantine the key of request %s, but no gateway key was used", q.rule, request_id)
            return
        if self.quarantine is not None:
            self.quarantine(key_id, q.reason, q.rule)
