"""A small, strict Kustomize renderer: the subset deploy/k8s uses, offline, without kubectl or kustomize.

Supported kustomization fields: ``resources`` (files and directories), ``namespace``, ``labels``
(``pairs`` with ``includeSelectors: false``, ``includeTemplates``), ``images``, ``replicas``,
``configMapGenerator`` / ``secretGenerator`` (``literals``, ``files``, ``envs``, ``behavior``
create/merge/replace, ``options.disableNameSuffixHash``), ``generatorOptions.disableNameSuffixHash``,
and ``patches`` (strategic merge or JSON 6902, from ``path`` or inline ``patch``, optional ``target``).
Any other field raises :class:`KustomizeError`, so a kustomization using something new fails the tests
instead of rendering wrong.

Generated ConfigMaps and Secrets get kustomize's content-hash suffix (same algorithm: sha256 of the Go JSON
encoding of kind, data (and type) and an empty name, first 10 hex digits with 0->g 1->h 3->k a->m e->t), and the
references to them in pod specs (envFrom, env valueFrom, volumes, projected volumes) follow the new name.
Cross-checked against ``kubectl kustomize`` (kustomize v5.5.0) on deploy/k8s: identical objects.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
SUPPORTED_FIELDS = {
    "apiVersion",
    "kind",
    "resources",
    "namespace",
    "labels",
    "images",
    "replicas",
    "configMapGenerator",
    "secretGenerator",
    "generatorOptions",
    "patches",
}
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PersistentVolume",
    "StorageClass",
    "PriorityClass",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
    "IngressClass",
    "RuntimeClass",
}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}
# strategic-merge keys of the lists deploy/k8s patches (by field name; Service ports merge on `port`)
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "imagePullSecrets": "name",
    "topologySpreadConstraints": "topologyKey",
    "hostAliases": "ip",
}


class KustomizeError(Exception):
    pass


class _Generated:
    """Bookkeeping for a generated object: its name before the hash suffix, and whether to add one."""

    def __init__(self, hashed: bool):
        self.hashed = hashed


def render(directory: Path) -> list[dict[str, Any]]:
    """The objects ``kustomize build DIRECTORY`` prints (as dicts, in kustomize's input order)."""
    resources, generated = _build(Path(directory))
    renames: dict[tuple[str, str], str] = {}
    for res in resources:
        meta = id(res)
        if meta in generated and generated[meta].hashed:
            old = res["metadata"]["name"]
            new = f"{old}-{content_hash(res)}"
            res["metadata"]["name"] = new
            renames[(res["kind"], old)] = new
    for res in resources:
        _rename_references(res, renames)
    return resources


def _find_kustomization(directory: Path) -> Path:
    for name in KUSTOMIZATION_FILES:
        if (directory / name).is_file():
            return directory / name
    raise KustomizeError(f"{directory}: no kustomization.yaml")


def _build(directory: Path) -> tuple[list[dict[str, Any]], dict[int, _Generated]]:
    kfile = _find_kustomization(directory)
    k = yaml.safe_load(kfile.read_text()) or {}
    unknown = set(k) - SUPPORTED_FIELDS
    if unknown:
        raise KustomizeError(f"{kfile}: unsupported kustomization fields {sorted(unknown)}")
    resources: list[dict[str, Any]] = []
    generated: dict[int, _Generated] = {}
    for entry in k.get("resources") or []:
        path = (directory / entry).resolve()
        if path.is_dir():
            sub, sub_generated = _build(path)
            resources.extend(sub)
            generated.update(sub_generated)
        elif path.is_file():
            resources.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
        else:
            raise KustomizeError(f"{kfile}: resource {entry!r} not found")
    options = k.get("generatorOptions") or {}
    unknown = set(options) - {"disableNameSuffixHash"}
    if unknown:
        raise KustomizeError(f"{kfile}: unsupported generatorOptions {sorted(unknown)}")
    for kind, field in (("ConfigMap", "configMapGenerator"), ("Secret", "secretGenerator")):
        for spec in k.get(field) or []:
            _generate(directory, kfile, kind, spec, options, resources, generated)
    for spec in k.get("patches") or []:
        _patch(directory, kfile, spec, resources)
    if k.get("namespace"):
        for res in resources:
            if res.get("kind") not in CLUSTER_SCOPED:
                res.setdefault("metadata", {})["namespace"] = k["namespace"]
    for image in k.get("images") or []:
        _set_images(resources, image)
    for rep in k.get("replicas") or []:
        for res in resources:
            if res.get("kind") in WORKLOADS and res["metadata"]["name"] == rep["name"]:
                res["spec"]["replicas"] = rep["count"]
    for label in k.get("labels") or []:
        _add_labels(kfile, resources, label)
    return resources, generated


# ------------------------------------------------------------------------------------------ generators
def _generate(
    directory: Path, kfile: Path, kind: str, spec: dict, options: dict, resources: list, generated: dict[int, _Generated]
) -> None:
    unknown = set(spec) - {"name", "behavior", "literals", "files", "envs", "options", "type"}
    if unknown:
        raise KustomizeError(f"{kfile}: unsupported generator fields {sorted(unknown)}")
    data: dict[str, str] = {}
    for literal in spec.get("literals") or []:
        key, sep, value = literal.partition("=")
        if not sep:
            raise KustomizeError(f"{kfile}: literal {literal!r} is not KEY=VALUE")
        data[key] = value.strip("\"'") if len(value) > 1 and value[0] == value[-1] and value[0] in "\"'" else value
    for entry in spec.get("files") or []:
        key, sep, rel = entry.partition("=")
        if not sep:
            key, rel = Path(entry).name, entry
        path = directory / rel
        if not path.is_file():
            raise KustomizeError(f"{kfile}: file {rel!r} of generator {spec['name']!r} not found")
        data[key] = path.read_text()
    for rel in spec.get("envs") or []:
        path = directory / rel
        if not path.is_file():
            raise KustomizeError(f"{kfile}: env file {rel!r} of generator {spec['name']!r} not found")
        for n, line in enumerate(path.read_text().splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key, sep, value = line.partition("=")
            if not sep:
                raise KustomizeError(f"{path}:{n}: expected KEY=VALUE")
            data[key.strip()] = value
    behavior = spec.get("behavior", "create")
    opts = spec.get("options") or {}
    unknown = set(opts) - {"disableNameSuffixHash"}
    if unknown:
        raise KustomizeError(f"{kfile}: unsupported generator options {sorted(unknown)}")
    hashed = not (opts.get("disableNameSuffixHash", options.get("disableNameSuffixHash", False)))
    existing = next((r for r in resources if r.get("kind") == kind and r["metadata"]["name"] == spec["name"]), None)
    if behavior == "create":
        if existing is not None:
            raise KustomizeError(f"{kfile}: {kind} {spec['name']} already exists (use behavior: merge or replace)")
        obj: dict[str, Any] = {"apiVersion": "v1", "kind": kind, "metadata": {"name": spec["name"]}}
        if kind == "Secret":
            obj["type"] = spec.get("type", "Opaque")
            obj["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
        else:
            obj["data"] = data
        resources.append(obj)
        generated[id(obj)] = _Generated(hashed)
        return
    if existing is None:
        raise KustomizeError(f"{kfile}: behavior {behavior} but no {kind} {spec['name']} to {behavior}")
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()} if kind == "Secret" else data
    if behavior == "merge":
        existing.setdefault("data", {}).update(encoded)
    elif behavior == "replace":
        existing["data"] = dict(encoded)
    else:
        raise KustomizeError(f"{kfile}: unknown behavior {behavior!r}")


def _go_json(value: Any) -> str:
    """encoding/json.Marshal's bytes: sorted keys, no spaces, HTML-safe escapes."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def content_hash(obj: dict[str, Any]) -> str:
    """kustomize's name suffix for a generated ConfigMap or Secret."""
    # kustomize looks the name up with a path its lookup does not split, so the encoded name is always ""
    doc: dict[str, Any] = {"kind": obj["kind"], "name": "", "data": obj.get("data") or ""}
    if obj["kind"] == "Secret":
        doc["type"] = obj.get("type", "")
    digest = hashlib.sha256(_go_json(doc).encode()).hexdigest()[:10]
    return digest.translate(str.maketrans({"0": "g", "1": "h", "3": "k", "a": "m", "e": "t"}))


def _pod_specs(res: dict[str, Any]) -> list[dict[str, Any]]:
    kind = res.get("kind")
    if kind == "Pod":
        return [res.get("spec") or {}]
    if kind in WORKLOADS:
        return [res["spec"]["template"].get("spec") or {}]
    if kind == "CronJob":
        return [res["spec"]["jobTemplate"]["spec"]["template"].get("spec") or {}]
    return []


def _rename_references(res: dict[str, Any], renames: dict[tuple[str, str], str]) -> None:
    def fix(ref: dict | None, kind: str, key: str = "name") -> None:
        if ref and (kind, ref.get(key)) in renames:
            ref[key] = renames[(kind, ref[key])]

    for spec in _pod_specs(res):
        for c in [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]:
            for src in c.get("envFrom") or []:
                fix(src.get("configMapRef"), "ConfigMap")
                fix(src.get("secretRef"), "Secret")
            for env in c.get("env") or []:
                ref = env.get("valueFrom") or {}
                fix(ref.get("configMapKeyRef"), "ConfigMap")
                fix(ref.get("secretKeyRef"), "Secret")
        for vol in spec.get("volumes") or []:
            fix(vol.get("configMap"), "ConfigMap")
            fix(vol.get("secret"), "Secret", "secretName")
            for src in (vol.get("projected") or {}).get("sources") or []:
                fix(src.get("configMap"), "ConfigMap")
                fix(src.get("secret"), "Secret")


# --------------------------------------------------------------------------------------------- patches
def _patch(directory: Path, kfile: Path, spec: dict, resources: list) -> None:
    unknown = set(spec) - {"path", "patch", "target"}
    if unknown:
        raise KustomizeError(f"{kfile}: unsupported patch fields {sorted(unknown)}")
    text = (directory / spec["path"]).read_text() if "path" in spec else spec["patch"]
    docs = [d for d in yaml.safe_load_all(text) if d is not None]
    if len(docs) != 1:
        raise KustomizeError(f"{kfile}: a patch must be one document ({spec})")
    patch = docs[0]
    target = spec.get("target")
    if isinstance(patch, list):  # JSON 6902
        if not target:
            raise KustomizeError(f"{kfile}: a JSON 6902 patch needs a target")
        matched = [r for r in resources if _matches(r, target)]
        for res in matched:
            _json6902(res, patch)
    else:
        target = target or {"kind": patch.get("kind"), "name": (patch.get("metadata") or {}).get("name")}
        matched = [r for r in resources if _matches(r, target)]
        for res in matched:
            merged = strategic_merge(res, patch)
            res.clear()
            res.update(merged)
    if not matched:
        raise KustomizeError(f"{kfile}: patch {spec.get('path', '<inline>')} matches no resource")


def _matches(res: dict, target: dict) -> bool:
    unknown = set(target) - {"kind", "name", "group", "version"}
    if unknown:
        raise KustomizeError(f"unsupported patch target fields {sorted(unknown)}")
    if target.get("kind") and res.get("kind") != target["kind"]:
        return False
    if target.get("name") and res["metadata"].get("name") != target["name"]:
        return False
    group, _, version = res.get("apiVersion", "").rpartition("/")
    if target.get("group") is not None and group != target["group"]:
        return False
    return not (target.get("version") and version != target["version"])


def strategic_merge(base: Any, patch: Any, field: str = "") -> Any:
    """A strategic merge patch: maps merge recursively (null deletes), keyed lists merge item by item."""
    if isinstance(base, dict) and isinstance(patch, dict):
        if patch.get("$patch") == "replace":
            return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
        out = copy.deepcopy(base)
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            elif key in out:
                out[key] = strategic_merge(out[key], value, key)
            else:
                out[key] = copy.deepcopy(value)
        return out
    if isinstance(base, list) and isinstance(patch, list):
        key = MERGE_KEYS.get(field)
        if field == "ports":
            key = "containerPort" if any("containerPort" in p for p in [*base, *patch] if isinstance(p, dict)) else "port"
        if key is None or not all(isinstance(p, dict) for p in [*base, *patch]):
            return copy.deepcopy(patch)
        # kustomize's order: the patch's items (merged with their base item) first, then the base's others
        by_key = {b.get(key): b for b in base}
        patched = {item.get(key) for item in patch}
        out = []
        for item in patch:
            if item.get("$patch") == "delete":
                continue
            match = by_key.get(item.get(key))
            out.append(copy.deepcopy(item) if match is None else strategic_merge(match, item, ""))
        out.extend(copy.deepcopy(b) for b in base if b.get(key) not in patched)
        return out
    return copy.deepcopy(patch)


def _json6902(res: dict, ops: list[dict]) -> None:
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        parent = res
        for p in parts[:-1]:
            parent = parent[int(p)] if isinstance(parent, list) else parent[p]
        last = parts[-1]
        if op["op"] in ("add", "replace"):
            if isinstance(parent, list):
                if last == "-":
                    parent.append(copy.deepcopy(op["value"]))
                elif op["op"] == "add":
                    parent.insert(int(last), copy.deepcopy(op["value"]))
                else:
                    parent[int(last)] = copy.deepcopy(op["value"])
            else:
                if op["op"] == "replace" and last not in parent:
                    raise KustomizeError(f"replace of missing path {op['path']}")
                parent[last] = copy.deepcopy(op["value"])
        elif op["op"] == "remove":
            if isinstance(parent, list):
                parent.pop(int(last))
            else:
                del parent[last]
        else:
            raise KustomizeError(f"unsupported JSON 6902 op {op['op']!r}")


# ------------------------------------------------------------------------------------- images, labels
def split_image(ref: str) -> tuple[str, str | None, str | None]:
    """``name[:tag][@digest]`` -> (name, tag, digest); a registry port is not a tag."""
    name, _, digest = ref.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    tag = None
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
    return name, tag, digest or None


def _set_images(resources: list, image: dict) -> None:
    for res in resources:
        for spec in _pod_specs(res):
            for c in [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]:
                name, tag, digest = split_image(c["image"])
                if name != image["name"]:
                    continue
                name = image.get("newName", name)
                if "digest" in image:
                    c["image"] = f"{name}@{image['digest']}"
                elif "newTag" in image:
                    c["image"] = f"{name}:{image['newTag']}"
                else:
                    c["image"] = name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")


def _add_labels(kfile: Path, resources: list, label: dict) -> None:
    unknown = set(label) - {"pairs", "includeSelectors", "includeTemplates"}
    if unknown or label.get("includeSelectors"):
        raise KustomizeError(f"{kfile}: unsupported labels entry {label}")
    pairs = label.get("pairs") or {}
    for res in resources:
        res.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)
        if label.get("includeTemplates"):
            if res.get("kind") in WORKLOADS:
                res["spec"]["template"].setdefault("metadata", {}).setdefault("labels", {}).update(pairs)
            elif res.get("kind") == "CronJob":
                tmpl = res["spec"]["jobTemplate"]["spec"]["template"]
                tmpl.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)
