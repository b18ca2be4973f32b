"""envoy.yaml and the runtime copy `llmproxy up` renders from it both pass `envoy --mode validate`."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from extproc.cli import envoy_config
from extproc.cli.up import _envoy_bin

ROOT = Path(__file__).resolve().parents[2]


def validate(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [_envoy_bin(), "--mode", "validate", "-c", str(path), "-l", "error"], capture_output=True, text=True, timeout=120
    )


def _routes(cfg):
    return {r.get("name"): r for r in envoy_config._routes(cfg)}


def _cluster(cfg, name):
    return next(c for c in cfg["static_resources"]["clusters"] if c["name"] == name)


def test_operator_config_validates() -> None:
    r = validate(ROOT / "envoy.yaml")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK" in r.stdout


def test_rendered_config_with_overrides_validates(tmp_path) -> None:
    ups = envoy_config.parse_upstream_specs(
        ["openai=http://127.0.0.1:9999", "openrouter=http://127.0.0.1:9998/api", "anthropic=https://claude.internal.example:8443"]
    )
    cfg = envoy_config.render(
        ROOT / "envoy.yaml",
        listen_host="127.0.0.1",
        port=11000,
        admin_port=11001,
        sidecar_port=11002,
        upstreams=ups,
        ca_file="/etc/ssl/certs/ca-certificates.crt",
        idle_timeout_s=7,
    )
    path = envoy_config.write(cfg, tmp_path / "runtime.yaml")
    r = validate(path)
    assert r.returncode == 0, r.stdout + r.stderr
    routes = _routes(cfg)
    assert routes["prefix-openai"]["route"]["host_rewrite_literal"] == "127.0.0.1:9999"
    assert routes["prefix-openai"]["route"]["prefix_rewrite"] == "/"
    assert routes["prefix-openrouter"]["route"]["prefix_rewrite"] == "/api/"
    assert routes["unified-openrouter"]["route"]["prefix_rewrite"] == "/api/v1/"
    assert routes["prefix-anthropic"]["route"]["host_rewrite_literal"] == "claude.internal.example:8443"
    assert routes["prefix-openai"]["route"]["idle_timeout"] == "7s"
    assert "transport_socket" not in _cluster(cfg, "openai")
    anth = _cluster(cfg, "anthropic")["transport_socket"]["typed_config"]
    assert anth["sni"] == "claude.internal.example"
    assert cfg["admin"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 11001}
    sidecar = envoy_config._endpoint(_cluster(cfg, "llmproxy_sidecar"))
    assert sidecar["port_value"] == 11002


def test_upstream_without_base_path_drops_openrouter_api_prefix() -> None:
    ups = envoy_config.parse_upstream_specs(["openrouter=http://127.0.0.1:9998"])
    cfg = envoy_config.render(ROOT / "envoy.yaml", listen_host="127.0.0.1", port=1, admin_port=2, sidecar_port=3, upstreams=ups)
    routes = _routes(cfg)
    assert routes["prefix-openrouter"]["route"]["prefix_rewrite"] == "/"
    assert routes["unified-openrouter"]["route"]["prefix_rewrite"] == "/v1/"


@pytest.mark.parametrize("spec", ["openai", "nope=http://x", "openai=ftp://x", "openai=not-a-url"])
def test_bad_upstream_specs_are_rejected(spec: str) -> None:
    with pytest.raises(ValueError):
        envoy_config.parse_upstream_specs([spec])


def test_security_defaults_in_operator_config() -> None:
    import yaml

    cfg = yaml.safe_load((ROOT / "envoy.yaml").read_text())
    assert cfg["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    listener = cfg["static_resources"]["listeners"][0]
    assert listener["address"]["socket_address"]["address"] == "127.0.0.1"
    filters = listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
    names = [f["name"] for f in filters]
    ext = filters[names.index("envoy.filters.http.ext_proc")]["typed_config"]
    assert ext["failure_mode_allow"] is False
    assert ext["status_on_error"] == {"code": "ServiceUnavailable"}  # unreachable sidecar: 503, not a 500
    # client-sent x-llmproxy-* headers are gone before the sidecar, and so before any route matches on them
    strip = filters[0]["typed_config"]["mutations"]["request_mutations"]
    assert names[0] == "envoy.filters.http.header_mutation" and strip == [
        {"remove_on_match": {"key_matcher": {"prefix": "x-llmproxy-"}}}
    ]
    retry = _routes(cfg)["prefix-openai"]["route"]["retry_policy"]
    assert "5xx" in retry["retry_on"] and 429 in retry["retriable_status_codes"]
    assert retry["rate_limited_retry_back_off"]["reset_headers"][0]["name"] == "retry-after"
