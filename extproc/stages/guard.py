"""Guard: detectors, then the policy, then its decision, on the request; the response screen after.

Request: the detectors the policy needs (secrets, PII, prompt injection), the compiled policy
snapshot (microseconds, no I/O) and its decision: refuse in the API's error format, redact (the log
keeps the redacted form), prompt decorators and field edits, headers, a route to another provider.
Response: the model's own secrets and PII masked, ``phase: response`` rules, response field edits
(the screen is ``extproc.screening.ResponseScreen``). Putting the request's redacted values back for
the client is the restore stage's, after the record keeps its masked copy.

Fails closed: a request the guard could not screen is refused, and a response it could not screen
is withheld.
"""

from __future__ import annotations

from typing import ClassVar

from ..context import Context
from ..exchange import Exchange, Route, dumps, parse_json
from ..pipeline import Chunk, Failure
from ..routing import PROVIDERS
from ..wire import Immediate


class GuardStage:
    name: ClassVar[str] = "guard"
    failure: ClassVar[Failure] = Failure.CLOSED

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.guard = ctx.guard

    # ------------------------------------------------------------------ request
    async def request_body(self, ex: Exchange) -> Immediate | None:
        req = ex.request
        if self.guard is None or req.doc is None or req.view is None:
            return None
        doc = req.doc
        g = self.guard.check_request(
            request_id=ex.request_id, api=req.view.api, doc=doc, provider=req.provider, path=req.path,
            method=req.method, key=ex.auth.key, client=ex.client, client_addr=ex.client_addr, size=len(req.body),
            headers=req.headers, now=ex.started_at,
        )  # fmt: skip
        ex.screen = g
        ex.notes.screening = g.record()
        if g.log_doc is not None:
            req.logged = dumps(g.log_doc)
        if g.immediate is not None:
            return g.immediate
        if g.redacted and g.log_doc is None:
            req.logged = dumps(doc)  # the log never holds what was redacted: the client's request, redacted
        ex.verdict = g.verdict  # a claude_verdict rule holds the request: the verdict stage waits for it
        ex.reply.set_headers.update(g.set_headers)
        ex.reply.remove_headers.extend(g.strip_headers)
        self._route(ex, g)
        if g.changed_body:
            req.changed = True
            assert req.endpoint is not None
            req.view = req.endpoint.parse_request(doc)  # what pattern memory embeds is the redacted text
        return None

    def _route(self, ex: Exchange, g: object) -> None:
        """The policy may send a unified-route request to another provider (``route``), or change its
        model to one another provider serves; a provider-prefix route keeps the provider its path names."""
        req = ex.request
        decision = getattr(g, "decision", None)
        target = decision.provider if decision is not None else None
        if req.route is not Route.UNIFIED:
            if target not in (None, req.provider):
                ex.notes.policy_route = {
                    "skipped": f"route to {target}: a provider-prefix route keeps the provider its path names; "
                    "use the unified /v1/ routes"
                }
            return
        assert req.doc is not None and req.view is not None
        if target is None and req.doc.get("model") != req.view.model:
            target = self.ctx.router.provider_for(req.doc.get("model"))
        if target is None or target == req.provider:
            return
        if target not in PROVIDERS:
            ex.notes.policy_route = {"skipped": f"unknown provider {target!r} (known: {', '.join(PROVIDERS)})"}
            return
        ex.notes.policy_route = {"from": req.provider, "to": target}
        req.provider = target  # the credentials stage applies the key's scope and credential for it
        ex.reply.set_headers["x-llmproxy-provider"] = target
        ex.reply.clear_route_cache = True

    # ------------------------------------------------------------------ response
    async def response_headers(self, ex: Exchange) -> None:
        resp = ex.response
        if self.guard is None or ex.screen is None or ex.request.endpoint is None or not resp.has_body:
            return
        screen = self.guard.screen_response(
            ex.screen, request_id=ex.request_id, key=ex.auth.key, api=ex.api, status=resp.status, streamed=resp.streamed
        )
        ex.response_screen = screen
        if screen is None:
            return
        if resp.streamed:
            masker, restorer = screen.stream_stages()
            if masker is not None or restorer is not None:
                ex.reply.remove_headers.append("content-length")
        elif screen.needs_body and "json" in resp.content_type:
            resp.buffered = True
            ex.reply.buffer_response_body = True
            ex.reply.remove_headers.append("content-length")

    async def response_chunk(self, ex: Exchange, chunk: Chunk) -> Immediate | None:
        screen = ex.response_screen
        if screen is None:
            return None
        if ex.response.streamed:
            if screen.masker is not None:  # the log never sees what the model produced and was masked
                chunk.data = screen.masker.feed(chunk.data) + (screen.masker.end() if chunk.end_of_stream else b"")
                chunk.upstream = chunk.data
            return None
        if not (ex.response.buffered and chunk.end_of_stream):
            return None
        doc = parse_json(chunk.data)
        if not isinstance(doc, dict):
            return None
        screened = screen.screen_json(doc, len(chunk.data))
        if screened.block is not None:
            ex.keep(ex.response.upstream_log, screened.upstream or chunk.upstream)  # withheld, but logged (masked)
            return screened.block
        if screened.upstream is not None:
            chunk.upstream = screened.upstream
        if screened.logged is not None:
            chunk.data = screened.logged
        return None

    async def response_complete(self, ex: Exchange) -> None:
        screen = ex.response_screen
        if screen is None:
            return
        if ex.response.streamed and ex.answer is None:
            decoder = ex.response.decoder
            text = decoder.result().text if decoder is not None and screen.snapshot.response_rules else None
            screen.finish_stream(text, len(ex.response.upstream_log))
        ex.notes.response_policy = screen.record()
