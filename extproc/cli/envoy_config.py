"""Render the runtime Envoy config from the operator's envoy.yaml.

Only what the command line overrides changes: listener/admin/sidecar ports and address, --upstream
base URLs (cluster address, TLS on/off, host rewrite, path prefix), the CA bundle, idle timeouts.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from ..providers.registry import PROVIDERS

# Each provider cluster's default base URL; a client path /v1/x goes to BASE/v1/x.
DEFAULT_UPSTREAMS = {name: p.default_base_url for name, p in PROVIDERS.items()}


@dataclass(frozen=True)
class Upstream:
    scheme: str
    host: str
    port: int
    base_path: str  # "" or "/api"

    @classmethod
    def parse(cls, url: str) -> Upstream:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"upstream URL {url!r} must be http(s)://host[:port][/base-path]")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return cls(parts.scheme, parts.hostname, port, parts.path.rstrip("/"))

    @property
    def authority(self) -> str:
        default = 443 if self.scheme == "https" else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"


def parse_upstream_specs(specs: list[str]) -> dict[str, Upstream]:
    out: dict[str, Upstream] = {}
    for spec in specs:
        name, sep, url = spec.partition("=")
        if not sep or name not in DEFAULT_UPSTREAMS:
            raise ValueError(f"bad --upstream {spec!r}: expected NAME=URL with NAME in {', '.join(DEFAULT_UPSTREAMS)}")
        out[name] = Upstream.parse(url)
    return out


def find_template(explicit: Path | None = None) -> Path:
    candidates = [explicit] if explicit else [Path.cwd() / "envoy.yaml", Path(__file__).resolve().parents[2] / "envoy.yaml"]
    for c in candidates:
        if c and c.is_file():
            return c
    raise SystemExit(f"llmproxy: envoy.yaml not found (looked in {', '.join(str(c) for c in candidates if c)})")


def render(
    template: Path,
    *,
    listen_host: str,
    port: int,
    admin_port: int,
    sidecar_port: int | Sequence[int],
    upstreams: dict[str, Upstream],
    ca_file: str | None = None,
    idle_timeout_s: float | None = None,
) -> dict[str, Any]:
    cfg = yaml.safe_load(template.read_text())
    cfg["admin"]["address"]["socket_address"].update(address="127.0.0.1", port_value=admin_port)
    for listener in cfg["static_resources"]["listeners"]:
        if listener["name"] == "gateway":
            listener["address"]["socket_address"].update(address=listen_host, port_value=port)
    defaults = {name: Upstream.parse(url) for name, url in DEFAULT_UPSTREAMS.items()}
    for cluster in cfg["static_resources"]["clusters"]:
        name = cluster["name"]
        if name == "llmproxy_sidecar":
            _set_sidecar_ports(cluster, [sidecar_port] if isinstance(sidecar_port, int) else list(sidecar_port))
        elif name in upstreams:
            up = upstreams[name]
            _endpoint(cluster).update(address=up.host, port_value=up.port)
            if up.scheme == "http":
                cluster.pop("transport_socket", None)
            else:
                tls = cluster["transport_socket"]["typed_config"]
                tls["sni"] = up.host
                tls["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"] = [
                    {"san_type": "DNS", "matcher": {"exact": up.host}}
                ]
        if ca_file:
            _set_ca(cluster, ca_file)
    for route in _routes(cfg):
        action = route.get("route")
        if not action:
            continue
        if idle_timeout_s is not None and "idle_timeout" in action:
            action["idle_timeout"] = f"{idle_timeout_s}s"
        cluster = action.get("cluster")
        if cluster in upstreams:
            up, old = upstreams[cluster], defaults[cluster]
            action["host_rewrite_literal"] = up.authority
            if "prefix_rewrite" in action:
                rest = action["prefix_rewrite"][len(old.base_path) :]
                action["prefix_rewrite"] = up.base_path + rest
            elif up.base_path:
                action["prefix_rewrite"] = up.base_path + route["match"].get("prefix", "/")
    return cfg


EXT_PROC_SERVICE = "envoy.service.ext_proc.v3.ExternalProcessor"  # the name the sidecar's health service reports


def _set_sidecar_ports(cluster: dict, ports: list[int]) -> None:
    """One endpoint per sidecar worker (``llmproxy up --sidecar-workers``), round robin per ext_proc stream.

    Each HTTP request is one ext_proc stream, and Envoy picks the endpoint per stream, so the workers share
    the requests evenly. (One port shared with SO_REUSEPORT would let the kernel spread *connections*,
    and Envoy holds about one HTTP/2 connection to the sidecar per worker thread: every stream could land
    on the same process.)"""
    if not ports:
        raise ValueError("at least one sidecar port")
    group = cluster["load_assignment"]["endpoints"][0]
    template = group["lb_endpoints"][0]
    group["lb_endpoints"] = []
    for port in ports:
        entry = copy.deepcopy(template)
        entry["endpoint"]["address"]["socket_address"]["port_value"] = port
        group["lb_endpoints"].append(entry)
    if len(ports) > 1:
        cluster["lb_policy"] = "ROUND_ROBIN"  # Envoy's default, stated for the reader
        # A worker that crashed (its supervisor restarts it in seconds) leaves the rotation at its first
        # refused connection (outlier detection: one local-origin failure ejects it), and its health check
        # brings it back once it serves again. Without them Envoy keeps sending it half the requests,
        # which fail closed until it is back. With one worker there is nowhere else to send them.
        cluster["outlier_detection"] = {
            "split_external_local_origin_errors": True,
            "consecutive_local_origin_failure": 1,
            "interval": "1s",
            "base_ejection_time": "2s",
            "max_ejection_percent": 50,
        }
        cluster["health_checks"] = [
            {
                "timeout": "0.5s",
                "interval": "1s",
                "no_traffic_interval": "1s",
                "unhealthy_threshold": 1,
                "healthy_threshold": 1,
                "grpc_health_check": {"service_name": EXT_PROC_SERVICE},
            }
        ]


def _endpoint(cluster: dict) -> dict:
    return cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]


def _set_ca(cluster: dict, ca_file: str) -> None:
    ts = cluster.get("transport_socket")
    if ts:
        vc = ts["typed_config"]["common_tls_context"].get("validation_context")
        if vc and "trusted_ca" in vc:
            vc["trusted_ca"] = {"filename": ca_file}


def _routes(cfg: dict):
    for listener in cfg["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for f in chain["filters"]:
                rc = f.get("typed_config", {}).get("route_config")
                if rc:
                    for vh in rc["virtual_hosts"]:
                        yield from vh["routes"]


class _NoAliasDumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:  # shared sub-dicts are written out in full
        return True


def write(cfg: dict, path: Path) -> Path:
    path.write_text(
        "# Rendered by `llmproxy up` from envoy.yaml; edit that file, not this one.\n"
        + yaml.dump(cfg, Dumper=_NoAliasDumper, sort_keys=False)
    )
    return path
