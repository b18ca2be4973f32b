"""`llmproxy tail`: print live exchanges in the console, the way the legacy debug proxy did.

Each exchange: a status line, the request body, then the response merged into one message (streams
reassembled). `--tools none|name|all` controls how declared tools are shown; `--raw` prints bodies as
they crossed the wire (the raw SSE/NDJSON stream for streamed responses) instead of merged.
New rows arrive by Postgres LISTEN/NOTIFY (channel llmproxy_exchanges). With a control API
address (--control or $LLMPROXY_CONTROL_ADDR) they arrive over its WatchEvents stream instead,
authenticated with $LLMPROXY_TOKEN, so no database credentials are needed on the console.

Clients control most of what is printed (model, path, bodies, tool names), so the output is passed
through :func:`intelligence.store.sanitize.strip_terminal_controls`: no escape sequence from a
client can recolour, retitle or clear the operator's terminal, write its clipboard or hide a line.
Credentials in the request path's query string are redacted (:func:`~intelligence.store.sanitize.redact_url`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from intelligence.records import Body, ExchangeRecord

from .stack import database_url_for

CHANNEL = "llmproxy_exchanges"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tail", help="print exchanges live, like the legacy debug proxy")
    p.add_argument("--tools", choices=["none", "name", "all"], default="name", help="how to print declared tools (default name)")
    p.add_argument("--raw", action="store_true", help="print bodies as sent on the wire instead of merged")
    p.add_argument("--history", type=int, default=0, help="first print the N most recent exchanges")
    p.add_argument("--count", type=int, default=0, help="exit after printing N exchanges (0: run until Ctrl-C)")
    p.add_argument("--data-dir", type=Path, default=Path(".llmproxy"))
    p.add_argument("--database-url", default=None)
    p.add_argument(
        "--control",
        default=None,
        metavar="ADDR",
        help="read from the control API's WatchEvents at ADDR instead of the database "
        "(default $LLMPROXY_CONTROL_ADDR when set; token from $LLMPROXY_TOKEN)",
    )
    p.add_argument(
        "--control-ca",
        default=None,
        metavar="PEM",
        help="CA that signed the control API's certificate: connect with TLS (default $LLMPROXY_CONTROL_TLS_CA)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    control = getattr(args, "control", None) or os.environ.get("LLMPROXY_CONTROL_ADDR")
    if control:
        try:
            return _tail_control(control, args)
        except KeyboardInterrupt:
            return 0
    url = database_url_for(args.data_dir, args.database_url)
    try:
        asyncio.run(_tail(url, args))
    except KeyboardInterrupt:
        pass
    return 0


async def _tail(url: str, args: argparse.Namespace) -> None:
    from intelligence.store.engine import make_engine
    from intelligence.store.repositories import ExchangeRepository

    engine = make_engine(url)
    queue: asyncio.Queue[str] = asyncio.Queue()
    printed = 0
    try:
        async with engine.connect() as listen_conn:
            raw = (await listen_conn.get_raw_connection()).driver_connection
            assert raw is not None  # an open asyncpg connection
            await raw.add_listener(CHANNEL, lambda _c, _pid, _ch, payload: queue.put_nowait(payload))
            async with engine.connect() as conn:
                if args.history:
                    rows = await ExchangeRepository(conn).recent(args.history)
                    for past in reversed(list(rows)):
                        print(render(past, tools=args.tools, raw=args.raw), flush=True)
                while not args.count or printed < args.count:
                    request_id = await queue.get()
                    row = await ExchangeRepository(conn).get(request_id)
                    await conn.rollback()  # fresh snapshot for the next read
                    if row is not None:
                        print(render(row, tools=args.tools, raw=args.raw), flush=True)
                        printed += 1
    finally:
        await engine.dispose()


def _tail_control(addr: str, args: argparse.Namespace) -> int:
    import grpc

    from intelligence.control.client import client_from_env, describe_error
    from intelligence.records import ExchangeRecord

    printed = 0
    try:
        client = client_from_env(addr, ca=getattr(args, "control_ca", None))
    except ValueError as exc:  # TLS misconfigured, or a token about to go out in plaintext
        print(f"llmproxy tail: {exc}", file=sys.stderr)
        return 2
    with client:
        call: Any = client.watch(
            kinds=["exchange"], exchange_history=args.history, include_bodies=True
        )  # a stream that can be cancelled
        try:
            for message in call:
                item = message.WhichOneof("item")
                if item == "gap":  # stdout stays exchanges only
                    print(f"llmproxy tail: fell behind, {message.gap.dropped} exchanges skipped", file=sys.stderr, flush=True)
                    continue
                if item != "exchange":
                    continue
                summary = message.exchange
                print(render(ExchangeRecord.from_json(summary.record_json), tools=args.tools, raw=args.raw), flush=True)
                if not summary.history:
                    printed += 1
                    if args.count and printed >= args.count:
                        break
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                print(f"llmproxy tail: {describe_error(exc)} ({addr})", file=sys.stderr)
                return 1
        finally:
            call.cancel()
    return 0


def render(rec: ExchangeRecord, *, tools: str = "name", raw: bool = False) -> str:
    """One exchange as printed: terminal controls stripped from all of it, URL credentials redacted."""
    from intelligence.store.sanitize import strip_terminal_controls

    return strip_terminal_controls(_render(rec, tools=tools, raw=raw))


def _render(rec: ExchangeRecord, *, tools: str, raw: bool) -> str:
    from intelligence.store.sanitize import redact_url, redact_urls_in_text

    u = rec.usage
    head = (
        f"── {rec.started_at:%Y-%m-%d %H:%M:%S}  {rec.status or '---'}  {rec.provider or '-'}  {rec.model or '-'}  "
        f"{rec.method} {redact_url(rec.path)}  {(rec.latency_ms or 0):.0f} ms"
        + (f"  ttft {rec.ttft_ms:.0f} ms" if rec.ttft_ms is not None and rec.streamed else "")
        + f"  tokens {u.input_tokens if u.input_tokens is not None else '-'}/{u.output_tokens if u.output_tokens is not None else '-'}"
        + f"  id {rec.request_id}"
    )
    if rec.error:
        head += f"\n   error: {redact_urls_in_text(rec.error)}"
    resp = rec.response_upstream if raw else rec.response_client
    label = "<<< response" + ("" if raw or not rec.streamed else " (merged)")
    return "\n".join(
        [head, ">>> request", _show(rec.request_client, tools=tools, raw=raw), label, _show(resp, tools="all", raw=raw), ""]
    )


def _show(body: Body | None, *, tools: str, raw: bool) -> str:
    if body is None:
        return "(empty)"
    doc = body.json
    if doc is None:
        return (body.text or "(empty)") + (" …[truncated]" if body.truncated else "")
    if isinstance(doc, dict) and "tools" in doc and tools != "all":
        doc = dict(doc)
        if tools == "none":
            doc.pop("tools")
        else:
            doc["tools"] = [_tool_name(t) for t in doc["tools"] or []]
    return json.dumps(doc, ensure_ascii=False) if raw else json.dumps(doc, ensure_ascii=False, indent=2)


def _tool_name(tool: Any) -> Any:
    if isinstance(tool, dict):
        fn = tool.get("function")
        return (fn.get("name") if isinstance(fn, dict) else None) or tool.get("name") or tool.get("type")
    return tool
