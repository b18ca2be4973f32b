"""The dashboard server's own routes beside Streamlit's: the live feed websocket and the Host allowlist.

``ui/streamlit_app.py`` is an ``st.App`` (Streamlit on Starlette/uvicorn) that mounts :func:`routes` and
:func:`middleware`, so the feed is served by the dashboard process itself, on the dashboard's address
and port, same origin as the page:

``GET /llmproxy/live`` (websocket). The first message from the browser is ``{"type": "hello", "token":
..., "since": <oldest row shown, epoch ms>, "last_event_id": ...}``. The token is the session's signed
access token when SECRET_KEY is set (viewer or admin, verified like every dashboard run, the connection
closed when it expires), or, without SECRET_KEY, this process's random local key, which only a page
the dashboard rendered knows. The server answers ``ready``, then a ``backfill`` from the database
(everything started since ``since`` and the alerts after ``last_event_id``), then the current tiles,
then ``update`` messages as exchanges and alerts are committed. ``{"type": "backfill", "since": ...}``
asks for another backfill (after a ``resync``: the connection fell too far behind).

Refused before any of that: a ``Host`` outside the allowlist (:mod:`ui.hosts`), a cross-origin
``Origin``, and, without SECRET_KEY, a peer or a bind address that is not loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.middleware import Middleware
from starlette.routing import BaseRoute, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from intelligence.access import LOCAL_OPERATOR, AccessSettings, InvalidToken, Principal, is_loopback, verify_token
from ui import health, hosts
from ui.live.feed import LiveHub, dumps, event_id, since_ms

log = logging.getLogger(__name__)

LIVE_PATH = "/llmproxy/live"
HELLO_TIMEOUT_S = 10.0
CLOSE_POLICY = 1008  # Host, Origin or peer refused
CLOSE_AUTH = 4401  # missing, bad or expired token: the page must sign in again

_local_key = secrets.token_urlsafe(32)
_serving = False
_hub: LiveHub | None = None
_hub_lock: asyncio.Lock | None = None


def local_key() -> str:
    """This process's key for the live feed without SECRET_KEY (handed only to pages it rendered)."""
    return _local_key


def mark_serving() -> None:
    """Called when the ASGI app is built: the feed route exists in this process."""
    global _serving
    _serving = True


def serving() -> bool:
    return _serving


def _settings() -> AccessSettings | None:
    try:
        return AccessSettings.from_env()
    except ValueError:  # a malformed SECRET_KEY: the app says so; the guard assumes no authentication
        return None


def allowed_hosts() -> tuple[str, ...] | None:
    """The allowlist for this process's environment (re-derived only when SECRET_KEY or the names change)."""
    return _allowed(bool(os.environ.get("SECRET_KEY")), os.environ.get(hosts.HOSTS_ENV, ""))


@functools.lru_cache(maxsize=8)
def _allowed(secret_set: bool, names: str) -> tuple[str, ...] | None:
    configured = hosts.configured_hosts({hosts.HOSTS_ENV: names})
    if secret_set and not configured:
        return None
    return hosts.LOOPBACK_NAMES + configured


def authenticate(token: Any, access: AccessSettings | None) -> Principal:
    """The principal a hello's token stands for; raises :class:`InvalidToken`."""
    if access is not None and access.enabled:
        return verify_token(access, token if isinstance(token, str) else None)
    if not isinstance(token, str) or not hmac.compare_digest(token.encode(), _local_key.encode()):
        raise InvalidToken("the live feed needs the key of the page that opened it: reload the page")
    return LOCAL_OPERATOR


def _bind_address() -> str:
    from streamlit import config

    return config.get_option("server.address") or "0.0.0.0"


# ---------------------------------------------------------------------------------------------- Host guard


class HostGuard:
    """ASGI middleware: refuse any request (page, asset, websocket) whose Host is not allowed."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            host = _header(scope, b"host")
            if not hosts.host_allowed(host, allowed_hosts()):
                if scope["type"] == "http":
                    body = b"llmproxy dashboard: this host name is not allowed (set LLMPROXY_DASHBOARD_HOSTS)\n"
                    await send(
                        {
                            "type": "http.response.start",
                            "status": 403,
                            "headers": [
                                (b"content-type", b"text/plain; charset=utf-8"),
                                (b"content-length", str(len(body)).encode()),
                            ],
                        }
                    )
                    await send({"type": "http.response.body", "body": body})
                else:
                    await send({"type": "websocket.close", "code": CLOSE_POLICY})
                return
        await self.app(scope, receive, send)


def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope.get("headers") or ():
        if k == name:
            return v.decode("latin-1")
    return None


# ---------------------------------------------------------------------------------------------- the hub


async def get_hub() -> LiveHub:
    """The process's hub, started on first use (on the server's event loop)."""
    global _hub, _hub_lock
    if _hub_lock is None:
        _hub_lock = asyncio.Lock()
    async with _hub_lock:
        if _hub is None:
            url = health.database_url()
            if not url:
                raise RuntimeError("no database configured: set DATABASE_URL or start the stack with `llmproxy up`")
            _hub = LiveHub(url)
            _hub.start()
    return _hub


async def stop_hub() -> None:
    global _hub
    hub, _hub = _hub, None
    if hub is not None:
        await hub.stop()


# ---------------------------------------------------------------------------------------------- endpoint


async def live_endpoint(ws: WebSocket) -> None:
    access = _settings()
    host = ws.headers.get("host")
    allowed = allowed_hosts()
    problem = None
    if not hosts.host_allowed(host, allowed) or not hosts.origin_allowed(ws.headers.get("origin"), host, allowed):
        problem = "host or origin not allowed"
    elif access is None or not access.enabled:
        peer = ws.client.host if ws.client else ""
        if not is_loopback(peer) or not is_loopback(_bind_address()):
            problem = "no SECRET_KEY: the live feed serves loopback only"
    if problem:
        log.warning("live feed: refused a connection (%s; Host %r, Origin %r)", problem, host, ws.headers.get("origin"))
        await ws.close(code=CLOSE_POLICY)
        return
    await ws.accept()
    try:
        hello = await asyncio.wait_for(ws.receive_json(), HELLO_TIMEOUT_S)
        if not isinstance(hello, dict) or hello.get("type") != "hello":
            raise InvalidToken("expected a hello message")
        who = authenticate(hello.get("token"), access)
    except (InvalidToken, TimeoutError, ValueError) as exc:
        with contextlib.suppress(Exception):
            await ws.send_text(dumps({"type": "error", "error": str(exc) or type(exc).__name__}))
            await ws.close(code=CLOSE_AUTH)
        return
    except WebSocketDisconnect:
        return
    try:
        hub = await get_hub()
        await asyncio.wait_for(hub.ready.wait(), 30)
    except Exception as exc:  # noqa: BLE001 - no database: the page says so and retries
        with contextlib.suppress(Exception):
            await ws.send_text(dumps({"type": "error", "error": f"live feed unavailable: {exc}", "retry": True}))
            await ws.close(code=1011)
        return
    sub = hub.subscribe()  # before the backfill: nothing committed in between is lost (the page drops duplicates)
    try:
        expires = who.expires_at.timestamp() if who.expires_at else None
        await ws.send_text(
            dumps(
                {
                    "type": "ready",
                    "subject": who.subject,
                    "role": who.role,
                    "expires_at": expires,
                    "server_time": time.time() * 1000,
                }
            )
        )
        back = await hub.backfill(since_ms(hello.get("since")), event_id(hello.get("last_event_id")))
        await ws.send_text(dumps({"type": "backfill", **back}))
        await ws.send_text(dumps({"type": "update", **(await hub.current())}))
        await _serve(ws, hub, sub, expires)
    except WebSocketDisconnect:
        pass
    finally:
        sub.close()


async def _serve(ws: WebSocket, hub: LiveHub, sub: Any, expires: float | None) -> None:
    async def reader() -> None:
        while True:
            msg = await ws.receive_json()
            if isinstance(msg, dict) and msg.get("type") == "backfill":
                back = await hub.backfill(since_ms(msg.get("since")), None)
                sub.offer("rows", back["rows"])

    async def writer() -> None:
        while True:
            message = await sub.next_message()
            message["at"] = time.time() * 1000.0  # sent at (epoch ms): the page measures the transit
            await ws.send_text(dumps(message))

    tasks = [asyncio.create_task(reader()), asyncio.create_task(writer())]
    try:
        timeout = None if expires is None else max(0.0, expires - time.time())
        done, _ = await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if not done:  # the token expired while the page was open
            with contextlib.suppress(Exception):
                await ws.send_text(dumps({"type": "error", "error": "the access token has expired: sign in again"}))
                await ws.close(code=CLOSE_AUTH)
            return
        for t in done:
            exc = t.exception()
            if exc is not None and not isinstance(exc, WebSocketDisconnect):
                log.debug("live feed connection ended: %s", exc)
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(BaseException):
                await t


# ---------------------------------------------------------------------------------------------- app wiring


def routes() -> list[BaseRoute]:
    return [WebSocketRoute(LIVE_PATH, live_endpoint)]


def middleware() -> list[Middleware]:
    return [Middleware(HostGuard)]


@asynccontextmanager
async def lifespan(_app: Any) -> AsyncIterator[dict[str, Any]]:
    """Start the hub with the server (warm before the first page), stop it with the server."""
    mark_serving()
    if health.database_url():
        with contextlib.suppress(Exception):
            await get_hub()
    try:
        yield {}
    finally:
        await stop_hub()
