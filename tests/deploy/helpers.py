"""Shared helpers of the deployment tests: paths, rendering, a throw-away Envoy on ephemeral ports."""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from extproc.cli import envoy_config
from extproc.cli.up import _envoy_bin

from .kustomize import render as kustomize_render

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
OVERLAYS = ("dev", "production")


def load_script(path: Path) -> ModuleType:
    """Import a deploy/ script (not a package) as a module."""
    spec = importlib.util.spec_from_file_location(f"deploy_{path.stem}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


render_envoy = load_script(DEPLOY / "render_envoy.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def render_overlay(name: str, tmp: Path) -> list[dict[str, Any]]:
    """An overlay rendered offline. The dev overlay needs its gitignored secrets.env: a copy of the tree gets a
    generated one (random values), the checkout is never written."""
    if name == "dev":
        copy = tmp / "k8s"
        shutil.copytree(K8S, copy, dirs_exist_ok=True)
        env = copy / "overlays" / "dev" / "secrets.env"
        env.write_text("DATABASE_URL=postgresql://llmproxy:test@db:5432/llmproxy\nSECRET_KEY=" + "k" * 48 + "\n")
        return kustomize_render(copy / "overlays" / "dev")
    return kustomize_render(K8S / "overlays" / name)


def envoy_validate(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [_envoy_bin(), "--mode", "validate", "-c", str(path), "-l", "error"], capture_output=True, text=True, timeout=120
    )


def http(url: str, method: str = "GET", timeout: float = 3.0) -> tuple[int | None, str]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=timeout) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as exc:
        return None, str(exc)


class LocalEnvoy:
    def __init__(self, proc: subprocess.Popen, ports: dict[str, int]):
        self.proc = proc
        self.ports = ports

    def url(self, listener: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[listener]}{path}"


@contextlib.contextmanager
def run_envoy(target: str, tmp: Path) -> Iterator[LocalEnvoy]:
    """Envoy on the shipped ``target`` config ("k8s"), every port moved to a free loopback port."""
    cfg = render_envoy.render(target)
    ports = {"gateway": free_port(), "ops": free_port(), "admin": free_port(), "sidecar": free_port(), "metrics": free_port()}
    cfg["admin"]["address"]["socket_address"]["port_value"] = ports["admin"]
    for listener in cfg["static_resources"]["listeners"]:
        listener["address"]["socket_address"].update(address="127.0.0.1", port_value=ports[listener["name"]])
    for cluster in cfg["static_resources"]["clusters"]:
        key = {"llmproxy_sidecar": "sidecar", "envoy_admin": "admin", "sidecar_metrics": "metrics"}.get(cluster["name"])
        if key:
            envoy_config._endpoint(cluster).update(address="127.0.0.1", port_value=ports[key])
    path = tmp / f"envoy-{target}.yaml"
    path.write_text(yaml.dump(cfg, Dumper=envoy_config._NoAliasDumper, sort_keys=False))
    log = open(tmp / "envoy.log", "w")
    proc = subprocess.Popen(
        [_envoy_bin(), "-c", str(path), "--disable-hot-restart", "-l", "warning", "--base-id", str(ports["admin"])],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    envoy = LocalEnvoy(proc, ports)
    try:
        deadline = time.monotonic() + 30
        while http(envoy.url("ops", "/live"))[0] != 200:
            assert proc.poll() is None, (tmp / "envoy.log").read_text()
            assert time.monotonic() < deadline, "Envoy did not start in 30 s"
            time.sleep(0.1)
        yield envoy
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        log.close()


def wait_for(predicate, timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def pod_specs(obj: dict[str, Any]) -> list[dict[str, Any]]:
    kind = obj.get("kind")
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"):
        return [obj["spec"]["template"]["spec"]]
    if kind == "CronJob":
        return [obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]]
    if kind == "Pod":
        return [obj["spec"]]
    return []


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]


def yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]
