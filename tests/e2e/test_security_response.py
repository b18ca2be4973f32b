"""The response side through real Envoy + sidecar: reversible redaction restored for the client
(JSON and SSE, OpenAI and Anthropic) with only placeholders upstream and in the log; model-produced
secrets masked; response fields stripped; alerts in the feed, delivered to a webhook that fails
first; a policy quarantine released with `llmproxy keys release`; a policy route to another provider."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import anthropic
import httpx
import openai
import pytest

from .conftest import LLMPROXY, last_request, start_stack

pytestmark = pytest.mark.e2e

EMAIL = "ann.lee@example.com"
GH_TOKEN = "ghp_" + "Z9y8X7w6V5u4T3s2R1q0P9o8N7m6L5k4J3i2"
SECRET = "whsec-test"
POLICY = """
version: 1
name: e2e
rules:
  - id: pii-reversible
    match: {pii: [EMAIL_ADDRESS]}
    actions:
      redact: {kinds: [EMAIL_ADDRESS], in: [request], reversible: true}
  - id: scrub-out
    match: {headers: [x-scrub]}
    actions:
      mask: {kinds: [secrets], in: [response]}
      strip_response_fields: [/system_fingerprint]
  - id: cheap
    match: {headers: [x-cheap]}
    actions: {route: {provider: openrouter}}
  - id: withhold
    phase: response
    match: {secrets: any, headers: [x-withhold]}
    actions:
      block: {status: 502, code: response_withheld, message: "llmproxy: the response was withheld by policy"}
  - id: trip
    match: {headers: [x-trip]}
    actions:
      block: true
      alert: {severity: critical, message: tripwire pulled}
      quarantine_key: {reason: tripwire}
"""


class Hook(BaseHTTPRequestHandler):
    received: list[tuple[dict, bytes, int]] = []
    fail_first = 1

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        status = 503 if len(Hook.received) < Hook.fail_first else 200
        Hook.received.append(({k.lower(): v for k, v in self.headers.items()}, body, status))
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def hook():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def rstack(tmp_path_factory, pg_url, fake, hook):
    tmp = tmp_path_factory.mktemp("respsec")
    policy = tmp / "policy.yaml"
    policy.write_text(POLICY)
    s = start_stack(
        tmp,
        pg_url,
        fake,
        "--auth",
        "required",
        "--policy-file",
        str(policy),
        env={
            "LLMPROXY_OPENAI_API_KEY": "sk-operator-openai",
            "LLMPROXY_ANTHROPIC_API_KEY": "sk-ant-operator",
            "LLMPROXY_OPENROUTER_API_KEY": "sk-operator-openrouter",
            "LLMPROXY_ALERT_WEBHOOK_URL": hook,
            "LLMPROXY_ALERT_WEBHOOK_SECRET": SECRET,
        },
    )
    yield s
    assert s.stop() == 0


def keys_cli(db_url: str, *args: str) -> dict:
    r = subprocess.run(
        [LLMPROXY, "keys", *args, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "DATABASE_URL": db_url},
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def key(rstack) -> str:
    return keys_cli(rstack.db_url, "create", "--name", "resp-tests")["key"]


def assert_log_redacted(rec, *values: str) -> None:
    stored = json.dumps(
        [
            rec.request_client.json if rec.request_client else None,
            rec.request_forwarded.json if rec.request_forwarded else None,
            rec.response_upstream.json if rec.response_upstream else None,
            rec.response_upstream.text if rec.response_upstream else None,
            rec.response_client.json if rec.response_client else None,
            rec.prompt_user,
        ]
    )
    for v in values:
        assert v not in stored


def test_openai_json_restored_for_client_only(rstack, key) -> None:
    client = openai.OpenAI(base_url=rstack.url + "/openai/v1", api_key=key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": f"please write to {EMAIL} today"}]
    )
    assert raw.parse().choices[0].message.content == f"echo: please write to {EMAIL} today"
    up = last_request(rstack.fake, "/v1/chat/completions").body.decode()
    assert EMAIL not in up and "<EMAIL_1>" in up
    rec = rstack.record(raw.headers["x-llmproxy-request-id"])
    assert_log_redacted(rec, EMAIL)
    assert "<EMAIL_1>" in json.dumps(rec.response_client.json)
    assert rec.flags["response_policy"]["restored"] == 1


def test_openai_stream_restored_across_small_chunks(rstack, key) -> None:
    client = openai.OpenAI(base_url=rstack.url + "/openai/v1", api_key=key, max_retries=0)
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        stream=True,
        extra_headers={"x-fake-chunk-bytes": "7"},
        messages=[{"role": "user", "content": f"mail {EMAIL} and {EMAIL} again"}],
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == f"echo: mail {EMAIL} and {EMAIL} again"


def test_anthropic_stream_restored(rstack, key) -> None:
    client = anthropic.Anthropic(base_url=rstack.url + "/anthropic", api_key=key, max_retries=0)
    with client.messages.stream(
        model="claude-haiku-4-5",
        max_tokens=50,
        extra_headers={"x-fake-chunk-bytes": "5"},
        messages=[{"role": "user", "content": f"contact {EMAIL}"}],
    ) as s:
        text = "".join(s.text_stream)
        rid = s.response.headers["x-llmproxy-request-id"]
    assert text == f"echo: contact {EMAIL}"
    rec = rstack.record(rid)
    assert_log_redacted(rec, EMAIL)


def test_model_produced_secret_masked_and_fields_stripped(rstack, key) -> None:
    headers = {"x-scrub": "1", "x-fake-reply": f"your token is {GH_TOKEN} ok"}
    r = httpx.post(
        rstack.url + "/openai/v1/chat/completions",
        headers={"authorization": f"Bearer {key}", **headers},
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "token?"}]},
        timeout=30,
    )
    assert r.status_code == 200
    doc = r.json()
    content = doc["choices"][0]["message"]["content"]
    assert GH_TOKEN not in content and content.startswith("your token is <") and "system_fingerprint" not in doc
    rec = rstack.record(r.headers["x-llmproxy-request-id"])
    assert_log_redacted(rec, GH_TOKEN)
    assert any("system_fingerprint" in e for e in rec.flags["response_policy"]["edits"])

    client = openai.OpenAI(base_url=rstack.url + "/openai/v1", api_key=key, max_retries=0)
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        stream=True,
        extra_headers={**headers, "x-fake-chunk-bytes": "9"},
        messages=[{"role": "user", "content": "token?"}],
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert GH_TOKEN not in text and text.startswith("your token is <") and text.endswith("> ok")


def test_alert_reaches_feed_and_webhook_and_release_lifts_quarantine(rstack) -> None:
    victim = keys_cli(rstack.db_url, "create", "--name", "tripper")
    client = openai.OpenAI(base_url=rstack.url + "/openai/v1", api_key=victim["key"], max_retries=0)
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(
            model="gpt-4o-mini", extra_headers={"x-trip": "1"}, messages=[{"role": "user", "content": "hi"}]
        )
    events = asyncio.run(_events(rstack.db_url, victim["id"], {"block", "quarantine"}))
    assert {e["kind"] for e in events} == {"block", "quarantine"}
    # the key is refused on every replica once the quarantine lands
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        except openai.APIStatusError as exc:
            assert exc.status_code in (401, 403)
            break
        time.sleep(0.2)
    else:
        raise AssertionError("quarantined key still accepted")
    released = keys_cli(rstack.db_url, "release", victim["id"], "--reason", "false alarm")
    assert released["changed"] is True and released["status"] == "active"
    audit = asyncio.run(_key_audit(rstack.db_url, victim["id"]))
    assert [p["action"] for p in audit] == ["create", "quarantine", "release"]
    assert audit[-1]["reason"] == "false alarm" and audit[-1]["quarantine_reason"] == "tripwire"
    assert keys_cli(rstack.db_url, "release", victim["id"])["changed"] is False  # nothing left to release
    assert "release" in {e["kind"] for e in asyncio.run(_events(rstack.db_url, victim["id"], {"release"}))}
    deadline = time.monotonic() + 10
    while True:
        try:
            r = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "back"}])
            assert r.choices[0].message.content == "echo: back"
            break
        except openai.APIStatusError:
            assert time.monotonic() < deadline, "released key still refused"
            time.sleep(0.2)
    # the webhook failed first, then got both events, each once, signed
    deadline = time.monotonic() + 30
    mine = lambda: [(h, json.loads(b), st) for h, b, st in Hook.received if json.loads(b)["subject"] == victim["id"]]  # noqa: E731
    while time.monotonic() < deadline and sum(1 for *_, st in mine() if st == 200) < 2:
        time.sleep(0.3)
    delivered = [e for _, e, st in mine() if st == 200]
    assert sorted(e["kind"] for e in delivered) == ["block", "quarantine"]
    assert Hook.received[0][2] == 503  # the first delivery failed and was retried
    for headers, body, _ in Hook.received:
        assert headers["x-llmproxy-signature"] == "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()


async def _events(db_url: str, subject: str, kinds: set[str]) -> list[dict]:
    import asyncpg

    from intelligence.store.engine import asyncpg_dsn

    rows: list = []
    for _ in range(100):
        conn = await asyncpg.connect(asyncpg_dsn(db_url))
        try:
            rows = await conn.fetch("select kind, severity, title, detail from events where subject = $1", subject)
        finally:
            await conn.close()
        if {r["kind"] for r in rows} >= kinds:
            break
        await asyncio.sleep(0.1)
    return [dict(r) for r in rows]


def test_policy_route_sends_to_another_provider_with_its_credential(rstack, key) -> None:
    client = openai.OpenAI(base_url=rstack.url + "/v1", api_key=key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", extra_headers={"x-cheap": "1"}, messages=[{"role": "user", "content": "route me"}]
    )
    assert raw.parse().choices[0].message.content == "echo: route me"
    up = last_request(rstack.fake, "/chat/completions")
    assert up.path.startswith("/api/v1/") and up.headers["authorization"] == "Bearer sk-operator-openrouter"
    rec = rstack.record(raw.headers["x-llmproxy-request-id"])
    assert rec.provider == "openrouter" and rec.flags["policy_route"] == {"from": "openai", "to": "openrouter"}


def test_responses_api_stream_restored(rstack, key) -> None:
    client = openai.OpenAI(base_url=rstack.url + "/openai/v1", api_key=key, max_retries=0)
    stream = client.responses.create(
        model="gpt-4o-mini", input=f"note {EMAIL} down", stream=True, extra_headers={"x-fake-chunk-bytes": "11"}
    )
    deltas, final = [], None
    for event in stream:
        if event.type == "response.output_text.delta":
            deltas.append(event.delta)
        elif event.type == "response.completed":
            final = event.response
    assert "".join(deltas) == f"echo: note {EMAIL} down"
    assert final is not None and final.output_text == f"echo: note {EMAIL} down"
    up = last_request(rstack.fake, "/v1/responses").body.decode()
    assert EMAIL not in up


def test_response_rule_withholds_a_buffered_response(rstack, key) -> None:
    r = httpx.post(
        rstack.url + "/openai/v1/chat/completions",
        headers={"authorization": f"Bearer {key}", "x-withhold": "1", "x-fake-reply": f"here: {GH_TOKEN}"},
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "token?"}]},
        timeout=30,
    )
    assert r.status_code == 502 and r.json()["error"]["code"] == "response_withheld"
    assert GH_TOKEN not in r.text
    rec = rstack.record(r.headers["x-llmproxy-request-id"])
    assert rec.status == 502 and rec.flags["response_policy"]["block"]["rule"] == "e2e/withhold"


async def _key_audit(db_url: str, key_id: str) -> list[dict]:
    import asyncpg

    from intelligence.store.engine import asyncpg_dsn

    conn = await asyncpg.connect(asyncpg_dsn(db_url))
    try:
        rows = await conn.fetch("select payload from audit_log where kind = 'key_event' and subject = $1 order by id", key_id)
    finally:
        await conn.close()
    return [json.loads(r["payload"]) if isinstance(r["payload"], str) else dict(r["payload"]) for r in rows]
