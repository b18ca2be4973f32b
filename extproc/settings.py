"""Sidecar settings: built once in the entrypoint and passed down (no module-level singleton)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .providers.registry import PROVIDERS
from .routing import DEFAULT_MODEL_ROUTES, parse_route_specs

# Where the gateway takes provider credentials from when the operator wants them injected
# (providers/registry.py). Deliberately prefixed: an OPENAI_API_KEY exported for a developer's own
# scripts must not silently turn the gateway into something that spends that key for every client.
PROVIDER_KEY_ENV = {name: p.key_env for name, p in PROVIDERS.items()}


@dataclass(frozen=True)
class SidecarSettings:
    host: str = "127.0.0.1"
    port: int = 50051
    database_url: str | None = None
    data_dir: Path = Path(".llmproxy")
    model_routes: tuple[tuple[str, str], ...] = DEFAULT_MODEL_ROUTES
    provider_keys: dict[str, str] = field(default_factory=dict, repr=False)  # provider -> key (never logged)
    legacy_allowlist: tuple[str, ...] = ()  # host or host:port allowed for /?target_url=
    log_body_max: int = 1 << 20  # bodies above this are stored truncated in the log
    grpc_max_message: int = 64 << 20
    policy_file: str | None = None  # None: $LLMPROXY_POLICY_FILE or intelligence/policy/default.yaml
    auth_mode: str = "passthrough"  # passthrough (client provider keys go upstream) | required (gateway keys)
    # A key snapshot not refreshed for this long (the database away) refuses every gateway key: a
    # revocation made meanwhile would otherwise go unseen for as long as the outage lasts.
    key_max_staleness_s: float = 300.0
    # Who may open ext_proc streams: Envoy on the same host (or pod) by default. Anyone who can reach
    # the port could otherwise ask the sidecar to route, or read what it answers.
    allowed_peers: tuple[str, ...] = ("127.0.0.0/8", "::1/128")

    # `llmproxy up --sidecar-workers N` runs N sidecar processes, one port each; worker K > 0 keeps its
    # own spool (a spool directory is one process's: its journal and lock).
    worker_index: int = 0
    workers: int = 1

    @property
    def spool_dir(self) -> Path:
        return spool_dir(self.data_dir, self.worker_index)

    @classmethod
    def from_env(cls, **overrides) -> SidecarSettings:
        env = os.environ
        keys = {p: env[v] for p, v in PROVIDER_KEY_ENV.items() if env.get(v)}
        routes = parse_route_specs([env["LLMPROXY_MODEL_ROUTES"]]) if env.get("LLMPROXY_MODEL_ROUTES") else ()
        allow = tuple(h.strip().lower() for h in env.get("LLMPROXY_LEGACY_ALLOWLIST", "").split(",") if h.strip())
        base = dict(
            database_url=env.get("DATABASE_URL"),
            provider_keys=keys,
            model_routes=routes + DEFAULT_MODEL_ROUTES,
            legacy_allowlist=allow,
            auth_mode=env.get("LLMPROXY_AUTH_MODE", "passthrough"),
            key_max_staleness_s=float(env.get("LLMPROXY_KEY_MAX_STALENESS_S", "300")),
            **(
                {"allowed_peers": tuple(p.strip() for p in env["LLMPROXY_SIDECAR_ALLOWED_PEERS"].split(",") if p.strip())}
                if env.get("LLMPROXY_SIDECAR_ALLOWED_PEERS")
                else {}
            ),
        )
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)


def spool_dir(data_dir: Path, worker_index: int = 0) -> Path:
    """Where sidecar worker ``worker_index`` spools and journals its records."""
    return data_dir / ("spool" if worker_index == 0 else f"spool-{worker_index}")


def worker_spool_index(path: Path) -> int | None:
    """K for a ``spool-K`` directory, else None."""
    name = path.name
    if not name.startswith("spool-") or not name[6:].isdigit():
        return None
    return int(name[6:])
