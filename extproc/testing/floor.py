"""The ext_proc floor: a minimal Envoy external processor, the control `llmproxy bench` measures beside the sidecar.

``python -m extproc.testing.floor --port N [--stats FILE] [--uvloop]`` serves Envoy's ext_proc gRPC service on
127.0.0.1:N (plain grpc.aio, no health service, no other work) and does what any body-reading processor must do for
one chat exchange, and nothing more:

* request headers: CONTINUE;
* request body (BUFFERED): ``json.loads`` it, CONTINUE unchanged;
* response headers: CONTINUE; for a non-streamed (JSON) response it also asks for the body BUFFERED with
  ``mode_override``, as the sidecar does under the shipped envoy.yaml (default STREAMED, ``allow_mode_override``);
  under a config that already buffers, Envoy ignores the override;
* response body: BUFFERED JSON is parsed whole with ``json.loads``; a STREAMED ``text/event-stream`` body is split
  into SSE events chunk by chunk and every ``data:`` payload is parsed (``[DONE]`` excepted). CONTINUE unchanged.

So behind the same Envoy config as the gateway it handles the same exchanges (non-streamed and streamed), and its
CPU time per request is the floor a Python grpc.aio processor cannot go below with these phases.

Counters (messages per phase, JSON documents and SSE events parsed, errors) are written as JSON to ``--stats`` on
SIGUSR1 and at exit (SIGTERM). Vendored from the shared ``minimal_extproc.py`` (its mode D, plus its mode F for
SSE); see docs/benchmarks-cli.md.

The Nagle trap: an upstream that writes the response headers and the body in two writes meets Nagle's algorithm
plus delayed ACKs; throughput then collapses to about 170 req/s and CPU per request rises. gRPC sets TCP_NODELAY,
and so do the fake upstream (aiohttp) and the bench's load generator; any other upstream used with this processor
must too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

REQUEST_HEADERS_CONTINUE = pb.ProcessingResponse(request_headers=pb.HeadersResponse())
REQUEST_BODY_CONTINUE = pb.ProcessingResponse(request_body=pb.BodyResponse())
RESPONSE_HEADERS_CONTINUE = pb.ProcessingResponse(response_headers=pb.HeadersResponse())
RESPONSE_HEADERS_BUFFER = pb.ProcessingResponse(
    response_headers=pb.HeadersResponse(),
    mode_override=processing_mode_pb2.ProcessingMode(response_body_mode=processing_mode_pb2.ProcessingMode.BUFFERED),
)
RESPONSE_BODY_CONTINUE = pb.ProcessingResponse(response_body=pb.BodyResponse())
GENERIC_CONTINUE = {
    "request_trailers": pb.ProcessingResponse(request_trailers=pb.TrailersResponse()),
    "response_trailers": pb.ProcessingResponse(response_trailers=pb.TrailersResponse()),
}

PHASES = ("request_headers", "request_body", "response_headers", "response_body")


def new_stats() -> dict[str, int]:
    return {"streams": 0, **dict.fromkeys(PHASES, 0), "json_parsed": 0, "sse_events_parsed": 0, "errors": 0}


def _is_event_stream(headers: pb.HttpHeaders) -> bool:
    for h in headers.headers.headers:
        if h.key.lower() == "content-type":
            value = h.raw_value or h.value.encode()
            return value.lower().startswith(b"text/event-stream")
    return False


def parse_sse(buffer: bytes, stats: dict[str, int]) -> bytes:
    """Parse every complete SSE event in ``buffer`` (``json.loads`` of each ``data:`` payload); return the rest."""
    *events, rest = buffer.replace(b"\r\n", b"\n").split(b"\n\n")
    for event in events:
        for line in event.split(b"\n"):
            if line.startswith(b"data:"):
                payload = line[5:].strip()
                if payload and payload != b"[DONE]":
                    try:
                        json.loads(payload)
                        stats["sse_events_parsed"] += 1
                    except ValueError:
                        stats["errors"] += 1
    return rest


class FloorProcessor(pb_grpc.ExternalProcessorServicer):
    """One gRPC stream per HTTP exchange; the four phases, parsed and continued unchanged."""

    def __init__(self, stats: dict[str, int] | None = None) -> None:
        self.stats = stats if stats is not None else new_stats()

    def _parse_json(self, body: bytes) -> None:
        if not body:
            return
        try:
            json.loads(body)
            self.stats["json_parsed"] += 1
        except ValueError:
            self.stats["errors"] += 1

    async def Process(
        self, request_iterator: AsyncIterator[pb.ProcessingRequest], context: Any
    ) -> AsyncIterator[pb.ProcessingResponse]:
        stats = self.stats
        stats["streams"] += 1
        sse: bytes | None = None  # the unparsed tail of a streamed SSE response
        async for req in request_iterator:
            which = req.WhichOneof("request")
            stats[which] = stats.get(which, 0) + 1
            if which == "request_headers":
                yield REQUEST_HEADERS_CONTINUE
            elif which == "request_body":
                self._parse_json(req.request_body.body)
                yield REQUEST_BODY_CONTINUE
            elif which == "response_headers":
                if _is_event_stream(req.response_headers):
                    sse = b""
                    yield RESPONSE_HEADERS_CONTINUE
                else:
                    yield RESPONSE_HEADERS_BUFFER
            elif which == "response_body":
                body = req.response_body.body
                if sse is not None:
                    sse = parse_sse(sse + body, stats)
                else:
                    self._parse_json(body)
                yield RESPONSE_BODY_CONTINUE
            else:  # trailers: not asked for by the shipped config; answered so the stream never stalls
                stats["errors"] += 1
                if which in GENERIC_CONTINUE:
                    yield GENERIC_CONTINUE[which]


def _dump(stats: dict[str, int], path: Path | None) -> None:
    if path is None:
        return
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps({**stats, "t": time.time()}))
    tmp.replace(path)


async def serve(port: int, stats_file: Path | None) -> None:
    processor = FloorProcessor()
    server = grpc.aio.server()
    pb_grpc.add_ExternalProcessorServicer_to_server(processor, server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGUSR1, _dump, processor.stats, stats_file)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    print(f"floor processor on 127.0.0.1:{bound} loop={type(loop).__module__}", flush=True)
    try:
        await stop.wait()
    finally:
        _dump(processor.stats, stats_file)
        await server.stop(0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m extproc.testing.floor", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True, help="gRPC port on 127.0.0.1 (0: any free port, printed)")
    parser.add_argument("--stats", type=Path, default=None, help="write counters here (JSON) on SIGUSR1 and at exit")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop instead of asyncio's loop")
    args = parser.parse_args(argv)
    if args.uvloop:
        import uvloop

        uvloop.run(serve(args.port, args.stats))
    else:
        asyncio.run(serve(args.port, args.stats))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
