"""Who may call what on the control API: a server interceptor checking bearer tokens and roles.

Every call carries ``authorization: Bearer <token>`` metadata, verified with
:func:`intelligence.access.verify_token`. Reads, WatchEvents and SubmitFeedback need role viewer;
everything else (including methods added later and not listed here) needs admin, so a new
mutation is never open by accident. The verified principal is put in :data:`CURRENT_PRINCIPAL`
for the handler, which records its subject as the actor of a change.

A server stream (WatchEvents) outlives the moment its token was checked, so the token is checked
again while the stream is open: every ``recheck_interval`` seconds (2 s) and right after it expires.
A token that has expired or been revoked meanwhile ends the stream with ``UNAUTHENTICATED``.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import grpc

from intelligence.access import AccessSettings, InvalidToken, Principal, verify_token

SERVICE = "llmproxy.control.v1.Control"
VIEWER_METHODS = frozenset(
    {
        "SubmitFeedback",
        "ListExperiments",
        "ExperimentHistory",
        "ListEnhancements",
        "ListVerdicts",
        "WatchEvents",
        "WhoAmI",
    }
)

CURRENT_PRINCIPAL: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("control_principal", default=None)


def required_role(method: str) -> str:
    """``method`` is the full gRPC path, e.g. ``/llmproxy.control.v1.Control/ListVerdicts``."""
    service, _, name = method.lstrip("/").rpartition("/")
    return "viewer" if service == SERVICE and name in VIEWER_METHODS else "admin"


def bearer_token(metadata: Any) -> str | None:
    for key, value in metadata or ():
        if key.lower() == "authorization":
            return value if isinstance(value, str) else value.decode()
    return None


def authorize(access: AccessSettings, metadata: Any, method: str) -> Principal:
    """The caller's principal; raises PermissionError for a valid token lacking the role, InvalidToken otherwise."""
    principal = verify_token(access, bearer_token(metadata))
    if required_role(method) == "admin" and not principal.is_admin:
        raise PermissionError(f"{method.rpartition('/')[2]} needs role admin; {principal.subject} is {principal.role}")
    return principal


RECHECK_INTERVAL = 2.0  # seconds between re-checks of an open stream's token


async def _guarded(
    items: AsyncIterator[Any], principal: Principal, recheck: Callable[[], Awaitable[Any]], interval: float
) -> AsyncIterator[Any]:
    """``items`` while ``recheck`` passes: it runs every ``interval`` seconds (whether or not items
    flow) and just after the token's expiry.

    ``recheck`` aborts the call (raises) when the token no longer holds; the inner stream is closed
    either way (its subscription released).
    """
    loop = asyncio.get_running_loop()
    pending: asyncio.Future[Any] | None = None

    def next_check() -> float:
        at = loop.time() + interval
        if principal.expires_at is not None:
            left = (principal.expires_at - datetime.now(UTC)).total_seconds() + 0.05
            at = min(at, loop.time() + max(0.0, left))
        return at

    check_at = next_check()
    try:
        while True:
            pending = asyncio.ensure_future(items.__anext__())
            while True:
                done, _ = await asyncio.wait([pending], timeout=max(0.0, check_at - loop.time()))
                if loop.time() >= check_at:
                    await recheck()
                    check_at = next_check()
                if done:
                    break
            try:
                item = pending.result()
            except StopAsyncIteration:
                return
            pending = None
            yield item
    finally:
        if pending is not None and not pending.done():
            pending.cancel()
            await asyncio.wait([pending])
        aclose = getattr(items, "aclose", None)
        if aclose is not None:
            await aclose()


class AuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, access: AccessSettings, *, recheck_interval: float = RECHECK_INTERVAL) -> None:
        self.access = access
        self.recheck_interval = recheck_interval

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        access = self.access
        interval = self.recheck_interval

        async def check(context: grpc.aio.ServicerContext) -> Principal:
            try:
                return authorize(access, context.invocation_metadata(), method)
            except InvalidToken as exc:
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
            except PermissionError as exc:
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
            raise AssertionError("unreachable: abort raises")

        if handler.unary_unary is not None:
            inner = handler.unary_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                principal = await check(context)
                token = CURRENT_PRINCIPAL.set(principal)
                try:
                    return await inner(request, context)
                finally:
                    CURRENT_PRINCIPAL.reset(token)

            return grpc.unary_unary_rpc_method_handler(
                unary, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
            )
        if handler.unary_stream is not None:
            inner_stream = handler.unary_stream

            async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                principal = await check(context)
                CURRENT_PRINCIPAL.set(principal)
                items = inner_stream(request, context)
                if principal.expires_at is not None:  # a token: re-checked while the stream is open
                    items = _guarded(items, principal, lambda: check(context), interval)
                async for item in items:
                    yield item

            return grpc.unary_stream_rpc_method_handler(
                stream, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
            )
        if handler.stream_unary is not None:
            inner_su = handler.stream_unary

            async def stream_in(requests: Any, context: grpc.aio.ServicerContext) -> Any:
                CURRENT_PRINCIPAL.set(await check(context))
                return await inner_su(requests, context)

            return grpc.stream_unary_rpc_method_handler(
                stream_in, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
            )
        inner_ss = handler.stream_stream

        async def bidi(requests: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            principal = await check(context)
            CURRENT_PRINCIPAL.set(principal)
            items = inner_ss(requests, context)
            if principal.expires_at is not None:
                items = _guarded(items, principal, lambda: check(context), interval)
            async for item in items:
                yield item

        return grpc.stream_stream_rpc_method_handler(
            bidi, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
        )
