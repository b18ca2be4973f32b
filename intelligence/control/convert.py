"""Rows and feed items as control API messages (and back, for the CLI's JSON output).

Rows from the manage/store functions are dicts whose exact keys belong to their owners; the
typed fields take what they recognise and ``json`` carries the whole dict, so a field added on
the database side reaches clients before the proto learns about it.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from intelligence.records import ExchangeRecord

from .gen import control_pb2 as pb
from .watch import EventItem, ExchangeItem, GapItem


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=_default, separators=(",", ":"))


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def ts(value: Any) -> str:
    if value is None:
        return ""
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _int(value: Any) -> int:
    return int(value) if value is not None else 0


def _float(value: Any) -> float:
    return float(value) if value is not None else 0.0


def _str(value: Any) -> str:
    return "" if value is None else str(value)


def experiment(d: dict[str, Any]) -> pb.Experiment:
    return pb.Experiment(
        id=_int(d.get("id")),
        enhancement_id=_int(d.get("enhancement_id")),
        pattern_id=_int(d.get("pattern_id")),
        status=_str(d.get("status")),
        control_weight=_float(d.get("control_weight")),
        assign_by=_str(d.get("assign_by")),
        decision_reason=_str(d.get("decision_reason")),
        created_by=_str(d.get("created_by")),
        started_at=ts(d.get("started_at")),
        decided_at=ts(d.get("decided_at")),
        json=_json(d),
    )


def history_entry(d: dict[str, Any]) -> pb.ExperimentHistoryEntry:
    return pb.ExperimentHistoryEntry(
        id=_int(d.get("id")),
        at=ts(d.get("at")),
        action=_str(d.get("action")),
        actor=_str(d.get("actor")),
        detail_json=_json(d.get("detail") or {}),
    )


def enhancement(d: dict[str, Any]) -> pb.Enhancement:
    return pb.Enhancement(
        id=_int(d.get("id")),
        pattern_id=_int(d.get("pattern_id")),
        version=_int(d.get("version")),
        kind=_str(d.get("kind")),
        status=_str(d.get("status")),
        source=_str(d.get("source")),
        rationale=_str(d.get("rationale")),
        spec_json=_json(d.get("spec") or {}),
        created_at=ts(d.get("created_at")),
        json=_json(d),
    )


def verdict(d: dict[str, Any]) -> pb.Verdict:
    return pb.Verdict(
        id=_int(d.get("id")),
        at=ts(d.get("at")),
        request_id=_str(d.get("request_id")),
        client_key_fp=_str(d.get("client_key_fp")),
        detectors=[str(x) for x in d.get("detectors") or ()],
        status=_str(d.get("status")),
        verdict=_str(d.get("verdict")),
        confidence=_float(d.get("confidence")),
        reasoning=_str(d.get("reasoning")),
        source=_str(d.get("source")),
        action=_str(d.get("action")),
        confirmed=_str(d.get("confirmed")),
        confirmed_by=_str(d.get("confirmed_by")),
        json=_json(d),
    )


def event(item: EventItem) -> pb.Event:
    return pb.Event(
        id=item.id,
        at=ts(item.at),
        kind=item.kind,
        severity=item.severity,
        title=item.title,
        subject=item.subject,
        detail_json=_json(item.detail),
        source=item.source,
    )


def exchange(record: ExchangeRecord, *, include_bodies: bool, history: bool = False) -> pb.ExchangeSummary:
    u = record.usage
    return pb.ExchangeSummary(
        request_id=record.request_id,
        started_at=ts(record.started_at),
        session_id=_str(record.session_id),
        provider=_str(record.provider),
        model=_str(record.model),
        method=_str(record.method),
        path=_str(record.path),
        status=_int(record.status),
        streamed=bool(record.streamed),
        latency_ms=_float(record.latency_ms),
        input_tokens=_int(u.input_tokens),
        output_tokens=_int(u.output_tokens),
        error=_str(record.error),
        record_json=record.to_json() if include_bodies else "",
        history=history,
    )


def feed_message(
    item: EventItem | ExchangeItem | GapItem, *, include_bodies: bool, history: bool = False
) -> pb.WatchEventsResponse:
    if isinstance(item, GapItem):
        return pb.WatchEventsResponse(gap=pb.Gap(dropped=item.dropped))
    if isinstance(item, ExchangeItem):
        return pb.WatchEventsResponse(exchange=exchange(item.record, include_bodies=include_bodies, history=history))
    return pb.WatchEventsResponse(event=event(item))


def record(message: Any) -> dict[str, Any]:
    """The full row a list message carries in its ``json`` field."""
    return json.loads(message.json) if message.json else {}
