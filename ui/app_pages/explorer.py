"""Explorer: find exchanges by any filter, look into one, or follow a session as a timeline."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pandas as pd
import streamlit as st

from intelligence.analytics import STATUS_CLASSES
from ui import bodies, charts, data, exchange_policy, fmt, tables
from ui.redact import safe_headers

st.title("Explorer")

params = st.query_params
VIEWS = ["Exchanges", "Sessions"]
default_view = "Sessions" if params.get("session") else "Exchanges"
view = (
    st.segmented_control("View", VIEWS, default=default_view, key="explorer_view", label_visibility="collapsed") or default_view
)

WINDOWS = {
    "last hour": timedelta(hours=1),
    "last 24 hours": timedelta(days=1),
    "last 7 days": timedelta(days=7),
    "last 30 days": timedelta(days=30),
    "any time": None,
}


def show_exchange(request_id: str) -> None:
    detail = data.exchange_detail(request_id)
    if detail is None:
        st.warning(f"No exchange with request id {fmt.code(request_id)}.")
        return
    r = detail.record
    # model, path, session id, error, tool names: whatever a client sent renders as text (fmt.md / fmt.code)
    st.subheader(f"{fmt.md(r.model or 'unknown model')} · {r.status if r.status is not None else 'no status'}")
    st.caption(
        f"{fmt.code(r.request_id)} · {fmt.md(r.method)} {fmt.md(r.path)} · {fmt.md(r.provider or '?')} · "
        f"{fmt.md(r.api or '?')} API · route {fmt.md(r.route or '?')} · started {r.started_at:%Y-%m-%d %H:%M:%S} UTC"
    )
    if r.error:
        st.error(f"Error: {fmt.md(r.error)}")
    u = r.usage
    m = st.columns(6)
    m[0].metric("Latency", fmt.ms(r.latency_ms))
    m[1].metric("TTFT", fmt.ms(r.ttft_ms) if r.streamed else "–", help=None if r.streamed else "not streamed")
    overhead = (r.latency_ms - r.upstream_ms) if r.latency_ms is not None and r.upstream_ms is not None else None
    m[2].metric("Gateway overhead", fmt.ms(overhead), help=f"upstream took {fmt.ms(r.upstream_ms)}")
    m[3].metric(
        "Tokens in",
        fmt.compact(u.input_tokens),
        help=f"{fmt.count(u.input_tokens)} in, {fmt.count(u.cached_tokens)} of them cached",
    )
    m[4].metric(
        "Tokens out",
        fmt.compact(u.output_tokens),
        help=f"{fmt.count(u.output_tokens)} out, {fmt.count(u.reasoning_tokens)} of them reasoning",
    )
    m[5].metric("Cost", fmt.usd(detail.cost_usd), help="unpriced model" if detail.cost_usd is None else None)
    links = []
    if r.session_id:
        links.append(f"[session timeline](explorer?session={quote(r.session_id, safe='')})")
    if detail.pattern is not None:
        links.append(f"[pattern #{detail.pattern.id}](patterns?pattern={detail.pattern.id})")
    if links:
        st.markdown(" · ".join(links))

    tabs = st.tabs(
        [
            "Request diff",
            "Response",
            "Tool calls",
            "Timings",
            "Pattern & similar",
            "Policy & enhancement",
            "Headers",
            "Raw bodies",
        ]
    )
    with tabs[0]:
        diff = bodies.body_diff(r.request_client, r.request_forwarded)
        if r.request_forwarded is None:
            st.info("Nothing was forwarded upstream (rejected at the gateway, or not recorded).")
        elif diff:
            st.caption("What the gateway changed between the client's request and the upstream request.")
            st.code(diff, language="diff")
        else:
            st.success("Forwarded exactly as sent.")
    with tabs[1]:
        summarised = bodies.summarised(r.response_text, r.tool_calls)
        text = bodies.assistant_text(r.response_text)
        if text:
            st.markdown("**Reply (as the client got it" + (", reassembled from the stream" if r.streamed else "") + ")**")
            st.text(text)
        elif not summarised and r.response_client is not None:
            st.caption(
                "No reply summary was recorded with this exchange (recorded before the gateway kept one): the raw body follows."
            )
        st.caption(f"finish reason: {fmt.md(r.finish_reason or '–')}")
        st.code(bodies.body_text(r.response_client) or "(no response body)", language="json")
    with tabs[2]:
        calls = bodies.tool_calls(r.tool_calls)
        if calls:
            st.markdown("**Tool calls in the response**: the client sees original names, the provider saw aliases.")
            tables.show(
                pd.DataFrame(
                    [
                        {
                            "#": c.index,
                            "name (client)": c.client_name,
                            "name (upstream)": c.upstream_name,
                            "arguments": c.arguments,
                        }
                        for c in calls
                    ]
                ),
                hide_index=True,
                width="stretch",
            )
        if r.tool_aliases:
            st.markdown("**Declared tools renamed for the provider**")
            tables.show(
                pd.DataFrame([{"original": o, "alias (upstream)": a} for a, o in sorted(r.tool_aliases.items())]),
                hide_index=True,
                width="stretch",
            )
        if r.tool_names:
            st.caption("Declared tools: " + ", ".join(fmt.code(n) for n in r.tool_names))
        if not calls and not bodies.summarised(r.response_text, r.tool_calls) and r.response_client is not None:
            st.caption("Tool calls were not summarised for this exchange: see the response body under *Raw bodies*.")
        if r.tool_args_invalid:
            st.warning(f"{r.tool_args_invalid} tool call(s) carried arguments that were not valid JSON for the schema.")
        if not (calls or r.tool_aliases or r.tool_names):
            st.caption("No tools in this exchange.")
    with tabs[3]:
        rows = [
            ("started", r.started_at.isoformat()),
            ("finished", r.finished_at.isoformat()),
            ("total latency", fmt.ms(r.latency_ms)),
            ("time to first token", fmt.ms(r.ttft_ms)),
            ("upstream", fmt.ms(r.upstream_ms)),
            ("gateway overhead", fmt.ms(overhead)),
            ("streamed", str(r.streamed)),
        ]
        st.table(pd.DataFrame(rows, columns=["timing", "value"]).set_index("timing"))
    with tabs[4]:
        if detail.pattern is None:
            st.caption("Not assigned to a pattern (yet): pattern memory works in the background.")
        else:
            p = detail.pattern
            st.markdown(
                f"**Pattern #{p.id}: {fmt.md(p.label or '(unlabelled)')}** · {p.member_count:,} exchanges · "
                f"seen {p.first_seen:%Y-%m-%d} – {p.last_seen:%Y-%m-%d}"
            )
        failing = [s for s in detail.signals if not s.ok]
        if failing:
            st.warning("Outcome signals: " + "; ".join(f"{fmt.md(s.kind)}={fmt.md(s.value or '')}" for s in failing))
        if detail.similar:
            st.markdown("**Similar requests**")
            tables.show(
                pd.DataFrame(
                    [
                        {
                            "similarity": s.similarity,
                            "pattern": s.pattern_id,
                            "prompt": s.text,
                            "model": s.model,
                            "open": f"explorer?request_id={s.request_id}",
                        }
                        for s in detail.similar
                    ]
                ),
                hide_index=True,
                width="stretch",
                column_config={
                    "similarity": st.column_config.ProgressColumn("similarity", min_value=0, max_value=1, format="%.2f"),
                    "open": st.column_config.LinkColumn("details", display_text="open"),
                },
            )
    with tabs[5]:
        show_policy(r.flags or {})
    with tabs[6]:
        st.caption("Credentials are never stored; anything else that looks like a key is masked.")
        st.json(safe_headers(r.request_headers) or {})
    with tabs[7]:
        for title, body in (
            ("Request as sent by the client", r.request_client),
            ("Request as forwarded upstream", r.request_forwarded),
            ("Response as received from upstream", r.response_upstream),
            ("Response as returned to the client", r.response_client),
        ):
            with st.expander(
                title + (f" · {body.size:,} bytes" if body else " · none") + (" · truncated" if body and body.truncated else "")
            ):
                st.code(bodies.body_text(body) or "(none)", language="json")


def _lines(rows: list[tuple[str, str]], header: str) -> None:
    if rows:  # st.table renders Markdown in its cells: rule ids, messages and notes must stay text
        st.table(pd.DataFrame([(fmt.md(k), fmt.md(v)) for k, v in rows], columns=[header, "value"]).set_index(header))


def show_policy(flags: dict) -> None:
    """What the policy, the detectors, Claude and the enhancer did (counts and kinds only, never values)."""
    request, response = exchange_policy.decisions(flags)
    st.markdown("**Policy decision**")
    for side, doc in (("Request", request), ("Response", response)):
        reason = exchange_policy.block_reason(doc)
        if reason:
            st.error(f"{side} blocked: {fmt.md(reason)}")
    rules = exchange_policy.fired_rules(flags)
    if len(rules):
        tables.show(rules, hide_index=True, width="stretch")
    elif request or response:
        st.caption("No rule fired.")
    else:
        st.caption("No policy decision recorded for this exchange.")
    _lines(exchange_policy.decision_facts(request), "request side")
    for side, edits in (("request", flags.get("edits")), ("response", response.get("edits"))):
        if edits:
            st.markdown(f"**Edits applied to the {side}**: " + ", ".join(fmt.code(e) for e in exchange_policy.edit_list(edits)))
    _lines(exchange_policy.decision_facts(response), "response side")
    if flags.get("redacted_strings"):
        st.markdown(f"**Redacted in the request**: {int(flags['redacted_strings'])} string(s)")
    det = exchange_policy.detector_summary(flags)
    if det is not None:
        st.markdown("**Detectors**")
        score = "–" if det.injection_score is None else f"{det.injection_score:.2f}"
        st.caption(
            f"injection score {score} ({fmt.md(det.injection_layer or 'no layer')})"
            + (" · " + ", ".join(fmt.md(f) for f in det.flags) if det.flags else "")
        )
        if len(det.counts):
            tables.show(det.counts, hide_index=True, width="stretch")
        else:
            st.caption("No PII or secrets detected.")
    verdict = exchange_policy.claude_verdict(flags)
    if verdict:
        st.markdown("**Claude verdict**")
        _lines(verdict, "verdict")
    enh = exchange_policy.enhancement(flags)
    st.markdown("**Enhancement**")
    if enh is None:
        st.caption("No enhancement experiment touched this exchange.")
    else:
        st.markdown(
            f"experiment **#{enh.experiment}** · enhancement **#{enh.enhancement}** · arm **{fmt.md(enh.arm)}** · "
            f"pattern {'#' + str(enh.pattern) if enh.pattern is not None else '–'} · [Experiments page](experiments)"
        )
        if enh.also_active:
            st.caption("Also active: " + ", ".join(fmt.md(a) for a in enh.also_active))
        st.code(enh.patch_json, language="json")
    _lines(exchange_policy.other_notes(flags), "gateway")


def search_and_pick() -> None:
    """Filters and the matching exchanges; selecting a row opens it."""
    options = data.filter_options()
    with st.container(border=True):
        c = st.columns([1.2, 1.2, 1.4, 1.4, 1])
        window = c[0].selectbox("Time", list(WINDOWS), index=1)
        status = c[1].selectbox("Status", ["any", *STATUS_CLASSES])
        models = c[2].multiselect("Model", options.get("model", []))
        providers = c[3].multiselect("Provider", options.get("provider", []))
        pattern = c[4].number_input("Pattern id", min_value=0, value=int(params.get("pattern", 0) or 0), step=1, help="0 = any")
        c2 = st.columns([1.2, 1.2, 1.6, 2])
        client = c2[0].selectbox("Client", ["any", *options.get("client", [])])
        session = c2[1].text_input("Session id", value="")
        actions = c2[2].multiselect(
            "Policy action", list(data.POLICY_ACTIONS), help="exchanges with any of these (request or response side)"
        )
        text = c2[3].text_input("Free text", placeholder="words in the last user turn, or a request id")
    span = WINDOWS[window]
    since = (datetime.now(UTC) - span).replace(second=0, microsecond=0) if span else None
    df = data.search_exchanges(
        since=since,
        client=None if client == "any" else client,
        session_id=session or None,
        models=tuple(models),
        providers=tuple(providers),
        status_class=None if status == "any" else status,
        pattern_id=int(pattern) or None,
        text=text or None,
        policy_actions=tuple(actions),
        limit=200,
    )
    st.caption(f"{len(df)} newest matching exchanges (at most 200). Select a row to open it.")
    st.session_state["_explorer_ids"] = list(df["request_id"])
    st.dataframe(
        df,
        hide_index=True,
        width="stretch",
        height=360,
        key="explorer_results",
        on_select=_open_selected,
        selection_mode="single-row",
        column_order=[
            "time",
            "client",
            "model",
            "status",
            "latency_ms",
            "tokens_in",
            "tokens_out",
            "cost_usd",
            "flags",
            "pattern_id",
            "prompt",
            "request_id",
        ],
        column_config=fmt.exchange_columns(),
    )


# The exchange being looked at lives in the URL (?request_id=): links from other pages open it, and
# picking a row or typing an id replaces it (callbacks run before the page, so no extra rerun).
def _open_selected() -> None:
    rows = st.session_state["explorer_results"].selection.rows
    ids = st.session_state.get("_explorer_ids", [])
    if rows and rows[0] < len(ids):
        st.query_params["request_id"] = ids[rows[0]]


def _open_typed() -> None:
    typed = st.session_state.get("open_request_id", "").strip()
    if typed:
        st.query_params["request_id"] = typed
    st.session_state["open_request_id"] = ""


def exchanges_view() -> None:
    current = st.query_params.get("request_id")
    if current:
        show_exchange(current)
        st.divider()
        with st.expander("Find other exchanges", expanded=False):
            search_and_pick()
    else:
        search_and_pick()
    st.text_input("Open by request id", key="open_request_id", placeholder="request id", on_change=_open_typed)


def sessions_view() -> None:
    sessions = data.recent_sessions(100)
    session_id = params.get("session")
    if sessions.empty and not session_id:
        st.info("No sessions yet. Clients group exchanges with an `x-session-id` header (otherwise the gateway derives one).")
        return
    event = st.dataframe(
        sessions,
        hide_index=True,
        width="stretch",
        height=260,
        key="sessions_table",
        on_select="rerun",
        selection_mode="single-row",
        column_config={
            "first_seen": st.column_config.DatetimeColumn("first seen", format="YYYY-MM-DD HH:mm:ss"),
            "last_seen": st.column_config.DatetimeColumn("last seen", format="YYYY-MM-DD HH:mm:ss"),
            "requests": st.column_config.NumberColumn(format="%d"),
            "errors": st.column_config.NumberColumn(format="%d"),
            "tokens": st.column_config.NumberColumn(format="compact"),
        },
    )
    selected = event.selection.rows if event is not None and hasattr(event, "selection") else []
    if selected:
        session_id = sessions.iloc[selected[0]]["session_id"]
    session_id = st.text_input("Session id", value=session_id or "", key="session_id_input")
    if not session_id:
        return
    turns = data.session_turns(session_id)
    if not turns:
        st.warning(f"No exchanges in session {fmt.code(session_id)}.")
        return
    st.subheader(f"Session {fmt.code(session_id)} · {len(turns)} exchanges")
    tl = pd.DataFrame(
        [
            {
                "turn": i + 1,
                "started_at": t.started_at,
                "finished_at": t.finished_at,
                "model": t.model,
                "status": t.status,
                "latency_ms": t.latency_ms,
                "request_id": t.request_id,
                "outcome": "error" if t.error or (t.status or 0) >= 400 else "ok",
            }
            for i, t in enumerate(turns)
        ]
    )
    st.altair_chart(charts.session_timeline(tl), width="stretch")
    for i, t in enumerate(turns):
        with st.chat_message("user"):
            st.caption(f"turn {i + 1} · {t.started_at:%H:%M:%S} · [open](explorer?request_id={quote(t.request_id, safe='')})")
            st.text(t.prompt or "(no user text)")
        with st.chat_message("assistant"):
            meta = (
                f"{fmt.md(t.model or '?')} · {t.status if t.status is not None else '–'} · {fmt.ms(t.latency_ms)} · "
                f"{fmt.count(t.tokens_in)} → {fmt.count(t.tokens_out)} tokens"
            )
            st.caption(meta)
            if t.error:
                st.error(fmt.md(t.error))
            st.text(t.reply or "(no text in the reply)")


try:
    if view == "Sessions":
        sessions_view()
    else:
        exchanges_view()
except Exception as exc:  # noqa: BLE001 - no database configured, or it is restarting
    st.warning(f"Explorer unavailable: {fmt.md(exc)}")
