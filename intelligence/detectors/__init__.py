"""Security detectors for the gateway: PII, secrets, prompt injection / jailbreak.

Modules (import what you use; nothing heavy is imported here):

- normalize:  canonical text for detection (Unicode tricks, encoded payloads), bounded work
- pii:        PiiDetector.find(text) -> [Span]  (Presidio recognisers, no downloaded model)
- secrets:    SecretDetector.find(text) -> [Span]  (detect-secrets plugins, in memory)
- redact:     Redaction (reversible placeholders), StreamRedactor, StreamRestorer
- injection:  InjectionDetector.scan([(source, text), ...]) -> InjectionVerdict
- heuristics, junk, context, memory, classifier: the injection layers
- train:      ``python -m intelligence.detectors.train`` rebuilds the shipped classifier and memory

A policy stage calls, per request: ``injection.default_injection_detector().scan(segments)`` and
``Redaction().redact(text, spans)``; per streamed response chunk: ``StreamRedactor.feed(delta)``
(redact) or ``StreamRestorer.feed(delta)`` (put the request's values back).
"""
