"""Micro-benchmark of the response screen's per-chunk cost on a streamed OpenAI chat response.

``python -m extproc.cli.bench_response [--chunks N] [--repeat R]`` feeds an SSE stream of one
word per chunk through the same path as the sidecar (the chat stream processor, plus the restore or
mask stage) and prints microseconds per chunk: the baseline (stream processor alone) and what each
stage adds. Best of ``--repeat`` runs, so other load on the machine inflates it less.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

from extproc.providers.openai_chat import ChatEndpoint
from extproc.providers.textstream import SSETextRewriter, may_hold_placeholder

MAPPING = {"<EMAIL_1>": "ann@example.com", "<PHONE_1>": "+1 555 0100"}
SENTENCE = "The quick brown fox writes to <EMAIL_1> about the report, then calls <PHONE_1> before lunch. "


def sse_chunks(n: int, *, placeholders: bool) -> list[bytes]:
    words = (SENTENCE * (n // 16 + 1)).split(" ")[:n]
    if not placeholders:
        words = [w.replace("<EMAIL_1>", "someone").replace("<PHONE_1>", "someone") for w in words]
    return [
        (
            "data: "
            + json.dumps(
                {
                    "id": "c",
                    "object": "chat.completion.chunk",
                    "model": "m",
                    "choices": [{"index": 0, "delta": {"content": w + " "}, "finish_reason": None}],
                }
            )
            + "\n\n"
        ).encode()
        for w in words
    ]


def per_chunk_us(make: Callable[[], SSETextRewriter | None], chunks: list[bytes], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        proc = ChatEndpoint().stream(None)
        stage = make()
        t0 = time.perf_counter()
        for c in chunks:
            proc.feed(stage.feed(c) if stage is not None else c)
        best = min(best, (time.perf_counter() - t0) / len(chunks) * 1e6)
    return best


def main(argv: list[str] | None = None) -> None:
    from intelligence.detectors.response import MaskingFilter, PlaceholderRestorer
    from intelligence.detectors.secrets import shared_secret_detector

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--chunks", type=int, default=600)
    p.add_argument("--repeat", type=int, default=7)
    args = p.parse_args(argv)
    secrets = shared_secret_detector()
    secrets.find("warm-up sk-test")
    with_ph, without = sse_chunks(args.chunks, placeholders=True), sse_chunks(args.chunks, placeholders=False)

    def restore() -> SSETextRewriter:
        return SSETextRewriter(
            "chat", lambda s: PlaceholderRestorer(MAPPING, json_text=s.json_text), relevant=may_hold_placeholder
        )

    def mask() -> SSETextRewriter:
        return SSETextRewriter("chat", lambda s: MaskingFilter(secrets.find))

    base_with = per_chunk_us(lambda: None, with_ph, args.repeat)
    base_without = per_chunk_us(lambda: None, without, args.repeat)
    rows = [
        ("baseline: chat stream processor alone", base_without, None),
        ("restore, stream without placeholders", per_chunk_us(restore, without, args.repeat), base_without),
        ("restore, a placeholder every ~8 words", per_chunk_us(restore, with_ph, args.repeat), base_with),
        ("mask secrets (detect-secrets on every delta)", per_chunk_us(mask, without, args.repeat), base_without),
    ]
    for name, us, ref in rows:
        extra = f" (+{us - ref:.1f})" if ref is not None else ""
        print(f"{name:48s} {us:7.1f} us/chunk{extra}")


if __name__ == "__main__":
    main()
