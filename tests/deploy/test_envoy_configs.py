"""Every Envoy config the project ships passes `envoy --mode validate`, and the container configs behave:
the readiness endpoint follows the sidecar's gRPC health, the drain hooks work, the probe script works."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
import yaml
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from extproc.cli import envoy_config

from .helpers import DEPLOY, ROOT, envoy_validate, free_port, http, render_envoy, render_overlay, run_envoy, wait_for

EXT_PROC = "envoy.service.ext_proc.v3.ExternalProcessor"


def _shipped_configs(tmp_path: Path) -> dict[str, Path]:
    runtime = envoy_config.render(
        ROOT / "envoy.yaml",
        listen_host="127.0.0.1",
        port=11000,
        admin_port=11001,
        sidecar_port=11002,
        upstreams=envoy_config.parse_upstream_specs(["openai=http://127.0.0.1:9999", "openrouter=https://or.example:8443/api"]),
        ca_file="/etc/ssl/certs/ca-certificates.crt",
        idle_timeout_s=30,
    )
    configs = {
        "envoy.yaml": ROOT / "envoy.yaml",
        "llmproxy up runtime": envoy_config.write(runtime, tmp_path / "runtime.yaml"),
        "deploy/k8s/base/envoy.yaml": DEPLOY / "k8s" / "base" / "envoy.yaml",
        "deploy/compose/envoy.yaml": DEPLOY / "compose" / "envoy.yaml",
    }
    for overlay in ("dev", "production"):  # the ConfigMap the manifests really mount
        for obj in render_overlay(overlay, tmp_path / overlay):
            if obj["kind"] == "ConfigMap" and "envoy.yaml" in obj.get("data", {}):
                path = tmp_path / f"{overlay}-{obj['metadata']['name']}.yaml"
                path.write_text(obj["data"]["envoy.yaml"])
                configs[f"{overlay} ConfigMap {obj['metadata']['name']}"] = path
    return configs


def test_every_shipped_envoy_config_validates(tmp_path: Path) -> None:
    configs = _shipped_configs(tmp_path)
    assert sum(1 for name in configs if "ConfigMap" in name) == 2
    for name, path in configs.items():
        result = envoy_validate(path)
        assert result.returncode == 0 and "OK" in result.stdout, f"{name}: {result.stdout}{result.stderr}"


def test_envoy_validate_rejects_a_broken_config(tmp_path: Path) -> None:
    cfg = yaml.safe_load((DEPLOY / "k8s" / "base" / "envoy.yaml").read_text())
    cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["stat_prefixx"] = "x"
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert envoy_validate(path).returncode != 0


def test_rendered_container_configs_are_fresh() -> None:
    result = subprocess.run(
        [sys.executable, str(DEPLOY / "render_envoy.py"), "--check"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr + "\nrun: python deploy/render_envoy.py"
    assert render_envoy.stale() == []


def _listeners(cfg: dict) -> dict[str, dict]:
    return {listener["name"]: listener for listener in cfg["static_resources"]["listeners"]}


def _cluster(cfg: dict, name: str) -> dict:
    return next(c for c in cfg["static_resources"]["clusters"] if c["name"] == name)


@pytest.mark.parametrize("target", ["k8s", "compose"])
def test_container_config_shape(target: str) -> None:
    cfg = yaml.safe_load(render_envoy.TARGETS[target].read_text())
    listeners = _listeners(cfg)
    assert listeners["gateway"]["address"]["socket_address"] == {"address": "0.0.0.0", "port_value": 10000}
    assert listeners["ops"]["address"]["socket_address"] == {"address": "0.0.0.0", "port_value": 8081}
    assert listeners["ops"]["drain_type"] == "MODIFY_ONLY"
    assert cfg["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"  # never on the pod IP
    sidecar = _cluster(cfg, "llmproxy_sidecar")
    assert sidecar["health_checks"][0]["grpc_health_check"]["service_name"] == EXT_PROC
    address = envoy_config._endpoint(sidecar)
    assert address == (
        {"address": "127.0.0.1", "port_value": 50051} if target == "k8s" else {"address": "sidecar", "port_value": 50051}
    )
    # the same routes as the operator's envoy.yaml
    ours = {r.get("name") for r in envoy_config._routes(yaml.safe_load((ROOT / "envoy.yaml").read_text()))}
    gateway_routes = {
        r.get("name")
        for r in listeners["gateway"]["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0][
            "routes"
        ]
    }
    assert ours == gateway_routes


async def _health_server(port: int) -> tuple[grpc.aio.Server, health.aio.HealthServicer]:
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    assert server.add_insecure_port(f"127.0.0.1:{port}") == port
    await server.start()
    return server, servicer


async def test_ready_follows_the_sidecar_grpc_health_and_drain_hooks(tmp_path: Path) -> None:
    drain = str(DEPLOY / "bin" / "envoy_drain.py")
    with run_envoy("k8s", tmp_path) as envoy:
        ready = envoy.url("ops", "/ready")
        assert (await asyncio.to_thread(http, envoy.url("ops", "/live")))[0] == 200
        assert (await asyncio.to_thread(http, ready))[0] == 503  # no sidecar yet: not ready
        stats = await asyncio.to_thread(http, envoy.url("ops", "/stats/prometheus"))
        assert stats[0] == 200 and "envoy_http_downstream_rq_total" in stats[1]
        assert (await asyncio.to_thread(http, envoy.url("ops", "/quitquitquit"), "POST"))[0] == 404  # admin stays private
        server, servicer = await _health_server(envoy.ports["sidecar"])
        try:
            await servicer.set(EXT_PROC, health_pb2.HealthCheckResponse.SERVING)
            assert await asyncio.to_thread(wait_for, lambda: http(ready)[0] == 200, 20), "sidecar serving, /ready not 200"
            await servicer.set(EXT_PROC, health_pb2.HealthCheckResponse.NOT_SERVING)
            assert await asyncio.to_thread(wait_for, lambda: http(ready)[0] == 503, 20), "sidecar not serving, /ready 200"
            await servicer.set(EXT_PROC, health_pb2.HealthCheckResponse.SERVING)
            assert await asyncio.to_thread(wait_for, lambda: http(ready)[0] == 200, 20)

            # preStop: fails the health check at once, then waits for Envoy to go away
            admin = f"127.0.0.1:{envoy.ports['admin']}"
            hook = await asyncio.create_subprocess_exec(
                sys.executable,
                drain,
                "prestop",
                "--admin",
                admin,
                "--max-wait",
                "30",
                "--poll",
                "0.2",
                stderr=asyncio.subprocess.PIPE,
            )
            assert await asyncio.to_thread(wait_for, lambda: http(ready)[0] == 503, 10), "prestop did not fail /ready"
            assert (await asyncio.to_thread(http, envoy.url("ops", "/live")))[0] == 200  # liveness unaffected
            await asyncio.sleep(1.0)
            assert hook.returncode is None, "prestop returned while Envoy was still up"
            # postStart of a restarted sidecar container restores readiness
            post = await asyncio.create_subprocess_exec(sys.executable, drain, "poststart", "--admin", admin)
            assert await asyncio.wait_for(post.wait(), 30) == 0
            assert await asyncio.to_thread(wait_for, lambda: http(ready)[0] == 200, 10)
            started = time.monotonic()
            envoy.proc.terminate()  # Envoy's own preStop sleep is over
            _, err = await asyncio.wait_for(hook.communicate(), 30)
            assert hook.returncode == 0 and time.monotonic() - started < 10, err.decode()
            assert "Envoy gone" in err.decode()
        finally:
            await server.stop(0)


def test_prestop_gives_up_after_max_wait_and_tolerates_no_envoy(tmp_path: Path) -> None:
    drain = str(DEPLOY / "bin" / "envoy_drain.py")
    nothing = f"127.0.0.1:{free_port()}"
    for hook in (["prestop", "--max-wait", "5"], ["poststart"]):
        r = subprocess.run([sys.executable, drain, *hook, "--admin", nothing], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
    with run_envoy("k8s", tmp_path) as envoy:
        started = time.monotonic()
        r = subprocess.run(
            [
                sys.executable,
                drain,
                "prestop",
                "--admin",
                f"127.0.0.1:{envoy.ports['admin']}",
                "--max-wait",
                "1.5",
                "--poll",
                "0.2",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert r.returncode == 0 and 1.4 < time.monotonic() - started < 15, r.stderr
        assert "still up" in r.stderr


async def test_grpc_health_probe_script() -> None:
    probe = str(DEPLOY / "bin" / "grpc_health_probe.py")

    async def run(port: int) -> int:
        p = await asyncio.create_subprocess_exec(
            sys.executable,
            probe,
            "--addr",
            f"127.0.0.1:{port}",
            "--timeout",
            "2",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        return await asyncio.wait_for(p.wait(), 30)

    port = free_port()
    assert await run(port) == 1  # nothing listening
    server, servicer = await _health_server(port)
    try:
        assert await run(port) == 1  # service unknown
        await servicer.set(EXT_PROC, health_pb2.HealthCheckResponse.SERVING)
        assert await run(port) == 0
        await servicer.set(EXT_PROC, health_pb2.HealthCheckResponse.NOT_SERVING)
        assert await run(port) == 1
    finally:
        await server.stop(0)


def test_grafana_envoy_metrics_exist_in_envoy(tmp_path: Path) -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "llmproxy.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    labels = {label for e in exprs for label in re.findall(r"\b(envoy_[a-z_]+)\s*=", e)}
    labels |= {
        label.strip()
        for e in exprs
        for group in re.findall(r"\bby\s*\(([^)]*)\)", e)
        for label in group.split(",")
        if label.strip().startswith("envoy_")
    }
    wanted = {name for e in exprs for name in re.findall(r"\b(envoy_[a-z0-9_]+)\b", e)} - labels
    assert len(wanted) >= 5
    with run_envoy("k8s", tmp_path) as envoy:
        status, body = http(envoy.url("ops", "/stats/prometheus"))
    assert status == 200
    exposed = set(re.findall(r"^(envoy_[a-z0-9_]+)", body, re.M))
    assert wanted <= exposed, f"not exposed by Envoy: {sorted(wanted - exposed)}"
    assert labels
    exposed_labels = set(re.findall(r"[{,](envoy_[a-z_]+)=", body))
    assert labels <= exposed_labels, f"labels not exposed by Envoy: {sorted(labels - exposed_labels)}"
