"""The Kubernetes manifests: rendered offline (tests/deploy/kustomize.py), every object valid against the
Kubernetes JSON schemas (kubernetes-validate, bundled), yamllint-clean, and holding the security and
availability properties the deployment relies on."""

from __future__ import annotations

import base64
import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from extproc.__main__ import parse_args as sidecar_args
from intelligence.access import AccessSettings, UnsafeBind, require_safe_bind
from intelligence.jobs.__main__ import parse_args as jobs_args

from . import kustomize
from .helpers import DEPLOY, K8S, OVERLAYS, ROOT, containers, pod_specs, render_envoy, render_overlay, yaml_docs

# the oldest release with every feature used (lifecycle `sleep`: beta and on by default in 1.30) and the
# newest the schema bundle has
K8S_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
CRD_KINDS = {("postgresql.cnpg.io/v1", "Cluster"), ("monitoring.coreos.com/v1", "PodMonitor")}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, list[dict[str, Any]]]:
    out = {name: render_overlay(name, tmp_path_factory.mktemp(name)) for name in OVERLAYS}
    out["base"] = kustomize.render(K8S / "base")
    return out


def _by(objs: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


# ----------------------------------------------------------------------------------------------- schema
@pytest.mark.parametrize("overlay", [*OVERLAYS, "base"])
def test_every_object_validates_against_the_kubernetes_schemas(rendered, overlay: str) -> None:
    objs = rendered[overlay]
    kinds = {o["kind"] for o in objs}
    assert {
        "Deployment",
        "Service",
        "ConfigMap",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "NetworkPolicy",
        "ServiceAccount",
    } <= kinds
    for obj in objs:
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)


def test_schema_validation_catches_mistakes(rendered) -> None:
    deployment = copy.deepcopy(_by(rendered["production"], "Deployment")["llmproxy-gateway"])
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {"port": 1}  # a typo
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[-1], strict=True)


def test_examples_validate() -> None:
    seen = set()
    for path in sorted((K8S / "examples").glob("*.yaml")):
        for obj in yaml_docs(path):
            seen.add(obj["kind"])
            if (obj["apiVersion"], obj["kind"]) in CRD_KINDS:
                continue  # custom resources: no schema bundled; checked below
            for version in K8S_VERSIONS:
                kubernetes_validate.validate(obj, version, strict=True)
    assert {"Cluster", "NetworkPolicy", "PodMonitor", "Job"} <= seen
    cluster = yaml_docs(K8S / "examples" / "cnpg-cluster.yaml")[0]
    initdb = cluster["spec"]["bootstrap"]["initdb"]
    assert cluster["metadata"]["name"] == "llmproxy-db" and cluster["spec"]["instances"] >= 2
    assert initdb["database"] == "llmproxy" and "CREATE EXTENSION IF NOT EXISTS vector" in initdb["postInitApplicationSQL"]
    assert ":" in cluster["spec"]["imageName"] and not cluster["spec"]["imageName"].endswith(":latest")
    monitor = yaml_docs(K8S / "examples" / "podmonitor.yaml")[0]
    assert {e["path"] for e in monitor["spec"]["podMetricsEndpoints"]} == {"/stats/prometheus", "/metrics/sidecar"}


def test_yamllint_is_clean() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "yamllint", "-c", str(DEPLOY / ".yamllint.yaml"), "-f", "parsable", str(DEPLOY)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_yamllint_catches_mistakes(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: 1\na: 2\n")
    r = subprocess.run(
        [sys.executable, "-m", "yamllint", "-c", str(DEPLOY / ".yamllint.yaml"), str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1 and "duplication" in r.stdout


# -------------------------------------------------------------------------------------------- security
def test_no_usable_secret_is_shipped(rendered) -> None:
    for overlay in ("base", "production"):
        assert not _by(rendered[overlay], "Secret"), f"{overlay} must not ship a Secret"
    for path in DEPLOY.rglob("*"):
        if path.is_file() and path.suffix in (".yaml", ".yml", ".example", ".md", ".py", ".json", ".Dockerfile", ""):
            text = path.read_text(errors="replace")
            assert "CHANGE_ME" not in text and "changeme" not in text.lower(), path
    # the dev Secret comes from a file git ignores; its template has no values, and an empty SECRET_KEY
    # leaves the dashboard and control API refusing to bind off loopback
    r = subprocess.run(["git", "check-ignore", "-q", "deploy/k8s/overlays/dev/secrets.env"], cwd=ROOT)
    assert r.returncode == 0, "deploy/k8s/overlays/dev/secrets.env must be gitignored"
    r = subprocess.run(["git", "check-ignore", "-q", "deploy/compose/.env"], cwd=ROOT)
    assert r.returncode == 0, "deploy/compose/.env must be gitignored"
    example = dict(
        line.split("=", 1)
        for line in (K8S / "overlays" / "dev" / "secrets.env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert example == {"DATABASE_URL": "", "SECRET_KEY": ""}
    settings = AccessSettings.from_env(example)
    with pytest.raises(UnsafeBind):
        require_safe_bind("0.0.0.0", settings, what="dashboard")
    dev = _by(rendered["dev"], "Secret")
    assert list(dev) == [n for n in dev if n.startswith("llmproxy-secrets-")] and len(dev) == 1


def _security_problems(objs: list[dict]) -> list[str]:
    problems = []
    for obj in objs:
        for spec in pod_specs(obj):
            where = f"{obj['kind']}/{obj['metadata']['name']}"
            psc = spec.get("securityContext") or {}
            if not psc.get("runAsNonRoot") or (psc.get("runAsUser") or 0) == 0:
                problems.append(f"{where}: pod not runAsNonRoot with a non-zero runAsUser")
            if (psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
                problems.append(f"{where}: seccompProfile not RuntimeDefault")
            if spec.get("automountServiceAccountToken") is not False:
                problems.append(f"{where}: service account token mounted")
            for c in containers(spec):
                sc = c.get("securityContext") or {}
                name = f"{where}/{c['name']}"
                if sc.get("allowPrivilegeEscalation") is not False:
                    problems.append(f"{name}: allowPrivilegeEscalation")
                if sc.get("readOnlyRootFilesystem") is not True:
                    problems.append(f"{name}: root filesystem writable")
                if (sc.get("capabilities") or {}).get("drop") != ["ALL"]:
                    problems.append(f"{name}: capabilities not dropped")
                if sc.get("privileged"):
                    problems.append(f"{name}: privileged")
                res = c.get("resources") or {}
                for need in (("requests", "cpu"), ("requests", "memory"), ("limits", "memory")):
                    if need[1] not in (res.get(need[0]) or {}):
                        problems.append(f"{name}: no resources.{need[0]}.{need[1]}")
                image = c["image"]
                name_, tag, digest = kustomize.split_image(image)
                if not digest and (not tag or tag == "latest" or not any(ch.isdigit() for ch in tag)):
                    problems.append(f"{name}: image {image!r} not pinned to a version")
    return problems


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_are_hardened_and_pinned(rendered, overlay: str) -> None:
    assert _security_problems(rendered[overlay]) == []


def test_security_check_catches_mistakes(rendered) -> None:
    objs = copy.deepcopy(rendered["production"])
    gw = _by(objs, "Deployment")["llmproxy-gateway"]["spec"]["template"]["spec"]
    gw["containers"][0]["image"] = "envoyproxy/envoy:latest"
    gw["containers"][1]["securityContext"]["readOnlyRootFilesystem"] = False
    del gw["containers"][1]["resources"]["limits"]
    problems = _security_problems(objs)
    assert any("not pinned" in p for p in problems) and any("writable" in p for p in problems)
    assert any("limits.memory" in p for p in problems)


def _loopback_ports(container: dict, envoy_cfg: dict) -> set[int]:
    """Ports this container listens on only on 127.0.0.1 (the kubelet cannot reach them)."""
    ports: set[int] = set()
    args = [*(container.get("command") or []), *(container.get("args") or [])]
    if "--host" in args and args[args.index("--host") + 1] in ("127.0.0.1", "localhost", "::1"):
        ports.add(int(args[args.index("--port") + 1]) if "--port" in args else 50051)
    if "envoy" in container["image"]:
        ports.add(envoy_cfg["admin"]["address"]["socket_address"]["port_value"])
        for listener in envoy_cfg["static_resources"]["listeners"]:
            addr = listener["address"]["socket_address"]
            if addr["address"].startswith("127."):
                ports.add(addr["port_value"])
    return ports


def _probe_problems(objs: list[dict]) -> list[str]:
    envoy_cfg = yaml.safe_load(
        next(o["data"]["envoy.yaml"] for o in objs if o["kind"] == "ConfigMap" and "envoy.yaml" in o.get("data", {}))
    )
    problems = []
    for obj in objs:
        for spec in pod_specs(obj):
            for c in spec.get("containers") or []:
                named = {p["name"]: p["containerPort"] for p in c.get("ports") or [] if "name" in p}
                declared = {p["containerPort"] for p in c.get("ports") or []}
                loopback = _loopback_ports(c, envoy_cfg)
                for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
                    probe = c.get(kind)
                    if not probe:
                        continue
                    for handler in ("httpGet", "tcpSocket", "grpc"):
                        if handler in probe:
                            port = probe[handler]["port"]
                            port = named.get(port, port)
                            where = f"{obj['metadata']['name']}/{c['name']} {kind}"
                            if port in loopback:
                                problems.append(f"{where}: port {port} is bound to loopback only")
                            if port not in declared:
                                problems.append(f"{where}: port {port} is not a containerPort")
    return problems


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_probe_aims_at_a_loopback_only_port(rendered, overlay: str) -> None:
    objs = rendered[overlay]
    assert _probe_problems(objs) == []
    gw = _by(objs, "Deployment")["llmproxy-gateway"]["spec"]["template"]["spec"]
    envoy, sidecar = (next(c for c in gw["containers"] if c["name"] == n) for n in ("envoy", "sidecar"))
    assert envoy["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "ops"}
    assert envoy["livenessProbe"]["httpGet"] == {"path": "/live", "port": "ops"}
    for kind in ("startupProbe", "livenessProbe"):
        assert "grpc_health_probe.py" in " ".join(sidecar[kind]["exec"]["command"])
    assert "readinessProbe" not in sidecar  # Envoy's /ready covers it, through its gRPC health check
    assert not any(
        "grpc" in (c.get(k) or {}) for c in gw["containers"] for k in ("readinessProbe", "livenessProbe", "startupProbe")
    )


def test_probe_check_catches_the_old_bug(rendered) -> None:
    objs = copy.deepcopy(rendered["production"])
    gw = _by(objs, "Deployment")["llmproxy-gateway"]["spec"]["template"]["spec"]
    sidecar = next(c for c in gw["containers"] if c["name"] == "sidecar")
    sidecar["ports"] = [{"containerPort": 50051}]
    sidecar["readinessProbe"] = {"grpc": {"port": 50051}}
    assert _probe_problems(objs) == ["llmproxy-gateway/sidecar readinessProbe: port 50051 is bound to loopback only"]


# ------------------------------------------------------------------------------------------- structure
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_references_and_selectors_resolve(rendered, overlay: str) -> None:
    objs = rendered[overlay]
    names = {(o["kind"], o["metadata"]["name"]) for o in objs}
    missing = set()
    for obj in objs:
        for spec in pod_specs(obj):
            for c in containers(spec):
                for src in c.get("envFrom") or []:
                    for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                        if key in src and (kind, src[key]["name"]) not in names:
                            missing.add((kind, src[key]["name"]))
            for vol in spec.get("volumes") or []:
                if "configMap" in vol and ("ConfigMap", vol["configMap"]["name"]) not in names:
                    missing.add(("ConfigMap", vol["configMap"]["name"]))
            assert spec.get("serviceAccountName") is None or ("ServiceAccount", spec["serviceAccountName"]) in names
    # only the Secret the operator creates (production) may be missing
    assert missing == ({("Secret", "llmproxy-secrets")} if overlay == "production" else set())
    deployments = _by(objs, "Deployment")
    templates = [d["spec"]["template"]["metadata"]["labels"] for d in deployments.values()]
    for svc in _by(objs, "Service").values():
        selector = svc["spec"]["selector"]
        assert sum(all(t.get(k) == v for k, v in selector.items()) for t in templates) == 1, svc["metadata"]["name"]
    for d in deployments.values():
        assert d["spec"]["selector"]["matchLabels"].items() <= d["spec"]["template"]["metadata"]["labels"].items()
    hpa = _by(objs, "HorizontalPodAutoscaler")["llmproxy-gateway"]
    assert hpa["spec"]["scaleTargetRef"]["name"] in deployments
    assert "replicas" not in deployments["llmproxy-gateway"]["spec"]  # the HPA owns it
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    pdb = _by(objs, "PodDisruptionBudget")["llmproxy-gateway"]
    gateway_labels = deployments["llmproxy-gateway"]["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= gateway_labels.items()
    assert {"llmproxy-gateway", "llmproxy-worker", "llmproxy-intelligence", "llmproxy-dashboard"} <= set(deployments)
    namespace = {"dev": "llmproxy-dev", "production": "llmproxy"}[overlay]
    assert {o["metadata"].get("namespace") for o in objs} == {namespace}


def test_envoy_config_comes_from_a_hash_named_configmap(rendered, tmp_path: Path) -> None:
    objs = rendered["production"]
    envoy_maps = [o for o in objs if o["kind"] == "ConfigMap" and "envoy.yaml" in o.get("data", {})]
    assert len(envoy_maps) == 1
    cm = envoy_maps[0]
    assert cm["data"]["envoy.yaml"] == render_envoy.TARGETS["k8s"].read_text()
    assert cm["metadata"]["name"] == f"llmproxy-envoy-{kustomize.content_hash(cm)}"
    gw = _by(objs, "Deployment")["llmproxy-gateway"]["spec"]["template"]["spec"]
    assert {"name": "envoy-config", "configMap": {"name": cm["metadata"]["name"]}} in gw["volumes"]
    # an edit gives another name, so the pods roll
    import shutil

    shutil.copytree(K8S, tmp_path / "k8s")
    (tmp_path / "k8s" / "base" / "envoy.yaml").write_text(cm["data"]["envoy.yaml"] + "# edited\n")
    again = kustomize.render(tmp_path / "k8s" / "overlays" / "production")
    assert [o["metadata"]["name"] for o in again if o["kind"] == "ConfigMap" and "envoy.yaml" in o["data"]] != [
        cm["metadata"]["name"]
    ]


def test_container_commands_use_real_flags(rendered) -> None:
    for obj in rendered["production"]:
        for spec in pod_specs(obj):
            for c in containers(spec):
                argv = [*(c.get("command") or []), *(c.get("args") or [])]
                if c["image"].startswith("llmproxy-sidecar") and not c.get("command"):
                    sidecar_args(argv)  # the image's entrypoint is python -m extproc
                elif argv[:3] == ["python", "-m", "intelligence.jobs"]:
                    jobs_args(argv[3:])
                elif c["image"].startswith("llmproxy-dashboard"):
                    assert argv == ["--host", "0.0.0.0", "--port", "8501"]
                elif argv[:2] == ["python", "-c"]:
                    compile(argv[2], "<command>", "exec")
    with pytest.raises(SystemExit):
        sidecar_args(["--no-such-flag"])


def test_gateway_network_policy_allows_only_dns_database_and_public_https(rendered) -> None:
    pol = _by(rendered["production"], "NetworkPolicy")["llmproxy-gateway"]["spec"]
    assert set(pol["policyTypes"]) == {"Ingress", "Egress"}
    allowed = {(p.get("protocol", "TCP"), p["port"]) for rule in pol["egress"] for p in rule["ports"]}
    assert allowed == {("UDP", 53), ("TCP", 53), ("TCP", 5432), ("TCP", 443)}
    https = next(rule for rule in pol["egress"] if rule["ports"] == [{"protocol": "TCP", "port": 443}])
    block = https["to"][0]["ipBlock"]
    assert block["cidr"] == "0.0.0.0/0"
    assert {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"} <= set(block["except"])
    ingress_ports = {p["port"] for rule in pol["ingress"] for p in rule["ports"]}
    assert ingress_ports == {10000, 8081}
    worker = _by(rendered["production"], "NetworkPolicy")["llmproxy-worker"]["spec"]
    assert {p["port"] for rule in worker["egress"] for p in rule["ports"]} == {53, 5432}


def test_shutdown_order_gives_envoy_time_and_the_sidecar_more(rendered) -> None:
    gw = _by(rendered["production"], "Deployment")["llmproxy-gateway"]["spec"]["template"]["spec"]
    envoy, sidecar = (next(c for c in gw["containers"] if c["name"] == n) for n in ("envoy", "sidecar"))
    sleep = envoy["lifecycle"]["preStop"]["sleep"]["seconds"]
    prestop = sidecar["lifecycle"]["preStop"]["exec"]["command"]
    max_wait = float(prestop[prestop.index("--max-wait") + 1])
    assert "envoy_drain.py" in " ".join(prestop) and "prestop" in prestop
    assert "poststart" in sidecar["lifecycle"]["postStart"]["exec"]["command"]
    assert sleep < max_wait < gw["terminationGracePeriodSeconds"]


def test_migrations_run_before_every_workload(rendered) -> None:
    for name, d in _by(rendered["production"], "Deployment").items():
        init = d["spec"]["template"]["spec"].get("initContainers") or []
        assert [c["name"] for c in init] == ["migrate"], name
        assert "intelligence.store.migrate import upgrade" in init[0]["command"][-1]


# ------------------------------------------------------------------------------------------- renderer
def test_renderer_hash_matches_kustomize() -> None:
    # from `kubectl kustomize` (kustomize v5.5.0): configMapGenerator {name: x, literals: [A=b]} -> x-b9t2424hkf
    assert kustomize.content_hash({"kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"A": "b"}}) == "b9t2424hkf"
    secret = {"kind": "Secret", "type": "Opaque", "metadata": {"name": "s"}, "data": {"A": base64.b64encode(b"b").decode()}}
    assert len(kustomize.content_hash(secret)) == 10


def test_renderer_strategic_merge_and_json6902() -> None:
    base = {"spec": {"containers": [{"name": "a", "image": "a", "env": [{"name": "X", "value": "1"}]}, {"name": "b"}]}}
    patch = {"spec": {"containers": [{"name": "c"}, {"name": "a", "env": [{"name": "Y", "value": "2"}]}]}}
    merged = kustomize.strategic_merge(base, patch)
    assert [c["name"] for c in merged["spec"]["containers"]] == ["c", "a", "b"]  # kustomize's order
    assert merged["spec"]["containers"][1]["env"] == [{"name": "Y", "value": "2"}, {"name": "X", "value": "1"}]
    assert kustomize.strategic_merge({"a": {"b": 1, "c": 2}}, {"a": {"b": None}}) == {"a": {"c": 2}}
    obj = {"spec": {"list": [1, 2]}}
    kustomize._json6902(
        obj, [{"op": "add", "path": "/spec/list/-", "value": 3}, {"op": "replace", "path": "/spec/list/0", "value": 0}]
    )
    assert obj == {"spec": {"list": [0, 2, 3]}}


def test_renderer_refuses_what_it_does_not_implement(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("namePrefix: x-\nresources: []\n")
    with pytest.raises(kustomize.KustomizeError, match="namePrefix"):
        kustomize.render(tmp_path)
