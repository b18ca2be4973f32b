"""`llmproxy bench` runs end to end (tiny load) and prints every set-up; figures are not asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

LLMPROXY = str(Path(sys.executable).with_name("llmproxy"))


def test_bench_prints_all_setups_as_json(pg_url) -> None:
    r = subprocess.run(
        [LLMPROXY, "bench", "--rate", "20", "--duration", "1", "--warmup", "0.2", "--memory-requests", "50", "--json"],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "DATABASE_URL": pg_url},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads(r.stdout)
    res = doc["results"]
    assert set(res) == {"direct", "envoy", "sidecar-json", "direct-sse", "envoy-sse", "sidecar-sse", "memory"}
    for name in ("direct", "envoy", "sidecar-json", "sidecar-sse"):
        assert res[name]["errors"] == 0 and res[name]["p50_ms"] > 0, (name, res[name])
    assert res["sidecar-sse"]["ttft_p50_ms"] is not None and "p50_added_ms" in res["sidecar-json"]
    assert res["memory"]["requests"] == 50 and res["memory"]["rss_after_kb"] > 0
