"""Credentials are found (detect-secrets plugins + the formats it lacks) and redacted.

Every key below is a documented example or an obviously fake value in the vendor's format.
"""

from __future__ import annotations

import time

import pytest

from intelligence.detectors.redact import Redaction, StreamRedactor
from intelligence.detectors.secrets import MAX_SECRET_SCAN_CHARS, SecretDetector, redact_secrets, shared_secret_detector

JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
SAMPLES = {
    "AWS_ACCESS_KEY": "AKIAIOSFODNN7EXAMPLE",
    "AWS_SECRET_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "GITHUB_TOKEN": "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8",
    "OPENAI_TOKEN": "sk-" + "abcdefghij0123456789" + "T3BlbkFJ" + "ABCDEFGHIJ0123456789",
    "OPENAI_API_KEY": "sk-proj-" + "Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z_Ab3dEf6hIj9kLm2",
    "ANTHROPIC_API_KEY": "sk-ant-api03-" + "AbCdEf0123456789" * 6 + "-AbCdEfAA",
    "SLACK_TOKEN": "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
    "JSON_WEB_TOKEN": JWT,
    "GOOGLE_API_KEY": "AIzaSyA" + "1234567890abcdefghijklmnopqrstuv",
    "HUGGINGFACE_TOKEN": "hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYz01234567",
    "STRIPE_ACCESS_KEY": "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc",
}


@pytest.fixture(scope="module")
def secrets() -> SecretDetector:
    return shared_secret_detector()


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_vendor_formats(secrets: SecretDetector, kind: str) -> None:
    value = SAMPLES[kind]
    prefix = "aws_secret_access_key=" if kind == "AWS_SECRET_KEY" else "here is my key: "
    text = f"{prefix}{value} -- please keep it safe"
    spans = secrets.find(text)
    assert [(s.kind, text[s.start : s.end]) for s in spans] == [(kind, value)]


def test_private_key_block_is_redacted_whole(secrets: SecretDetector) -> None:
    pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA7bq\nabcdefghijklmnop\n-----END RSA PRIVATE KEY-----"
    text = f"my key:\n{pem}\nthanks"
    spans = secrets.find(text)
    assert [(s.kind, text[s.start : s.end]) for s in spans] == [("PRIVATE_KEY", pem)]
    assert redact_secrets(text, secrets) == "my key:\n<PRIVATE_KEY>\nthanks"


def test_high_entropy_tokens(secrets: SecretDetector) -> None:
    text = "use this token: Zx8Qp3Lk9Vb2Nm7Rt4Yw6Hs1Jd5Fg0Ce and the api key: 4f3c2a1b9e8d7c6b5a4f3e2d1c0b9a8f"
    assert [s.kind for s in secrets.find(text)] == ["HIGH_ENTROPY_STRING", "HIGH_ENTROPY_STRING"]


def test_no_false_positives(secrets: SecretDetector) -> None:
    benign = [
        "commit e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 fixed the bug",
        "The quick brown fox jumps over the lazy dog. AbstractSingletonProxyFactoryBean is a class.",
        "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==",
        "How do I rotate my AWS access keys safely?",
        "",
    ]
    for text in benign:
        assert secrets.find(text) == [], text


def test_placeholder_redaction_is_reversible(secrets: SecretDetector) -> None:
    text = "key AKIAIOSFODNN7EXAMPLE twice AKIAIOSFODNN7EXAMPLE"
    r = Redaction()
    redacted = r.redact(text, secrets.find(text))
    assert redacted == "key <AWS_ACCESS_KEY_1> twice <AWS_ACCESS_KEY_1>"
    assert r.restore(redacted) == text
    assert "AWS_ACCESS_KEY" in secrets.kinds


def test_secrets_split_across_stream_chunks(secrets: SecretDetector) -> None:
    text = "token ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8" + " and AKIAIOSFODNN7EXAMPLE end"
    full = Redaction().redact(text, secrets.find(text))
    for i in range(len(text) + 1):
        sr = StreamRedactor(secrets.find)
        assert sr.feed(text[:i]) + sr.feed(text[i:]) + sr.flush() == full, i


def test_large_input_is_bounded(secrets: SecretDetector) -> None:
    text = "lorem ipsum dolor sit amet " * 30_000 + " AKIAIOSFODNN7EXAMPLE"
    t0 = time.perf_counter()
    spans = secrets.find(text)
    assert time.perf_counter() - t0 < 5.0
    assert [s.kind for s in spans] == ["AWS_ACCESS_KEY"]
    # Past the documented cap nothing is scanned: the policy limits body size instead.
    beyond = "x" * MAX_SECRET_SCAN_CHARS + " AKIAIOSFODNN7EXAMPLE"
    assert secrets.find(beyond) == []
    assert SecretDetector(high_entropy=False).find("token Zx8Qp3Lk9Vb2Nm7Rt4Yw6Hs1Jd5Fg0Ce") == []
