"""The only module that knows Envoy's ext_proc protobuf.

It turns a ``ProcessingRequest`` into a small typed event and a typed reply back into a
``ProcessingResponse``. Everything else in the sidecar works on these dataclasses.

Stub drift (see docs/architecture.md): the ``xds-protos`` stubs predate Envoy 1.40; field 11 of
``ProcessingResponse`` is ``streamed_immediate_response`` in 1.40 but ``request_drain`` in the stubs.
We never set it. Header values always go in ``raw_value``: Envoy forwards a ``value``-only mutation
as an empty header.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from envoy.type.v3 import http_status_pb2

__all__ = [
    "Phase",
    "Headers",
    "BodyChunk",
    "Reply",
    "Immediate",
    "decode",
    "encode",
    "ExternalProcessorServicer",
    "add_processor",
]

# The gRPC service the sidecar implements, and how it is added to a server (server.py uses these).
ExternalProcessorServicer = pb_grpc.ExternalProcessorServicer
add_processor = pb_grpc.add_ExternalProcessorServicer_to_server


class Phase(enum.Enum):
    REQUEST_HEADERS = "request_headers"
    REQUEST_BODY = "request_body"
    RESPONSE_HEADERS = "response_headers"
    RESPONSE_BODY = "response_body"
    REQUEST_TRAILERS = "request_trailers"
    RESPONSE_TRAILERS = "response_trailers"


@dataclass(slots=True)
class Headers:
    """Header map with lower-case names; repeated headers are joined with ', '."""

    headers: dict[str, str]
    end_of_stream: bool
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class BodyChunk:
    data: bytes
    end_of_stream: bool


@dataclass(slots=True)
class Reply:
    """Continue processing, optionally mutating headers/body of the current phase."""

    set_headers: dict[str, str] = field(default_factory=dict)
    remove_headers: list[str] = field(default_factory=list)
    body: bytes | None = None  # replaces the body (or this chunk, when streamed)
    clear_route_cache: bool = False
    buffer_response_body: bool | None = None  # response headers only: True=BUFFERED, False=STREAMED


@dataclass(slots=True)
class Immediate:
    """Answer the client now; the request never reaches the upstream."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    details: str = ""


def decode(req: pb.ProcessingRequest) -> tuple[Phase, Headers | BodyChunk | None]:
    kind = req.WhichOneof("request")
    if kind in ("request_headers", "response_headers"):
        h = getattr(req, kind)
        headers: dict[str, str] = {}
        for hv in h.headers.headers:
            v = hv.raw_value.decode("utf-8", "replace") if hv.raw_value else hv.value
            k = hv.key.lower()
            headers[k] = f"{headers[k]}, {v}" if k in headers else v
        return Phase(kind), Headers(headers, h.end_of_stream, _attributes(req))
    if kind in ("request_body", "response_body"):
        b = getattr(req, kind)
        return Phase(kind), BodyChunk(bytes(b.body), b.end_of_stream)
    if kind in ("request_trailers", "response_trailers"):
        return Phase(kind), None
    raise ValueError(f"unknown ext_proc request kind {kind!r}")


def _attributes(req: pb.ProcessingRequest) -> dict[str, str]:
    out: dict[str, str] = {}
    for _ns, st in req.attributes.items():
        for k, v in st.fields.items():
            kind = v.WhichOneof("kind")
            if kind == "string_value":
                out[k] = v.string_value
            elif kind == "number_value":
                out[k] = str(v.number_value)
    return out


def encode(phase: Phase, reply: Reply | Immediate) -> pb.ProcessingResponse:
    if isinstance(reply, Immediate):
        return _immediate(reply)
    resp = pb.ProcessingResponse()
    if phase in (Phase.REQUEST_TRAILERS, Phase.RESPONSE_TRAILERS):
        getattr(resp, phase.value).SetInParent()
        return resp
    # Mutate in place: protobuf copies sub-messages passed to constructors.
    common = getattr(resp, phase.value).response
    getattr(resp, phase.value).SetInParent()
    if reply.set_headers or reply.remove_headers:
        mut = common.header_mutation
        for k, v in reply.set_headers.items():
            opt = mut.set_headers.add()
            opt.header.key = k
            opt.header.raw_value = v.encode()
            opt.append_action = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
        mut.remove_headers.extend(reply.remove_headers)
    if reply.body is not None:
        common.body_mutation.body = reply.body
    if reply.clear_route_cache:
        common.clear_route_cache = True
    if reply.buffer_response_body is not None:
        resp.mode_override.response_body_mode = (
            processing_mode_pb2.ProcessingMode.BUFFERED
            if reply.buffer_response_body
            else processing_mode_pb2.ProcessingMode.STREAMED
        )
    return resp


def _immediate(reply: Immediate) -> pb.ProcessingResponse:
    resp = pb.ProcessingResponse()
    imm = resp.immediate_response
    imm.status.code = http_status_pb2.StatusCode.Value(_status_name(reply.status))
    imm.body = reply.body
    imm.details = reply.details
    headers = {"content-type": "application/json", **reply.headers}
    for k, v in headers.items():
        opt = imm.headers.set_headers.add()
        opt.header.key = k
        opt.header.raw_value = v.encode()
    return resp


_STATUS_NAMES = {v: k for k, v in http_status_pb2.StatusCode.items()}


def _status_name(code: int) -> str:
    return _STATUS_NAMES.get(code, "InternalServerError")
