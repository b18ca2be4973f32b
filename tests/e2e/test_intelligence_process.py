"""`llmproxy up` runs the intelligence process: background jobs and the control API, on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time

import httpx
import pytest

from intelligence.control.client import ControlClient
from intelligence.ops.stack import StackState

from .conftest import LLMPROXY, start_stack

pytestmark = pytest.mark.e2e


async def test_up_runs_jobs_and_control_api(tmp_path, fresh_db_url, fake) -> None:
    db_url = await fresh_db_url()
    env = {k: "" for k in ("ANTHROPIC_API_KEY", "OPENROUTER_API_KEY", "SECRET_KEY")}
    s = start_stack(tmp_path, db_url, fake, intelligence=True, env=env)
    try:
        state = StackState.load(s.data_dir)
        control = f"127.0.0.1:{state.ports['control']}"
        client = ControlClient(control)
        deadline = time.monotonic() + 30
        while True:  # the intelligence process starts after Envoy: give it a moment
            try:
                me = client.whoami()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise AssertionError(s.log_text("intelligence")) from None
                time.sleep(0.3)
        assert (me.subject, me.role) == ("local", "admin")  # no SECRET_KEY: the loopback operator

        # the live feed sees an exchange that crosses the gateway
        seen: list[str] = []
        call = client.watch(kinds=["exchange"])

        def consume() -> None:
            try:
                for item in call:
                    if item.WhichOneof("item") == "exchange":
                        seen.append(item.exchange.request_id)
                        return
            except Exception:
                pass

        reader = threading.Thread(target=consume, daemon=True)
        reader.start()
        time.sleep(0.5)
        r = httpx.post(
            f"{s.url}/openai/v1/chat/completions",
            headers={"authorization": "Bearer sk-test"},
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]},
            timeout=10,
        )
        assert r.status_code == 200
        reader.join(10)
        call.cancel()
        assert seen == [r.headers["x-llmproxy-request-id"]]

        out = subprocess.run(
            [LLMPROXY, "status", "--data-dir", str(s.data_dir), "--json"],
            capture_output=True,
            text=True,
            timeout=30,
            env={k: v for k, v in os.environ.items() if k != "DATABASE_URL"},
        )
        doc = json.loads(out.stdout)
        assert doc["parts"]["intelligence"] is True and doc["ok"]
        assert doc["intelligence_detail"]["mode"] == "local-only"
        log = s.log_text("intelligence")
        assert "ExperimentEvaluator" in log and "AnomalyJob" in log and "local-only" in log
        assert "Traceback" not in log, log
    finally:
        assert s.stop() == 0
