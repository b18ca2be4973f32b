"""The CLI against a running stack: status, export, tail; and `up`'s own start/stop behaviour."""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import subprocess
import sys
import time

import openai
import pytest

from intelligence.ops.stack import StackState, pid_alive

from .conftest import LLMPROXY, Stack, free_port, start_stack

pytestmark = pytest.mark.e2e


def cli(*args: str, timeout: float = 60, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([LLMPROXY, *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})


def _env_without_db() -> dict:
    return {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}


def test_status_healthy_and_json(stack: Stack) -> None:
    r = subprocess.run(
        [LLMPROXY, "status", "--data-dir", str(stack.data_dir), "--json"],
        capture_output=True,
        text=True,
        env=_env_without_db(),
        timeout=30,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    assert doc["ok"] and doc["parts"] == {"envoy": True, "sidecar": True, "database": True}
    detail = doc["intelligence_detail"]
    assert detail["mode"] in ("local-only", "anthropic", "openrouter")
    if detail["mode"] == "local-only":  # said plainly, in the human sentence too
        assert "local-only" in doc["intelligence"]


def test_status_names_the_part_that_is_down(tmp_path) -> None:
    state = StackState(
        data_dir=str(tmp_path),
        database_url="postgresql://nobody@127.0.0.1:1/x",
        ports={"gateway": free_port(), "admin": free_port(), "sidecar": free_port()},
    )
    state.save()
    r = cli("status", "--data-dir", str(tmp_path))
    assert r.returncode == 1
    assert "unhealthy: envoy, sidecar, database" in r.stdout


def test_status_without_stack(tmp_path) -> None:
    r = cli("status", "--data-dir", str(tmp_path))
    assert r.returncode == 1 and "no stack running" in r.stdout


def test_export_jsonl_and_csv(stack: Stack) -> None:
    client = openai.OpenAI(
        base_url=stack.url + "/openai/v1", api_key="sk-exp", max_retries=0, default_headers={"x-session-id": "export-session"}
    )
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "export me"}]
    )
    rid = raw.headers["x-llmproxy-request-id"]
    stack.record(rid)
    r = subprocess.run(
        [LLMPROXY, "export", "requests", "--data-dir", str(stack.data_dir), "--since", "1h"],
        capture_output=True,
        text=True,
        env=_env_without_db(),
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    row = next(x for x in rows if x["request_id"] == rid)
    assert row["request"]["messages"][0]["content"] == "export me"
    assert row["response"]["choices"][0]["message"]["content"] == "echo: export me"
    assert row["status"] == 200 and row["model"] == "gpt-4o-mini" and row["provider"] == "openai"
    assert row["session_id"] == "export-session" and row["usage"]["input_tokens"] >= 1
    assert row["latency_ms"] > 0 and "ttft_ms" in row
    r = subprocess.run(
        [LLMPROXY, "export", "requests", "--data-dir", str(stack.data_dir), "--format", "csv"],
        capture_output=True,
        text=True,
        env=_env_without_db(),
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    csv.field_size_limit(sys.maxsize)  # bodies are JSON-encoded columns, up to the 1 MiB log cap
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert any(x["request_id"] == rid and x["status"] == "200" for x in rows)


def test_tail_prints_live_exchanges_with_tool_modes(stack: Stack) -> None:
    tools = [{"type": "function", "function": {"name": "lookup.city", "parameters": {"type": "object", "properties": {}}}}]

    def run_tail(*flags: str) -> str:
        proc = subprocess.Popen(
            [LLMPROXY, "tail", "--data-dir", str(stack.data_dir), "--count", "1", *flags],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env_without_db(),
        )
        time.sleep(2.5)  # let it LISTEN
        client = openai.OpenAI(base_url=stack.url + "/openai/v1", api_key="sk-tail", max_retries=0)
        stream = client.chat.completions.create(
            model="gpt-4o", tools=tools, stream=True, messages=[{"role": "user", "content": "tail this"}]
        )
        for _ in stream:
            pass
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        return out

    out = run_tail("--tools", "name")
    assert "200" in out and "gpt-4o" in out and ">>> request" in out and "<<< response (merged)" in out
    assert '"lookup.city"' in out and '"parameters"' not in out
    assert '"content": "echo: tail this"' in out  # the stream merged into one message
    out = run_tail("--tools", "all")
    assert '"parameters"' in out
    out = run_tail("--tools", "none")
    assert "lookup.city" not in out
    out = run_tail("--raw")
    assert "data: " in out and "[DONE]" in out  # the stream as it crossed the wire


def test_port_in_use_is_a_clear_error(tmp_path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        r = cli(
            "up",
            "--no-ui",
            "--data-dir",
            str(tmp_path),
            "--port",
            str(busy),
            "--admin-port",
            str(free_port()),
            "--sidecar-port",
            str(free_port()),
        )
    assert r.returncode == 1
    assert f"port {busy} (gateway, --port) is already in use" in r.stderr
    assert "Traceback" not in r.stderr


def test_up_stops_everything_on_sigterm(tmp_path, pg_url, fake) -> None:
    s = start_stack(tmp_path, pg_url, fake)
    state = StackState.load(s.data_dir)
    children = {k: v for k, v in state.pids.items() if k != "up"}
    assert set(children) >= {"sidecar", "envoy"} and all(pid_alive(p) for p in children.values())
    assert s.stop() == 0
    time.sleep(0.5)
    assert not any(pid_alive(p) for p in children.values())
    assert not (s.data_dir / "stack.json").exists()
