"""TLS for the control API: server certificates (optionally verifying client certificates) and the
client's trust settings, both read from the environment.

Server (the intelligence process, ``python -m intelligence.control``):

* ``LLMPROXY_CONTROL_TLS_CERT`` / ``LLMPROXY_CONTROL_TLS_KEY``: PEM certificate chain and key; both or neither.
* ``LLMPROXY_CONTROL_TLS_CLIENT_CA``: PEM CA bundle; when set, clients must present a certificate it signed (mTLS).

Client (the CLI):

* ``LLMPROXY_CONTROL_TLS_CA``: PEM CA bundle that signed the server's certificate (turns TLS on).
* ``LLMPROXY_CONTROL_TLS=1``: TLS trusting the system roots instead.
* ``LLMPROXY_CONTROL_TLS_CLIENT_CERT`` / ``LLMPROXY_CONTROL_TLS_CLIENT_KEY``: the client's certificate for mTLS.
* ``LLMPROXY_CONTROL_TLS_SERVER_NAME``: the name to verify when the address is not in the certificate.

Bearer tokens are credentials: :func:`require_private_channel` refuses to send one in plaintext
beyond loopback (``LLMPROXY_CONTROL_ALLOW_PLAINTEXT=1`` opts out, for a network that is already
encrypted, such as a service mesh).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import grpc

from intelligence.access import is_loopback
from intelligence.errors import ConfigError

CERT_ENV = "LLMPROXY_CONTROL_TLS_CERT"
KEY_ENV = "LLMPROXY_CONTROL_TLS_KEY"
CLIENT_CA_ENV = "LLMPROXY_CONTROL_TLS_CLIENT_CA"
CA_ENV = "LLMPROXY_CONTROL_TLS_CA"
SYSTEM_ROOTS_ENV = "LLMPROXY_CONTROL_TLS"
CLIENT_CERT_ENV = "LLMPROXY_CONTROL_TLS_CLIENT_CERT"
CLIENT_KEY_ENV = "LLMPROXY_CONTROL_TLS_CLIENT_KEY"
SERVER_NAME_ENV = "LLMPROXY_CONTROL_TLS_SERVER_NAME"
ALLOW_PLAINTEXT_ENV = "LLMPROXY_CONTROL_ALLOW_PLAINTEXT"
_TRUE = ("1", "true", "yes", "on")


class TLSConfigError(ConfigError):
    """A TLS setting is incomplete or names a file that cannot be read."""


class PlaintextRefused(ConfigError):
    """A bearer token would cross the network unencrypted."""


def _read(path: str, what: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise TLSConfigError(f"control API TLS: cannot read {what} {path}: {exc.strerror or exc}") from None
    if b"-----BEGIN" not in data:
        raise TLSConfigError(f"control API TLS: {what} {path} is not PEM")
    return data


def _env(env: dict[str, str] | None) -> dict[str, str]:
    return dict(os.environ) if env is None else env


@dataclass(frozen=True, slots=True)
class ServerTLS:
    cert_file: str
    key_file: str
    client_ca_file: str | None = None  # set: mTLS, a client certificate signed by this CA is required

    @property
    def mutual(self) -> bool:
        return self.client_ca_file is not None

    @classmethod
    def from_env(
        cls, env: dict[str, str] | None = None, *, cert: str | None = None, key: str | None = None, client_ca: str | None = None
    ) -> ServerTLS | None:
        """None when TLS is not configured; explicit arguments win over the environment."""
        env = _env(env)
        cert = cert or env.get(CERT_ENV) or None
        key = key or env.get(KEY_ENV) or None
        client_ca = client_ca or env.get(CLIENT_CA_ENV) or None
        if cert is None and key is None:
            if client_ca is not None:
                raise TLSConfigError(f"control API TLS: {CLIENT_CA_ENV} needs {CERT_ENV} and {KEY_ENV} as well")
            return None
        if cert is None or key is None:
            raise TLSConfigError(f"control API TLS: set both {CERT_ENV} and {KEY_ENV} (only one is set)")
        return cls(cert, key, client_ca)

    def credentials(self) -> grpc.ServerCredentials:
        """Reads the files now, so a bad path fails at start-up rather than at the first handshake."""
        pair = (_read(self.key_file, "key"), _read(self.cert_file, "certificate"))
        root = _read(self.client_ca_file, "client CA") if self.client_ca_file else None
        return grpc.ssl_server_credentials([pair], root_certificates=root, require_client_auth=root is not None)


@dataclass(frozen=True, slots=True)
class ClientTLS:
    ca_file: str | None = None  # None: the system's trusted roots
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, *, ca: str | None = None) -> ClientTLS | None:
        """None when TLS is not asked for; ``ca`` (a --control-ca flag) wins over the environment."""
        env = _env(env)
        ca = ca or env.get(CA_ENV) or None
        cert = env.get(CLIENT_CERT_ENV) or None
        key = env.get(CLIENT_KEY_ENV) or None
        if (cert is None) != (key is None):
            raise TLSConfigError(f"control API TLS: set both {CLIENT_CERT_ENV} and {CLIENT_KEY_ENV} (only one is set)")
        wanted = ca is not None or cert is not None or env.get(SYSTEM_ROOTS_ENV, "").strip().lower() in _TRUE
        if not wanted:
            return None
        return cls(ca, cert, key, env.get(SERVER_NAME_ENV) or None)

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca_file, "CA") if self.ca_file else None,
            private_key=_read(self.key_file, "client key") if self.key_file else None,
            certificate_chain=_read(self.cert_file, "client certificate") if self.cert_file else None,
        )

    def channel_options(self) -> list[tuple[str, str]]:
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []


def target_host(addr: str) -> str:
    """The host of a gRPC target such as ``10.0.0.5:50052``, ``[::1]:50052`` or ``dns:///ctl.internal:50052``."""
    target = addr.strip()
    for scheme in ("dns:///", "dns:", "ipv4:", "ipv6:"):
        if target.startswith(scheme):
            target = target[len(scheme) :]
            break
    if "/" in target:  # dns://authority/host:port
        target = target.rpartition("/")[2]
    if target.startswith("["):
        return target[1 : target.find("]")] if "]" in target else target[1:]
    if target.count(":") == 1:
        return target.partition(":")[0]
    return target  # a bare host, or an IPv6 address without brackets or port


def is_local_target(addr: str) -> bool:
    if addr.startswith(("unix:", "unix-abstract:")):
        return True
    return is_loopback(target_host(addr))


def require_private_channel(addr: str, *, token: str | None, tls: ClientTLS | None, env: dict[str, str] | None = None) -> None:
    """Refuse to send a bearer token in plaintext to anything but loopback."""
    if not token or tls is not None or is_local_target(addr):
        return
    if _env(env).get(ALLOW_PLAINTEXT_ENV, "").strip().lower() in _TRUE:
        return
    raise PlaintextRefused(
        f"refusing to send the access token in plaintext to {addr}: it is not a loopback address. "
        f"Enable TLS (set {CA_ENV} to the CA that signed the server's certificate, or {SYSTEM_ROOTS_ENV}=1 to trust "
        f"the system roots), or set {ALLOW_PLAINTEXT_ENV}=1 if the network is already encrypted."
    )
