"""A fake OpenAI chat model whose success depends on the instructions it is given (for the simulation).

`llmproxy simulate enhancement` needs an upstream where an enhancement really changes outcomes.
This one answers ``POST /v1/chat/completions`` and decides success by what the request contains:

* the *harmful* instruction anywhere in the messages: success with probability ``harmful_rate`` (0.1)
* else the *helpful* instruction: ``helpful_rate`` (0.8)
* else a request of the *target* family (its text contains ``target_marker``): ``base_rate`` (0.3)
* anything else: ``other_rate`` (0.9), so the target family stands out against the fleet

Success is ``finish_reason: "stop"``; failure is ``"length"`` (a truncated answer, which pattern
memory counts as a failing outcome). Draws are deterministic: a hash of the seed, the request's
text and the request's x-session-id (or a per-text counter), so a rerun with the same seed and the
same traffic gives the same answers.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class InstructionModel:
    helpful: str
    harmful: str
    target_marker: str
    base_rate: float = 0.3
    helpful_rate: float = 0.8
    harmful_rate: float = 0.1
    other_rate: float = 0.9
    seed: int = 0
    seen: Counter = field(default_factory=Counter)  # condition -> requests
    succeeded: Counter = field(default_factory=Counter)  # condition -> successes
    _per_text: Counter = field(default_factory=Counter)

    def condition(self, text: str) -> str:
        if self.harmful and self.harmful in text:
            return "harmful"
        if self.helpful and self.helpful in text:
            return "helpful"
        if self.target_marker in text:
            return "base"
        return "other"

    def rate(self, condition: str) -> float:
        return {"harmful": self.harmful_rate, "helpful": self.helpful_rate, "base": self.base_rate}.get(
            condition, self.other_rate
        )

    def decide(self, text: str, key: str | None = None) -> tuple[str, bool]:
        """(condition, success) for one request with this text; ``key`` (e.g. the session id) fixes the
        draw whatever order concurrent requests arrive in, else a per-text counter does."""
        condition = self.condition(text)
        self._per_text[text] += 1
        key = key or str(self._per_text[text])
        digest = hashlib.sha256(f"{self.seed}|{key}|{text}".encode("utf-8", "replace")).digest()
        ok = random.Random(digest).random() < self.rate(condition)
        self.seen[condition] += 1
        self.succeeded[condition] += int(ok)
        return condition, ok


def messages_text(doc: Any) -> str:
    parts: list[str] = []
    for m in (doc.get("messages") if isinstance(doc, dict) else None) or []:
        if not isinstance(m, dict):
            continue
        content = m.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return "\n".join(parts)


class InstructionFake:
    """The model behind an aiohttp server on 127.0.0.1 (an ephemeral port), on the caller's event loop."""

    def __init__(self, model: InstructionModel, *, host: str = "127.0.0.1", port: int = 0):
        self.model = model
        self.host = host
        self.port = port
        self.requests = 0
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> InstructionFake:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _chat(self, request: web.Request) -> web.Response:
        try:
            doc = json.loads(await request.read())
        except ValueError:
            return web.json_response({"error": {"message": "invalid JSON", "type": "invalid_request_error"}}, status=400)
        self.requests += 1
        condition, ok = self.model.decide(messages_text(doc), request.headers.get("x-session-id"))
        answer = "Done: the answer in full." if ok else "The answer starts but is cut"
        body = {
            "id": f"chatcmpl-instr{self.requests:06d}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": doc.get("model") or "gpt-4o-mini",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": answer, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop" if ok else "length",
                }
            ],
            "usage": {"prompt_tokens": 40, "completion_tokens": 8 if ok else 16, "total_tokens": 48 if ok else 56},
            "system_fingerprint": f"fp_{condition}",
        }
        return web.json_response(body)
