"""One in-process gRPC round trip through the real servicer and the protobuf boundary (wire.py)."""

from __future__ import annotations

import json

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from extproc import wire
from extproc.context import Context
from extproc.pipeline import Pipeline
from extproc.server import serve
from extproc.settings import SidecarSettings
from extproc.stages import default_stages


class ListRecorder:
    def __init__(self) -> None:
        self.records = []

    def submit(self, record) -> None:
        self.records.append(record)


def headers_msg(kind: str, headers: dict[str, str], eos: bool = False) -> pb.ProcessingRequest:
    req = pb.ProcessingRequest()
    h = getattr(req, kind)
    for k, v in headers.items():
        hv = h.headers.headers.add()
        hv.key = k
        hv.raw_value = v.encode()
    h.end_of_stream = eos
    return req


def body_msg(kind: str, data: bytes, eos: bool) -> pb.ProcessingRequest:
    req = pb.ProcessingRequest()
    b = getattr(req, kind)
    b.body = data
    b.end_of_stream = eos
    return req


async def test_round_trip_with_tool_aliasing_and_streaming() -> None:
    rec = ListRecorder()
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = Context(SidecarSettings(), rec)
    server, _health = await serve(ctx.settings, Pipeline(default_stages(ctx)), host="127.0.0.1", port=port, max_message=1 << 20)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            h = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""))
            assert h.status == health_pb2.HealthCheckResponse.SERVING
            stub = pb_grpc.ExternalProcessorStub(ch)
            tools = [{"type": "function", "function": {"name": "a.b/c", "parameters": {}}}]
            body = json.dumps(
                {"model": "gpt-4o", "stream": True, "tools": tools, "messages": [{"role": "user", "content": "hi"}]}
            ).encode()
            call = stub.Process()
            await call.write(
                headers_msg(
                    "request_headers",
                    {
                        ":method": "POST",
                        ":path": "/v1/chat/completions",
                        "x-request-id": "grpc-1",
                        "content-type": "application/json",
                    },
                )
            )
            r = await call.read()
            assert r.WhichOneof("response") == "request_headers"
            assert "accept-encoding" in r.request_headers.response.header_mutation.remove_headers
            await call.write(body_msg("request_body", body, True))
            r = await call.read()
            common = r.request_body.response
            assert common.clear_route_cache
            hdrs = {o.header.key: o.header.raw_value for o in common.header_mutation.set_headers}
            assert hdrs["x-llmproxy-provider"] == b"openai"
            forwarded = json.loads(common.body_mutation.body)
            alias = forwarded["tools"][0]["function"]["name"]
            assert alias != "a.b/c" and int(hdrs["content-length"]) == len(common.body_mutation.body)
            await call.write(headers_msg("response_headers", {":status": "200", "content-type": "text/event-stream"}))
            r = await call.read()
            assert "content-length" in r.response_headers.response.header_mutation.remove_headers
            chunk = {
                "id": "x",
                "object": "chat.completion.chunk",
                "model": "gpt-4o",
                "choices": [
                    {
                        "index": 0,
                        "delta": {
                            "tool_calls": [
                                {"index": 0, "id": "t1", "type": "function", "function": {"name": alias, "arguments": "{}"}}
                            ]
                        },
                        "finish_reason": None,
                    }
                ],
            }
            sse = f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode()
            await call.write(body_msg("response_body", sse[:10], False))
            r1 = await call.read()
            await call.write(body_msg("response_body", sse[10:], True))
            r2 = await call.read()
            out = r1.response_body.response.body_mutation.body + r2.response_body.response.body_mutation.body
            assert b'"a.b/c"' in out and alias.encode() not in out
            await call.done_writing()
        assert rec.records and rec.records[-1].request_id == "grpc-1" and rec.records[-1].streamed
    finally:
        await server.stop(None)


def test_immediate_and_mode_override_encoding() -> None:
    resp = wire.encode(wire.Phase.REQUEST_BODY, wire.Immediate(status=403, body=b'{"e":1}', headers={"x-a": "b"}, details="d"))
    assert resp.immediate_response.status.code == 403 and resp.immediate_response.body == b'{"e":1}'
    keys = {o.header.key for o in resp.immediate_response.headers.set_headers}
    assert keys == {"content-type", "x-a"}
    resp = wire.encode(wire.Phase.RESPONSE_HEADERS, wire.Reply(buffer_response_body=True))
    assert resp.mode_override.response_body_mode == 2  # BUFFERED
    resp = wire.encode(wire.Phase.RESPONSE_TRAILERS, wire.Reply())
    assert resp.WhichOneof("response") == "response_trailers"
    opt = wire.encode(
        wire.Phase.REQUEST_HEADERS, wire.Reply(set_headers={"k": "v"})
    ).request_headers.response.header_mutation.set_headers[0]
    assert opt.header.raw_value == b"v" and opt.header.value == ""  # raw_value only: value reaches upstream empty
    assert opt.append_action == base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


def test_decode_joins_repeated_headers_and_reads_attributes() -> None:
    req = headers_msg("request_headers", {"x-a": "1"})
    hv = req.request_headers.headers.headers.add()
    hv.key, hv.raw_value = "X-A", b"2"
    req.attributes["envoy.filters.http.ext_proc"].fields["source.address"].string_value = "1.2.3.4:5"
    phase, ev = wire.decode(req)
    assert phase is wire.Phase.REQUEST_HEADERS and ev.headers["x-a"] == "1, 2"
    assert ev.attributes["source.address"] == "1.2.3.4:5"


def _non_loopback_address() -> str | None:
    import socket

    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.254", 9))  # no packet is sent: this only picks the outbound interface
            address = s.getsockname()[0]
    except OSError:
        return None
    return None if address.startswith("127.") else address


async def test_a_peer_outside_the_allowed_networks_is_refused() -> None:
    import socket

    import pytest

    address = _non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to connect from")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = Context(SidecarSettings(), ListRecorder())
    server, _health = await serve(ctx.settings, Pipeline(default_stages(ctx)), host="0.0.0.0", port=port, max_message=1 << 20)
    try:
        async with grpc.aio.insecure_channel(f"{address}:{port}") as ch:
            call = pb_grpc.ExternalProcessorStub(ch).Process()
            await call.write(headers_msg("request_headers", {":method": "GET", ":path": "/openai/v1/models"}, eos=True))
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call.read()
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert ctx.recorder.records == []
    finally:
        await server.stop(None)
