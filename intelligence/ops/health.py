"""Health probes of a running stack's parts, shared by `llmproxy up`, `llmproxy status` and the dashboard."""

from __future__ import annotations

import asyncio


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


__all__ = ["database_ok", "envoy_ready", "grpc_healthy"]
