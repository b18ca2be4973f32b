"""Required gateway keys through real Envoy + sidecar: 401 before the body, scopes, injection, revocation."""

from __future__ import annotations

import json
import os
import subprocess
import time

import anthropic
import httpx
import openai
import pytest

from .conftest import LLMPROXY, last_request, start_stack

pytestmark = pytest.mark.e2e


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
def keyed_stack(tmp_path_factory, pg_url, fake):
    s = start_stack(
        tmp_path_factory.mktemp("keyed"),
        pg_url,
        fake,
        "--auth",
        "required",
        env={"LLMPROXY_OPENAI_API_KEY": "sk-operator-openai", "LLMPROXY_ANTHROPIC_API_KEY": "sk-ant-operator"},
    )
    yield s
    assert s.stop() == 0


def test_required_keys_end_to_end(keyed_stack) -> None:
    stack = keyed_stack
    created = keys_cli(stack.db_url, "create", "--name", "team-a", "--models", "gpt-*")
    key = created["key"]
    assert key.startswith("llmp_")
    listed = keys_cli(stack.db_url, "list")
    assert key not in json.dumps(listed)  # shown once, stored hashed

    # no key / a provider key / an unknown key: 401 from the headers phase, nothing reaches the upstream
    n_before = len(stack.fake.requests)
    r = httpx.post(stack.url + "/openai/v1/chat/completions", json={"model": "gpt-4o", "messages": []})
    assert r.status_code == 401 and "gateway key" in r.json()["error"]["message"]
    for auth in ("sk-some-provider-key", "llmp_" + "x" * 43):
        client = openai.OpenAI(base_url=stack.url + "/openai/v1", api_key=auth, max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert len(stack.fake.requests) == n_before

    # a valid key: the operator's provider key goes upstream, the gateway key never does
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key=key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "keyed"}])
    assert raw.parse().choices[0].message.content == "echo: keyed"
    up = last_request(stack.fake, "/v1/chat/completions")
    assert up.headers["authorization"] == "Bearer sk-operator-openai"
    assert key not in json.dumps(up.headers)
    rec = stack.record(raw.headers["x-llmproxy-request-id"])
    assert rec.client_key_fp == created["id"]

    # out of scope: a claude model with a gpt-* key
    aclient = anthropic.Anthropic(base_url=stack.url, api_key=key, max_retries=0)
    with pytest.raises(anthropic.PermissionDeniedError) as err:
        aclient.messages.create(model="claude-haiku-4-5", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert "claude-haiku-4-5" in str(err.value)

    # revoked: refused within a few seconds (NOTIFY, with polling as the fallback)
    keys_cli(stack.db_url, "revoke", created["id"])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        r = httpx.post(
            stack.url + "/v1/chat/completions",
            headers={"authorization": f"Bearer {key}"},
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "again"}]},
        )
        if r.status_code == 401:
            break
        time.sleep(0.2)
    assert r.status_code == 401 and "revoked" in r.json()["error"]["message"]

    # every key event is on the audit chain, and the chain verifies
    v = subprocess.run(
        [LLMPROXY, "audit", "verify", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "DATABASE_URL": stack.db_url},
    )
    assert v.returncode == 0, v.stdout + v.stderr


QUARANTINE_POLICY = """
version: 1
name: quarantine-test
rules:
  - id: tripwire
    description: a canary header only an attacker's tooling sends
    match:
      headers: [x-canary-tripwire]
    actions:
      block: {status: 403, code: tripwire, message: "llmproxy: tripwire"}
      alert: {severity: critical, message: tripwire header seen}
      quarantine_key: {reason: tripwire header}
"""


def test_policy_quarantines_a_key_and_it_stays_refused(tmp_path_factory, pg_url, fake) -> None:
    tmp = tmp_path_factory.mktemp("quarantine")
    policy = tmp / "policy.yaml"
    policy.write_text(QUARANTINE_POLICY)
    stack = start_stack(
        tmp,
        pg_url,
        fake,
        "--auth",
        "required",
        "--policy-file",
        str(policy),
        env={"LLMPROXY_OPENAI_API_KEY": "sk-operator-openai"},
    )
    try:
        key = keys_cli(stack.db_url, "create", "--name", "tripwire-victim")["key"]
        ok = httpx.post(
            stack.url + "/v1/chat/completions",
            headers={"authorization": f"Bearer {key}"},
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "fine"}]},
        )
        assert ok.status_code == 200
        trip = httpx.post(
            stack.url + "/v1/chat/completions",
            headers={"authorization": f"Bearer {key}", "x-canary-tripwire": "1"},
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]},
        )
        assert trip.status_code == 403 and trip.json()["error"]["code"] == "tripwire"
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            r = httpx.post(
                stack.url + "/v1/chat/completions",
                headers={"authorization": f"Bearer {key}"},
                json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "again"}]},
            )
            if r.status_code == 403:
                break
            time.sleep(0.2)
        assert r.status_code == 403 and r.json()["error"]["code"] == "key_quarantined"
        listed = [k for k in keys_cli(stack.db_url, "list") if k["name"] == "tripwire-victim"]
        assert listed[0]["quarantined_at"] and listed[0]["quarantine_reason"] == "tripwire header"
    finally:
        assert stack.stop() == 0
