"""Token usage in each provider's vocabulary, mapped onto :class:`Usage`."""

from __future__ import annotations

from typing import Any

from extproc.providers.jsonshape import as_dict, as_int
from intelligence.records import Usage


def _total(input_tokens: int | None, output_tokens: int | None) -> int | None:
    if input_tokens is None or output_tokens is None:
        return None
    return input_tokens + output_tokens


def openai_usage(raw: Any) -> Usage:
    """Chat/completions/embeddings: prompt_tokens, completion_tokens, total_tokens."""
    u = as_dict(raw)
    prompt = as_int(u.get("prompt_tokens"))
    completion = as_int(u.get("completion_tokens"))
    total = as_int(u.get("total_tokens"))
    return Usage(
        input_tokens=prompt,
        output_tokens=completion,
        total_tokens=total if total is not None else _total(prompt, completion),
        cached_tokens=as_int(as_dict(u.get("prompt_tokens_details")).get("cached_tokens")),
        reasoning_tokens=as_int(as_dict(u.get("completion_tokens_details")).get("reasoning_tokens")),
    )


def responses_usage(raw: Any) -> Usage:
    u = as_dict(raw)
    input_tokens = as_int(u.get("input_tokens"))
    output_tokens = as_int(u.get("output_tokens"))
    total = as_int(u.get("total_tokens"))
    return Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        total_tokens=total if total is not None else _total(input_tokens, output_tokens),
        cached_tokens=as_int(as_dict(u.get("input_tokens_details")).get("cached_tokens")),
        reasoning_tokens=as_int(as_dict(u.get("output_tokens_details")).get("reasoning_tokens")),
    )


def anthropic_usage(raw: Any) -> Usage:
    u = as_dict(raw)
    input_tokens = as_int(u.get("input_tokens"))
    output_tokens = as_int(u.get("output_tokens"))
    return Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        total_tokens=_total(input_tokens, output_tokens),
        cached_tokens=as_int(u.get("cache_read_input_tokens")),
    )


def ollama_usage(raw: Any) -> Usage:
    u = as_dict(raw)
    input_tokens = as_int(u.get("prompt_eval_count"))
    output_tokens = as_int(u.get("eval_count"))
    return Usage(input_tokens=input_tokens, output_tokens=output_tokens, total_tokens=_total(input_tokens, output_tokens))
