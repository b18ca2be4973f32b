"""Credentials in text: Yelp's detect-secrets plugins, run on strings in memory.

detect-secrets is built to scan files; its regex plugins expose their patterns (``denylist``) and
their own validation (``analyze_string``), which is all an in-memory scan needs. Spans come from the
plugin's patterns; a match counts only if the plugin itself yields that value (so the JWT plugin's
structural check still applies).

Added here, because the library lacks them (each with its reason):
- Anthropic keys (``sk-ant-api03-...``): no plugin exists.
- OpenAI project / service-account / admin keys (``sk-proj-...``): the OpenAI plugin only knows
  keys that carry the ``T3BlbkFJ`` marker.
- Google API keys (``AIza...``): no plugin; they authenticate Gemini.
- Hugging Face tokens (``hf_...``): no plugin; common next to model code.
- AWS secret access keys written without quotes (``aws_secret_access_key=...``): the plugin's
  pattern requires quotes, as in source files.
- PEM private key blocks: the plugin reports the ``BEGIN`` line; redaction needs the whole block.
- High-entropy tokens without quotes: the library's entropy plugins only look inside quoted
  strings (source code); prompts paste keys bare. Its Shannon entropy function and default limits
  are reused.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from re import Pattern

from .redact import Redaction
from .spans import Span, resolve_overlaps

MAX_SECRET_SCAN_CHARS = 1_000_000

# Plugins left out of the inline scan, and why.
_SKIPPED_PLUGINS = {
    "Public IP (ipv4)",  # an IP address is personal data, handled by the PII detector
    "Secret Keyword",  # its patterns depend on the file type; in prose they flag every "password:"
    "Base64 High Entropy String",  # quoted strings only; replaced by the bare-token scan below
    "Hex High Entropy String",
}

_EXTRA_PATTERNS: tuple[tuple[str, Pattern[str], float], ...] = (
    ("ANTHROPIC_API_KEY", re.compile(r"\bsk-ant-[a-z]+\d{2}-[A-Za-z0-9_\-]{32,}"), 1.0),
    ("OPENAI_API_KEY", re.compile(r"\bsk-(?:proj|svcacct|admin|None)-[A-Za-z0-9_\-]{20,}"), 1.0),
    ("GOOGLE_API_KEY", re.compile(r"\bAIza[0-9A-Za-z_\-]{35}\b"), 1.0),
    ("HUGGINGFACE_TOKEN", re.compile(r"\bhf_[A-Za-z0-9]{34,}\b"), 1.0),
    (
        "AWS_SECRET_KEY",
        re.compile(r"aws.{0,20}?(?:secret|key).{0,20}?[=:]\s*([0-9a-zA-Z/+]{40})(?![0-9a-zA-Z/+])", re.IGNORECASE),
        1.0,
    ),
)
_PEM_BLOCK = re.compile(r"-----BEGIN ((?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?)-----.*?(?:-----END \1-----|\Z)", re.DOTALL)
_BARE_TOKEN = re.compile(r"(?<![A-Za-z0-9+/=_\-])[A-Za-z0-9+/=_\-]{24,256}(?![A-Za-z0-9+/=_\-])")
_HEX_TOKEN = re.compile(r"(?<![0-9A-Za-z])[0-9a-fA-F]{32,64}(?![0-9A-Za-z])")
# A hex string is a key only when introduced as one: bare hex is usually a hash or an id.
_KEY_CONTEXT = re.compile(r"(?:key|token|secret|passw|pwd|api|auth|credential|bearer)", re.IGNORECASE)
BASE64_ENTROPY_LIMIT = 4.5  # detect-secrets' default for Base64HighEntropyString
HEX_ENTROPY_LIMIT = 3.0  # and for HexHighEntropyString


def kind_from_secret_type(secret_type: str) -> str:
    return re.sub(r"[^A-Z0-9]+", "_", secret_type.upper()).strip("_")


@dataclass(frozen=True)
class _Plugin:
    kind: str
    plugin: object  # a detect_secrets RegexBasedDetector
    patterns: tuple[Pattern[str], ...]
    validates: bool  # overrides analyze_string with its own check


class SecretDetector:
    """Finds credentials. Build once per process (``shared_secret_detector``); thread-safe."""

    def __init__(self, *, high_entropy: bool = True) -> None:
        from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
        from detect_secrets.plugins.base import RegexBasedDetector
        from detect_secrets.plugins.high_entropy_strings import Base64HighEntropyString, HexHighEntropyString

        plugins: list[_Plugin] = []
        for secret_type, cls in sorted(get_mapping_from_secret_type_to_class().items()):
            if secret_type in _SKIPPED_PLUGINS or not issubclass(cls, RegexBasedDetector):
                continue
            inst = cls()
            validates = cls.analyze_string is not RegexBasedDetector.analyze_string
            plugins.append(_Plugin(kind_from_secret_type(secret_type), inst, tuple(inst.denylist), validates))
        self._plugins = tuple(plugins)
        self._b64 = Base64HighEntropyString()
        self._hex = HexHighEntropyString()
        self.high_entropy = high_entropy

    @property
    def kinds(self) -> list[str]:
        return [p.kind for p in self._plugins] + [k for k, _, _ in _EXTRA_PATTERNS] + ["PRIVATE_KEY", "HIGH_ENTROPY_STRING"]

    def find(self, text: str) -> list[Span]:
        if not text:
            return []
        text = text[:MAX_SECRET_SCAN_CHARS]
        found: list[Span] = []
        for p in self._plugins:
            allowed: set[str] | None = None
            for regex in p.patterns:
                for m in regex.finditer(text):
                    start, end = _secret_bounds(m)
                    value = text[start:end]
                    if p.validates:
                        if allowed is None:
                            allowed = set(p.plugin.analyze_string(text))  # type: ignore[attr-defined]
                        if value not in allowed:
                            continue
                    if p.kind == "JSON_WEB_TOKEN":
                        # The plugin's pattern stops lazily inside the signature; redact all of it.
                        end = _JWT_TAIL.match(text, end).end()  # type: ignore[union-attr]
                    found.append(Span(p.kind, start, end, 1.0, f"detect-secrets:{type(p.plugin).__name__}"))
        for kind, regex, score in _EXTRA_PATTERNS:
            for m in regex.finditer(text):
                start, end = _secret_bounds(m)
                found.append(Span(kind, start, end, score, "llmproxy:pattern"))
        for m in _PEM_BLOCK.finditer(text):
            # Longer than the plugin's BEGIN-line span, so overlap resolution keeps the whole block.
            found.append(Span("PRIVATE_KEY", m.start(), m.end(), 1.0, "llmproxy:pem-block"))
        if self.high_entropy:
            found.extend(self._entropy_spans(text))
        return resolve_overlaps(found)

    __call__ = find

    def _entropy_spans(self, text: str) -> list[Span]:
        out: list[Span] = []
        for m in _BARE_TOKEN.finditer(text):
            tok = m.group().rstrip("=")
            if not (any(c.isupper() for c in tok) and any(c.islower() for c in tok) and any(c.isdigit() for c in tok)):
                continue
            if text[max(0, m.start() - 12) : m.start()].lower().endswith(("base64,", "data:")):
                continue  # an inline file (data: URI), not a credential
            if self._b64.calculate_shannon_entropy(tok) >= BASE64_ENTROPY_LIMIT:
                out.append(Span("HIGH_ENTROPY_STRING", m.start(), m.end(), 0.6, "detect-secrets:Base64HighEntropyString"))
        for m in _HEX_TOKEN.finditer(text):
            before = text[max(0, m.start() - 40) : m.start()]
            if _KEY_CONTEXT.search(before) and self._hex.calculate_shannon_entropy(m.group()) >= HEX_ENTROPY_LIMIT:
                out.append(Span("HIGH_ENTROPY_STRING", m.start(), m.end(), 0.6, "detect-secrets:HexHighEntropyString"))
        return out


_CONTEXT_CHARS = re.compile(r"[\s'\"=:]")
_JWT_TAIL = re.compile(r"[A-Za-z0-9_\-+/=.]*")


def _secret_bounds(m: re.Match[str]) -> tuple[int, int]:
    """The secret itself, without the assignment around it.

    Some patterns capture the secret in a group after a key name (``aws_secret = '...'``), others
    capture only a prefix (GitHub's ``(ghp|gho|...)_``). A match with no separators is the secret as
    a whole; otherwise the longest group is.
    """
    if not m.re.groups or not _CONTEXT_CHARS.search(m.group()):
        return m.start(), m.end()
    groups = [g for g in range(1, m.re.groups + 1) if m.group(g)]
    if not groups:
        return m.start(), m.end()
    g = max(groups, key=lambda g: m.end(g) - m.start(g))
    return m.start(g), m.end(g)


def redact_secrets(text: str, detector: SecretDetector | None = None, redaction: Redaction | None = None) -> str:
    """The form of ``text`` that may be forwarded or logged: every secret replaced by a placeholder."""
    detector = detector or shared_secret_detector()
    redaction = redaction or Redaction(mode="mask")
    return redaction.redact(text, detector.find(text))


_shared: SecretDetector | None = None
_shared_lock = threading.Lock()


def shared_secret_detector() -> SecretDetector:
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = SecretDetector()
        return _shared
