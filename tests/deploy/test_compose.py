"""deploy/compose/compose.yaml: valid against the Compose specification's JSON schema, and what a laptop
stack needs: every service, a migration step before the Python services, health checks, environment-only
configuration with no default for secrets, non-root hardened containers, ports on loopback only."""

from __future__ import annotations

import importlib.resources
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from extproc.__main__ import parse_args as sidecar_args
from intelligence.jobs.__main__ import parse_args as jobs_args

from . import kustomize
from .helpers import DEPLOY, render_envoy

COMPOSE = DEPLOY / "compose" / "compose.yaml"
OURS = ("migrate", "sidecar", "envoy", "worker", "intelligence", "dashboard")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def schema() -> dict:
    path = importlib.resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    return json.loads(path.read_text())


def test_compose_file_matches_the_compose_specification(compose, schema) -> None:
    jsonschema.validators.validator_for(schema)(schema).validate(compose)


def test_schema_catches_mistakes(compose, schema) -> None:
    broken = json.loads(json.dumps(compose))
    broken["services"]["sidecar"]["healthcheck"]["intervall"] = "5s"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validators.validator_for(schema)(schema).validate(broken)


def test_services_and_start_order(compose) -> None:
    services = compose["services"]
    assert set(services) == {"postgres", *OURS}
    assert services["postgres"]["image"].startswith("pgvector/pgvector:")
    assert services["envoy"]["image"] == "envoyproxy/envoy:v1.40.0"
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert services["migrate"]["restart"] == "no"
    assert "intelligence.store.migrate import upgrade" in " ".join(services["migrate"]["entrypoint"])
    for name in ("sidecar", "worker", "intelligence", "dashboard"):
        assert services[name]["depends_on"] == {"migrate": {"condition": "service_completed_successfully"}}, name
    assert services["envoy"]["depends_on"] == {"sidecar": {"condition": "service_healthy"}}
    assert services["worker"]["entrypoint"] == ["python", "-m", "intelligence.memory"]
    for name, svc in services.items():
        if name != "migrate":
            assert "healthcheck" in svc or name == "worker", f"{name}: no healthcheck"


def test_images_are_pinned(compose) -> None:
    for name, svc in compose["services"].items():
        image = svc["image"]
        _, tag, digest = kustomize.split_image(image)
        assert digest or (tag and tag != "latest" and re.search(r"\d", tag)), f"{name}: {image}"


def test_configuration_is_environment_only_and_secrets_have_no_default(compose) -> None:
    text = COMPOSE.read_text()
    for var in ("POSTGRES_PASSWORD", "SECRET_KEY"):
        uses = re.findall(r"\$\{" + var + r"([^}]*)\}", text)
        assert uses and all(u.startswith(":?") for u in uses), f"{var} must be required (${{{var}:?...}}): {uses}"
    for name, svc in compose["services"].items():
        env = svc.get("environment") or []
        assert isinstance(env, list), f"{name}: environment as a list of NAME=VALUE / NAME"
        for entry in env:
            key, sep, value = entry.partition("=")
            if sep and re.search(r"KEY|PASSWORD|SECRET|TOKEN|DATABASE_URL", key):
                assert "${" in value, f"{name}: {key} has a literal value"
    env_files = [svc.get("env_file") for svc in compose["services"].values() if svc.get("env_file")]
    assert env_files == []
    example = (DEPLOY / "compose" / ".env.example").read_text()
    assert "POSTGRES_PASSWORD=\n" in example and "SECRET_KEY=\n" in example  # empty: compose stops with a message


def test_containers_are_hardened_and_loopback_published(compose) -> None:
    for name in OURS:
        svc = compose["services"][name]
        user = str(svc.get("user", ""))
        assert user and not user.startswith("0") and user.split(":")[0] != "root", f"{name}: runs as root"
        assert svc.get("read_only") is True, name
        assert svc.get("cap_drop") == ["ALL"], name
        assert "no-new-privileges:true" in svc.get("security_opt", []), name
    for name, svc in compose["services"].items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port} published beyond loopback"


def test_commands_use_real_flags_and_the_rendered_envoy_config(compose) -> None:
    services = compose["services"]
    args = sidecar_args(services["sidecar"]["command"])
    assert (args.host, args.port) == ("0.0.0.0", 50051)
    entry = services["intelligence"]["entrypoint"]
    assert entry[:3] == ["python", "-m", "intelligence.jobs"]
    jobs_args(entry[3:])
    mount = services["envoy"]["volumes"][0]
    src = mount.split(":")[0]
    assert (COMPOSE.parent / src).resolve() == render_envoy.TARGETS["compose"]
    cfg = yaml.safe_load(render_envoy.TARGETS["compose"].read_text())
    sidecar = next(c for c in cfg["static_resources"]["clusters"] if c["name"] == "llmproxy_sidecar")
    address = sidecar["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    assert address["address"] == "sidecar" and address["port_value"] == args.port
    build = services["sidecar"]["build"]
    assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve().is_file()
    assert Path(
        COMPOSE.parent / services["dashboard"]["build"]["context"] / services["dashboard"]["build"]["dockerfile"]
    ).is_file()
