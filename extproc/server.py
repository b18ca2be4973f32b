"""The grpc.aio ExternalProcessor: a thin loop from Envoy's stream to an :class:`Exchange`."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from . import wire
from .exchange import Context, Exchange

log = logging.getLogger("llmproxy.server")


class Processor(wire.ExternalProcessorServicer):
    def __init__(self, ctx: Context):
        self.ctx = ctx

    async def Process(self, request_iterator: AsyncIterator, context: grpc.aio.ServicerContext):
        exchange = Exchange(self.ctx)
        try:
            async for req in request_iterator:
                try:
                    phase, event = wire.decode(req)
                except ValueError:
                    log.warning("request %s: unknown ext_proc message; ignored", exchange.request_id)
                    continue
                reply = exchange.handle(phase, event)
                if inspect.isawaitable(reply):  # only gateway-answered endpoints (feedback) await I/O
                    reply = await reply
                yield wire.encode(phase, reply)
                if isinstance(reply, wire.Immediate):
                    return
        except asyncio.CancelledError:
            exchange.abort("client or Envoy closed the stream before the exchange completed")
            raise
        except grpc.aio.AioRpcError as exc:  # pragma: no cover - depends on Envoy timing
            exchange.abort(f"ext_proc stream error: {exc.code().name}")
        finally:
            exchange.abort("stream ended before the response completed")


async def serve(ctx: Context, *, host: str, port: int, max_message: int) -> tuple[grpc.aio.Server, health.aio.HealthServicer]:
    options = [
        ("grpc.max_receive_message_length", max_message),
        ("grpc.max_send_message_length", max_message),
        ("grpc.so_reuseport", 0),
        ("grpc.keepalive_time_ms", 30_000),
    ]
    server = grpc.aio.server(options=options)
    wire.add_processor(Processor(ctx), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"sidecar port {host}:{port} is already in use")
    await server.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    await health_servicer.set("envoy.service.ext_proc.v3.ExternalProcessor", health_pb2.HealthCheckResponse.SERVING)
    return server, health_servicer
