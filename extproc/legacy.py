"""Legacy ``POST /?target_url=URL`` forwarding (the old debug proxy): allowlisted destinations only.

The allowlist (``--allow-target`` / ``LLMPROXY_LEGACY_ALLOWLIST``) is port-aware:

- ``api.example.com``: that host on its scheme's default port (443 for https, 80 for http);
- ``api.example.com:8443``: that host on that port only; ``api.example.com:*``: any port;
- an IP literal (``10.1.2.3:8080``, ``[fd00::1]:8080``) or ``localhost`` allows exactly that address.

Every address a hostname resolves to must be public. Private, loopback, link-local, shared,
reserved and multicast addresses are refused unless the entry names the address itself (an IP
literal) or ``localhost``: allowlisting ``partner.example`` does not allow it to resolve to
``127.0.0.1`` or to a cloud metadata address. Envoy's dynamic forward proxy resolves the name again
when it connects; the resolver cache here is short so the two answers agree in practice, but a
hostile authoritative DNS server for an allowlisted name could still race them (docs/security.md).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from intelligence.errors import InvalidInput

DEFAULT_PORTS = {"http": 80, "https": 443}
RESOLVE_TIMEOUT_S = 2.0
_CACHE_TTL_S = 30.0
_MAX_TARGET_LEN = 4096


class TargetRefused(InvalidInput):
    """The target_url cannot be forwarded; ``status`` and ``code`` say how the client is answered."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


@dataclass(frozen=True, slots=True)
class Entry:
    host: str  # lower-case hostname or canonical IP text
    port: int | None  # None: the scheme's default port; 0: any port
    literal: bool  # an IP literal or localhost: private addresses allowed, exactly this one


@dataclass(frozen=True, slots=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str  # path and query, as forwarded

    @property
    def authority(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_entry(raw: str) -> Entry:
    """One allowlist entry; ValueError names what is wrong."""
    text = raw.strip().lower()
    if not text:
        raise ValueError("empty allowlist entry")
    host, port_text = text, ""
    if text.startswith("["):  # [v6]:port
        end = text.find("]")
        if end < 0:
            raise ValueError(f"allowlist entry {raw!r}: unclosed [")
        host, rest = text[1:end], text[end + 1 :]
        port_text = rest[1:] if rest.startswith(":") else rest
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    port: int | None = None
    if port_text == "*":
        port = 0
    elif port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"allowlist entry {raw!r}: port must be 1-65535 or *")
        port = int(port_text)
    literal = host == "localhost"
    try:
        host = str(ipaddress.ip_address(host))
        literal = True
    except ValueError:
        if not host or any(c in host for c in "/@?#") or host.count(":"):
            raise ValueError(f"allowlist entry {raw!r}: expected HOST, HOST:PORT, HOST:* or an IP address") from None
    return Entry(host.rstrip("."), port, literal)


def parse_target(target: str) -> tuple[SplitResult, str, int]:
    """(parts, host, port) of an absolute http(s) URL; TargetRefused (400) for anything else."""
    if len(target) > _MAX_TARGET_LEN:
        raise TargetRefused(400, "invalid_target_url", "llmproxy: target_url is too long")
    try:
        parts = urlsplit(target)
        port = parts.port  # raises ValueError on a port out of range or not a number
        host = parts.hostname
    except ValueError as exc:
        raise TargetRefused(400, "invalid_target_url", f"llmproxy: invalid target_url: {exc}") from None
    if parts.scheme not in DEFAULT_PORTS or not host:
        raise TargetRefused(400, "invalid_target_url", "llmproxy: invalid target_url: need an absolute http(s) URL")
    if parts.username is not None or parts.password is not None:
        raise TargetRefused(400, "invalid_target_url", "llmproxy: target_url must not carry credentials (user:pass@)")
    host = host.lower().rstrip(".")
    try:
        host = str(ipaddress.ip_address(host))
    except ValueError:
        pass
    return parts, host, port if port is not None else DEFAULT_PORTS[parts.scheme]


class LegacyTargets:
    """The allowlist, parsed once at start (a bad entry stops the sidecar), and the check per request."""

    def __init__(self, entries: tuple[str, ...] | list[str], *, resolver: Resolver | None = None) -> None:
        self.entries = tuple(parse_entry(e) for e in entries)
        self.resolver = resolver or Resolver()

    def _entry(self, scheme: str, host: str, port: int) -> Entry | None:
        for e in self.entries:
            if e.host != host:
                continue
            if e.port == 0 or e.port == port or (e.port is None and port == DEFAULT_PORTS[scheme]):
                return e
        return None

    async def approve(self, target: str) -> Target:
        parts, host, port = parse_target(target)
        entry = self._entry(parts.scheme, host, port)
        if entry is None:
            raise TargetRefused(
                403,
                "target_not_allowed",
                f"llmproxy: target {host}:{port} is not on the gateway's allowlist (LLMPROXY_LEGACY_ALLOWLIST / --allow-target)",
            )
        if not entry.literal:
            addresses = await self.resolver.resolve(host, port)
            private = [a for a in addresses if not _public(a)]
            if private:
                raise TargetRefused(
                    403,
                    "target_not_allowed",
                    f"llmproxy: target {host} resolves to a non-public address ({private[0]}); allowlist that address "
                    "itself to allow it",
                )
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return Target(parts.scheme, host, port, path)


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


class Resolver:
    """getaddrinfo off the event loop, bounded in time, with a short cache."""

    def __init__(self, *, timeout_s: float = RESOLVE_TIMEOUT_S, ttl_s: float = _CACHE_TTL_S) -> None:
        self.timeout_s, self.ttl_s = timeout_s, ttl_s
        self._cache: dict[tuple[str, int], tuple[float, tuple[str, ...]]] = {}

    async def resolve(self, host: str, port: int) -> tuple[str, ...]:
        now = time.monotonic()
        hit = self._cache.get((host, port))
        if hit is not None and now - hit[0] < self.ttl_s:
            return hit[1]
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), self.timeout_s)
        except (OSError, TimeoutError) as exc:
            raise TargetRefused(502, "target_unresolvable", f"llmproxy: target host {host} does not resolve ({exc})") from None
        addresses = tuple(sorted({str(info[4][0]).split("%")[0] for info in infos}))
        if len(self._cache) > 1024:
            self._cache.clear()
        self._cache[(host, port)] = (now, addresses)
        return addresses


__all__ = ["Entry", "LegacyTargets", "Resolver", "Target", "TargetRefused", "parse_entry", "parse_target"]
