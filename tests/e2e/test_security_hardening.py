"""Security findings replayed through the real gateway (Envoy + sidecar + Postgres): each failed before.

- A parse error no longer turns the gateway into an open proxy, and client-sent x-llmproxy-* headers
  never route a request, whatever the sidecar answers.
- A gateway key reaches only model calls with the operator's credential, within its model scope
  (OpenRouter fallback lists included).
- A refused request is logged with its secrets masked.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import openai
import pytest

from .conftest import LLMPROXY, start_stack

pytestmark = pytest.mark.e2e

# A made-up key in a vendor's documented format (never a real credential).
GITHUB_TOKEN = "ghp_" + "Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0Fe9Dc8B"


class Tripwire:
    """A TCP service the gateway must never reach: counts every connection it gets."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.hits = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.hits += 1
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\nconnection: close\r\n\r\nreached")
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


@pytest.fixture
def tripwire() -> Iterator[Tripwire]:
    t = Tripwire()
    yield t
    t.close()


@pytest.fixture(scope="module")
def required_stack(tmp_path_factory, pg_url, fake):
    """`--auth required` with an empty legacy allowlist and operator keys: the set-up of the confirmed exploit."""
    s = start_stack(
        tmp_path_factory.mktemp("hardened"),
        pg_url,
        fake,
        "--auth",
        "required",
        env={"LLMPROXY_OPENAI_API_KEY": "sk-operator-openai", "LLMPROXY_OPENROUTER_API_KEY": "sk-or-operator"},
    )
    yield s
    assert s.stop() == 0


def gateway_key(db_url: str, *args: str) -> str:
    r = subprocess.run(
        [LLMPROXY, "keys", "create", *args, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "DATABASE_URL": db_url},
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["key"]


SPOOF = {"x-llmproxy-legacy": "http"}


def ipaddress_of(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text.split("%")[0])


@pytest.mark.parametrize(
    "target",
    ["http%3A%2F%2Fx%3A99999%2F", quote("//[x]/", safe=""), quote("http://x:port/", safe="")],
)
def test_the_open_proxy_exploit_reaches_nothing(required_stack, tripwire: Tripwire, target: str) -> None:
    headers = {**SPOOF, "x-llmproxy-target-host": f"127.0.0.1:{tripwire.port}"}
    for key_headers in ({}, {"authorization": "Bearer " + gateway_key(required_stack.db_url, "--name", "exploit")}):
        r = httpx.post(f"{required_stack.url}/?target_url={target}", headers={**headers, **key_headers}, content=b"{}")
        assert r.status_code in (400, 401), r.text
    assert tripwire.hits == 0


def test_spoofed_routing_headers_never_route_even_where_the_sidecar_lets_a_request_through(stack, tripwire: Tripwire) -> None:
    """Passthrough mode, a path the sidecar has no opinion on: only Envoy's header strip stands in the way."""
    headers = {**SPOOF, "x-llmproxy-target-host": f"127.0.0.1:{tripwire.port}", "x-llmproxy-provider": "openai"}
    for path in ("/anything", "/v1/models", "/?target_url="):
        r = httpx.post(stack.url + path, headers=headers, content=b"{}")
        assert r.status_code in (400, 404), (path, r.status_code, r.text)
    assert tripwire.hits == 0


def test_an_allowlisted_name_may_not_resolve_to_a_private_address(tmp_path_factory, pg_url, fake, tripwire: Tripwire) -> None:
    name = socket.gethostname()  # a name, not an address, that resolves to this machine
    assert not ipaddress_of(socket.getaddrinfo(name, 80)[0][4][0]).is_global
    s = start_stack(tmp_path_factory.mktemp("named"), pg_url, fake, "--allow-target", f"{name}:{tripwire.port}")
    try:
        target = quote(f"http://{name}:{tripwire.port}/x", safe="")
        r = httpx.post(f"{s.url}/?target_url={target}", content=b"{}")
        assert r.status_code == 403 and "non-public" in r.json()["error"]["message"] and tripwire.hits == 0
        other_port = quote(f"http://127.0.0.1:{tripwire.port + 1}/x", safe="")
        assert httpx.post(f"{s.url}/?target_url={other_port}", content=b"{}").status_code == 403
    finally:
        assert s.stop() == 0


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/openai/v1/files"), ("GET", "/openai/v1/chat/completions"), ("POST", "/openai/v1/batches"),
     ("GET", "/openai/v1/files/file-1/content")],
)  # fmt: skip
def test_a_gateway_key_reaches_only_model_calls(required_stack, method: str, path: str) -> None:
    key = gateway_key(required_stack.db_url, "--name", "scoped", "--models", "gpt-4o-mini")
    before = len(required_stack.fake.requests)
    r = httpx.request(
        method, required_stack.url + path, headers={"authorization": f"Bearer {key}"}, json={"model": "gpt-4o-mini"}
    )
    assert r.status_code == 403 and r.json()["error"]["code"] == "operation_not_allowed"
    assert len(required_stack.fake.requests) == before  # the operator's credential went nowhere


def test_openrouter_fallback_models_are_inside_the_key_scope(required_stack) -> None:
    key = gateway_key(required_stack.db_url, "--name", "one-model", "--models", "openai/gpt-4o-mini")
    client = openai.OpenAI(base_url=required_stack.url + "/openrouter/v1", api_key=key, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError, match="anthropic/claude-3-opus"):
        client.chat.completions.create(
            model="openai/gpt-4o-mini",
            messages=[{"role": "user", "content": "hi"}],
            extra_body={"models": ["openai/gpt-4o-mini", "anthropic/claude-3-opus"]},
        )
    ok = client.chat.completions.create(model="openai/gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert ok.choices[0].message.content == "echo: hi"


def test_a_refused_request_is_logged_with_its_secrets_masked(stack) -> None:
    """The shipped policy redacts secrets; a request it refuses (here: no such model) is logged masked too."""
    body = {"model": "no-such-model", "messages": [{"role": "user", "content": f"deploy with {GITHUB_TOKEN}"}]}
    r = httpx.post(stack.url + "/v1/chat/completions", json=body)
    assert r.status_code == 400
    rec = stack.record(r.headers["x-llmproxy-request-id"])
    stored = json.dumps([rec.request_client.to_dict(), rec.request_forwarded.to_dict()])
    assert GITHUB_TOKEN not in stored and "deploy with" in stored
