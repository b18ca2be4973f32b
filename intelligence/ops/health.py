"""Health probes of a running stack's parts, shared by `llmproxy up`, `llmproxy status` and the dashboard."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any


def grpc_healthy(port: int, host: str = "127.0.0.1", timeout: float = 1.0) -> bool:
    """The sidecar (or any gRPC server with the standard health service) answers SERVING."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    try:
        with grpc.insecure_channel(f"{host}:{port}") as ch:
            resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
            return resp.status == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False


def envoy_ready(admin_port: int, host: str = "127.0.0.1", timeout: float = 1.0) -> bool:
    """Envoy's admin ``/ready`` answers 200 (live and its listeners up)."""
    import httpx

    try:
        return httpx.get(f"http://{host}:{admin_port}/ready", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


async def database_state(url: str, timeout: float = 3.0) -> tuple[bool, str]:
    """(healthy, what is wrong in a few words): ``select 1`` within ``timeout``, and no recovery in progress.

    The words name the problem an operator acts on: refused (server down), in recovery (a backend crashed
    and the postmaster is resetting, or the server is starting), timed out (overloaded or stuck),
    authentication. Never the URL (it may carry a password).
    """
    import asyncpg

    from intelligence.store.engine import asyncpg_dsn

    try:
        conn = await asyncio.wait_for(asyncpg.connect(asyncpg_dsn(url), timeout=timeout), timeout + 0.5)
    except TimeoutError:
        return False, f"no connection within {timeout:g} s (overloaded, stuck or unreachable)"
    except asyncpg.CannotConnectNowError as exc:  # 57P03: starting up, shutting down, or in crash recovery
        return False, f"not accepting connections: {_first_line(exc)}"
    except asyncpg.InvalidAuthorizationSpecificationError as exc:
        return False, f"authentication failed: {_first_line(exc)}"
    except (OSError, asyncpg.PostgresError) as exc:
        return False, f"unreachable: {_first_line(exc)}"
    try:
        recovering = await asyncio.wait_for(conn.fetchval("select pg_is_in_recovery()"), timeout)
    except TimeoutError:
        return False, f"connected, but `select` did not answer within {timeout:g} s"
    except (OSError, asyncpg.PostgresError) as exc:
        return False, f"connected, then failed: {_first_line(exc)}"
    finally:
        try:
            await asyncio.wait_for(conn.close(), 1.0)
        except (TimeoutError, OSError, asyncpg.PostgresError):
            conn.terminate()
    if recovering:
        return True, "ok (a read-only standby: writes go elsewhere)"
    return True, "ok"


def recorder_state(data_dir: Path, max_age_s: float = 10.0) -> dict[str, Any] | None:
    """The sidecar recorder's state file (intelligence.ingest.STATE_FILE), with ``stale`` when old."""
    import json
    import time

    path = Path(data_dir) / "spool" / "recorder.json"
    try:
        state = json.loads(path.read_text() or "null")
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict):
        return None
    state["stale"] = time.time() - float(state.get("updated_at") or 0) > max_age_s
    return state


def recorder_problems(state: dict[str, Any] | None) -> list[str]:
    """What is wrong with the request log's path to the database, in sentences (empty: nothing)."""
    import time

    if not state or state.get("stale"):
        return []
    out: list[str] = []
    if state.get("dropped"):
        out.append(
            f"request log: {state['dropped']} records DROPPED since the sidecar started (database unavailable and the "
            "spool's disk full): see the sidecar log"
        )
    if state.get("disk_full"):
        out.append(
            f"request log: the spool's disk refuses records ({state.get('last_disk_error') or 'write error'}); "
            f"{state.get('held', 0)} held in memory (bound {state.get('memory_max')}), then dropped"
        )
    if not state.get("db_ok"):
        since = state.get("db_down_since")
        ago = f" for {time.time() - since:.0f} s" if since else ""
        out.append(
            f"request log: the database is not taking writes{ago} ({state.get('last_db_error') or 'unavailable'}); "
            f"{state.get('spool', 0)} records spooled to disk, replayed when it is back"
        )
    elif state.get("spool"):
        out.append(f"request log: replaying {state['spool']} spooled records")
    return out


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


async def database_ok(url: str, timeout: float = 3.0) -> bool:
    """``select 1`` answers within ``timeout``."""
    from sqlalchemy import text

    from intelligence.store.engine import make_engine

    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            await asyncio.wait_for(conn.execute(text("select 1")), timeout)
        return True
    except Exception:  # noqa: BLE001 - any failure means "not healthy"
        return False
    finally:
        await engine.dispose()


__all__ = [
    "database_ok",
    "database_state",
    "envoy_ready",
    "grpc_healthy",
    "recorder_problems",
    "recorder_state",
]
