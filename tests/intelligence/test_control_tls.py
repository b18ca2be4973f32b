"""TLS and mTLS on the control API, over real gRPC (127.0.0.1:0) with throwaway certificates.

The certificates are made with the ``openssl`` CLI (the ``cryptography`` package is not a dependency):
a CA, a server certificate for 127.0.0.1/localhost, one for another name only, a client certificate,
and a second, untrusted CA with its own client certificate.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from intelligence.access import AccessSettings, issue_token
from intelligence.control.client import ControlClient, client_from_env
from intelligence.control.server import ControlServer
from intelligence.control.tls import ClientTLS, PlaintextRefused, ServerTLS, TLSConfigError, target_host
from intelligence.enhance import manage

SECRET = "control-tls-test-secret-0123456789abcdef"
ACCESS = AccessSettings(secret_key=SECRET)

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")


@dataclass(frozen=True)
class Pki:
    dir: Path

    def __getitem__(self, name: str) -> str:
        return str(self.dir / name)


def _openssl(cwd: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _ca(cwd: Path, name: str) -> None:
    _openssl(
        cwd,
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.pem",
        "-days",
        "2",
        "-subj",
        f"/CN={name}",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    )


def _leaf(cwd: Path, name: str, ca: str, *, usage: str, san: str | None = None) -> None:
    _openssl(
        cwd,
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.csr",
        "-subj",
        f"/CN={name}",
    )
    ext = cwd / f"{name}.ext"
    ext.write_text(f"basicConstraints=CA:FALSE\nextendedKeyUsage={usage}\n" + (f"subjectAltName={san}\n" if san else ""))
    _openssl(
        cwd,
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        f"{ca}.pem",
        "-CAkey",
        f"{ca}.key",
        "-set_serial",
        str(int.from_bytes(name.encode()[:6], "big")),
        "-days",
        "2",
        "-out",
        f"{name}.pem",
        "-extfile",
        ext.name,
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    _ca(d, "ca")
    _ca(d, "rogue-ca")
    _leaf(d, "server", "ca", usage="serverAuth", san="IP:127.0.0.1,DNS:localhost")
    _leaf(d, "internal", "ca", usage="serverAuth", san="DNS:control.internal")
    _leaf(d, "ops", "ca", usage="clientAuth")
    _leaf(d, "mallory", "rogue-ca", usage="clientAuth")
    return Pki(d)


@pytest.fixture
async def launch(migrated_db) -> AsyncIterator[Callable]:
    started: list[ControlServer] = []

    async def go(tls: ServerTLS | None) -> ControlServer:
        srv = ControlServer(migrated_db.engine, ACCESS, "127.0.0.1", 0, tls=tls, listen=False)
        await srv.start()
        started.append(srv)
        return srv

    yield go
    for srv in started:
        await srv.stop()


def _token(role: str = "viewer", subject: str = "tess") -> str:
    return issue_token(ACCESS, subject, role)


def _whoami(client: ControlClient) -> tuple[str, str]:
    with client:
        me = client.whoami()
        return me.subject, me.role


async def _code(fn: Callable[[], object]) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        await asyncio.to_thread(fn)
    return info.value.code()


# ------------------------------------------------------------------------------ TLS
async def test_tls_server_answers_a_tls_client_and_rejects_plaintext_and_untrusted(pki, launch, migrated_db) -> None:
    server = await launch(ServerTLS(pki["server.pem"], pki["server.key"]))
    assert server.transport == "TLS"
    async with migrated_db.engine.begin() as conn:
        enhancement_id = await manage.create_enhancement(
            conn, None, "system_prompt", {"text": "Be brief."}, "t", "operator", actor="test"
        )

    env = {"LLMPROXY_CONTROL_TLS_CA": pki["ca.pem"], "LLMPROXY_TOKEN": _token("viewer", "tess")}

    def calls() -> tuple[tuple[str, str], list[int]]:
        with client_from_env(server.address, env=env) as client:
            assert client.tls is not None and client.tls.ca_file == pki["ca.pem"]
            me = client.whoami()
            return (me.subject, me.role), [e.id for e in client.list_enhancements()]

    me, listed = await asyncio.to_thread(calls)
    assert me == ("tess", "viewer") and enhancement_id in listed

    # the same server, spoken to in plaintext: the handshake never happens
    plain = ControlClient(server.address, _token(), timeout=3)
    assert await _code(lambda: _whoami(plain)) == grpc.StatusCode.UNAVAILABLE
    # a client that trusts another CA refuses the server's certificate
    rogue = ControlClient(server.address, _token(), tls=ClientTLS(ca_file=pki["rogue-ca.pem"]), timeout=3)
    assert await _code(lambda: _whoami(rogue)) == grpc.StatusCode.UNAVAILABLE


async def test_server_name_override_verifies_a_certificate_for_another_name(pki, launch) -> None:
    server = await launch(ServerTLS(pki["internal.pem"], pki["internal.key"]))  # valid for control.internal only
    wrong_name = ControlClient(server.address, _token(), tls=ClientTLS(ca_file=pki["ca.pem"]), timeout=3)
    assert await _code(lambda: _whoami(wrong_name)) == grpc.StatusCode.UNAVAILABLE
    env = {
        "LLMPROXY_CONTROL_TLS_CA": pki["ca.pem"],
        "LLMPROXY_CONTROL_TLS_SERVER_NAME": "control.internal",
        "LLMPROXY_TOKEN": _token("admin", "root"),
    }
    assert await asyncio.to_thread(lambda: _whoami(client_from_env(server.address, env=env))) == ("root", "admin")


async def test_mtls_requires_a_client_certificate_from_the_client_ca(pki, launch) -> None:
    server = await launch(ServerTLS(pki["server.pem"], pki["server.key"], client_ca_file=pki["ca.pem"]))
    assert server.transport == "mTLS"
    no_cert = ControlClient(server.address, _token(), tls=ClientTLS(ca_file=pki["ca.pem"]), timeout=3)
    assert await _code(lambda: _whoami(no_cert)) == grpc.StatusCode.UNAVAILABLE
    untrusted = ControlClient(
        server.address, _token(), timeout=3, tls=ClientTLS(pki["ca.pem"], pki["mallory.pem"], pki["mallory.key"])
    )
    assert await _code(lambda: _whoami(untrusted)) == grpc.StatusCode.UNAVAILABLE

    env = {
        "LLMPROXY_CONTROL_TLS_CA": pki["ca.pem"],
        "LLMPROXY_CONTROL_TLS_CLIENT_CERT": pki["ops.pem"],
        "LLMPROXY_CONTROL_TLS_CLIENT_KEY": pki["ops.key"],
        "LLMPROXY_TOKEN": _token("viewer", "ops"),
    }
    assert await asyncio.to_thread(lambda: _whoami(client_from_env(server.address, env=env))) == ("ops", "viewer")
    # a certificate does not replace the token: authentication stays the bearer token's job
    certified = ControlClient(server.address, None, timeout=3, tls=ClientTLS(pki["ca.pem"], pki["ops.pem"], pki["ops.key"]))
    assert await _code(lambda: _whoami(certified)) == grpc.StatusCode.UNAUTHENTICATED


async def test_experiments_cli_over_tls(pki, launch, monkeypatch, capsys) -> None:
    from extproc.cli import main

    server = await launch(ServerTLS(pki["server.pem"], pki["server.key"]))
    monkeypatch.setenv("LLMPROXY_TOKEN", _token("viewer"))
    for name in (
        "LLMPROXY_CONTROL_TLS_CA",
        "LLMPROXY_CONTROL_TLS",
        "LLMPROXY_CONTROL_TLS_CLIENT_CERT",
        "LLMPROXY_CONTROL_TLS_CLIENT_KEY",
        "LLMPROXY_CONTROL_ALLOW_PLAINTEXT",
    ):
        monkeypatch.delenv(name, raising=False)

    async def cli(*argv: str) -> tuple[int, str, str]:
        code = 0
        try:
            code = await asyncio.to_thread(main, ["experiments", *argv])
        except SystemExit as exc:
            code = int(exc.code or 0)
        out = capsys.readouterr()
        return int(code or 0), out.out, out.err

    code, out, err = await cli("list", "--json", "--control", server.address, "--control-ca", pki["ca.pem"])
    assert (code, out.strip()) == (0, "[]"), err
    code, _, err = await cli("list", "--control", server.address)  # plaintext to a TLS server
    assert code == 1 and "UNAVAILABLE" in err
    code, _, err = await cli("list", "--control", "192.0.2.10:50052")  # TEST-NET-1: never contacted
    assert code == 2 and "refusing to send the access token in plaintext to 192.0.2.10:50052" in err


# ------------------------------------------------------------------------------ settings and refusals
def test_client_refuses_to_send_a_token_in_plaintext_beyond_loopback(pki) -> None:
    token = _token()
    for addr in ("10.0.0.5:50052", "control.internal:50052", "dns:///control.internal:50052", "[2001:db8::1]:50052"):
        with pytest.raises(PlaintextRefused, match="LLMPROXY_CONTROL_TLS_CA"):
            ControlClient(addr, token)
    # allowed: loopback, no token, TLS, or an explicit opt-out for an already encrypted network
    for addr in ("127.0.0.1:50052", "localhost:50052", "[::1]:50052", "unix:/tmp/control.sock"):
        ControlClient(addr, token).close()
    ControlClient("10.0.0.5:50052", None).close()
    ControlClient("10.0.0.5:50052", token, tls=ClientTLS(ca_file=pki["ca.pem"])).close()
    ControlClient("10.0.0.5:50052", token, env={"LLMPROXY_CONTROL_ALLOW_PLAINTEXT": "1"}).close()
    with pytest.raises(PlaintextRefused):
        client_from_env("10.0.0.5:50052", env={"LLMPROXY_TOKEN": token})
    client_from_env("10.0.0.5:50052", env={"LLMPROXY_TOKEN": token, "LLMPROXY_CONTROL_TLS": "1"}).close()


def test_target_host_parses_grpc_targets() -> None:
    assert [
        target_host(a)
        for a in (
            "10.0.0.5:50052",
            "[::1]:50052",
            "dns:///ctl:1",
            "dns://8.8.8.8/ctl:1",
            "ipv4:127.0.0.1:9",
            "ctl.example",
            "::1",
        )
    ] == ["10.0.0.5", "::1", "ctl", "ctl", "127.0.0.1", "ctl.example", "::1"]


def test_tls_settings_from_env_are_all_or_nothing(pki, tmp_path) -> None:
    assert ServerTLS.from_env({}) is None and ClientTLS.from_env({}) is None
    tls = ServerTLS.from_env(
        {"LLMPROXY_CONTROL_TLS_CERT": "c.pem", "LLMPROXY_CONTROL_TLS_KEY": "k.pem", "LLMPROXY_CONTROL_TLS_CLIENT_CA": "ca.pem"}
    )
    assert tls == ServerTLS("c.pem", "k.pem", "ca.pem") and tls.mutual
    assert (
        ServerTLS.from_env({"LLMPROXY_CONTROL_TLS_CERT": "env.pem", "LLMPROXY_CONTROL_TLS_KEY": "k"}, cert="flag.pem").cert_file
        == "flag.pem"
    )
    with pytest.raises(TLSConfigError, match="LLMPROXY_CONTROL_TLS_KEY"):
        ServerTLS.from_env({"LLMPROXY_CONTROL_TLS_CERT": "c.pem"})
    with pytest.raises(TLSConfigError, match="LLMPROXY_CONTROL_TLS_CERT"):
        ServerTLS.from_env({"LLMPROXY_CONTROL_TLS_CLIENT_CA": "ca.pem"})
    with pytest.raises(TLSConfigError, match="LLMPROXY_CONTROL_TLS_CLIENT_KEY"):
        ClientTLS.from_env({"LLMPROXY_CONTROL_TLS_CLIENT_CERT": "c.pem"})
    assert ClientTLS.from_env({"LLMPROXY_CONTROL_TLS": "1"}) == ClientTLS()
    assert ClientTLS.from_env({"LLMPROXY_CONTROL_TLS_CA": "env.pem"}, ca="flag.pem").ca_file == "flag.pem"

    with pytest.raises(TLSConfigError, match="cannot read key"):
        ServerTLS(pki["server.pem"], str(tmp_path / "missing.key")).credentials()
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(TLSConfigError, match="is not PEM"):
        ServerTLS(str(tmp_path / "junk.pem"), pki["server.key"]).credentials()


def test_server_checks_certificates_at_construction_and_warns_about_plaintext_beyond_loopback(pki, tmp_path, caplog) -> None:
    from intelligence.store.engine import make_engine

    engine = make_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none")  # never connected: nothing is started
    with pytest.raises(TLSConfigError):
        ControlServer(engine, ACCESS, "127.0.0.1", 0, tls=ServerTLS(str(tmp_path / "nope.pem"), pki["server.key"]))
    with caplog.at_level(logging.WARNING, logger="intelligence.control.server"):
        ControlServer(engine, ACCESS, "0.0.0.0", 0)
        ControlServer(engine, ACCESS, "127.0.0.1", 0)
        ControlServer(engine, ACCESS, "0.0.0.0", 0, tls=ServerTLS(pki["server.pem"], pki["server.key"]))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "0.0.0.0" in warnings[0] and "PLAINTEXT" in warnings[0]


def test_intelligence_jobs_reads_control_tls_flags_and_stops_on_a_bad_setting(pki, monkeypatch) -> None:
    from intelligence.jobs.__main__ import control_tls, main, parse_args

    for name in ("LLMPROXY_CONTROL_TLS_CERT", "LLMPROXY_CONTROL_TLS_KEY", "LLMPROXY_CONTROL_TLS_CLIENT_CA"):
        monkeypatch.delenv(name, raising=False)
    args = parse_args(
        [
            "--control-tls-cert",
            pki["server.pem"],
            "--control-tls-key",
            pki["server.key"],
            "--control-tls-client-ca",
            pki["ca.pem"],
        ]
    )
    assert control_tls(args) == ServerTLS(pki["server.pem"], pki["server.key"], pki["ca.pem"])
    assert control_tls(parse_args([])) is None
    with pytest.raises(SystemExit, match="set both LLMPROXY_CONTROL_TLS_CERT and LLMPROXY_CONTROL_TLS_KEY"):
        main(["--database-url", "postgresql://unused/db", "--control-tls-cert", pki["server.pem"]])
