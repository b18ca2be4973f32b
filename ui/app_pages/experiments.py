"""Experiments: approvals waiting for an admin, Claude's candidate enhancements, running A/B tests with
their statistics, controls (approve, start, pause, resume, promote, roll back, each confirmed), the
measured lift of every promoted enhancement, and the history of every decision.

Reads go through ui.data and intelligence data functions (intelligence.enhance.manage, .lift); no SQL here."""

from __future__ import annotations

import json
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from ui import actions, auth, data, fmt, tables

st.title("Experiments")

try:
    data.runner()
except Exception as exc:  # noqa: BLE001 - no database configured: say so instead of a traceback
    st.warning(f"Database unavailable: {exc}")
    st.stop()

who = auth.principal()
is_admin = bool(who and who.is_admin)
ADMIN_ONLY = "admin only: sign in with an admin token"
PENDING = "exp_pending"  # (experiment id, action) waiting for its confirmation
LABELS = {"pause": "Pause", "resume": "Resume", "promote": "Promote", "rollback": "Roll back"}
ALLOWED = {"running": ("pause", "promote", "rollback"), "paused": ("resume", "promote", "rollback")}
NO_DATA = "no data yet"


def _pct(v: float | None) -> str:
    return fmt.percent(v)


def _effect(v: float | None) -> str:
    return "–" if v is None else f"{v * 100:+.1f} pp"


def _lift(v: float | None) -> str:
    return "–" if v is None else f"{v:+.0%}"


def _lift_ci(ci: list[float | None] | None) -> str:
    """A lift interval; its upper end is None when control's rate could be 0 (the ratio is unbounded)."""
    if not ci:
        return NO_DATA
    return f"{_lift(ci[0])} … " + ("unbounded" if ci[1] is None else _lift(ci[1]))


@st.cache_data(ttl=5, max_entries=4, show_spinner=False)
def _approval_rows(url: str, rev: int, tick: int) -> dict[int, dict[str, Any]]:
    """Per experiment id: status, scope and what it awaits (intelligence.enhance.manage)."""
    from intelligence.enhance import manage

    rows = data._run(lambda conn: manage.list_experiments(conn, limit=500))
    return {int(r["id"]): r for r in rows}


@st.cache_data(ttl=10, max_entries=4, show_spinner=False)
def _rejected(url: str, rev: int, tick: int) -> list[dict[str, Any]]:
    from intelligence.enhance import manage

    return data._run(lambda conn: manage.list_enhancements(conn, status="rejected", limit=50))


@st.cache_data(ttl=30, max_entries=4, show_spinner=False)
def _lift_report(url: str, rev: int, tick: int) -> dict[str, Any]:
    from intelligence.enhance.lift import lift_report

    return data._run(lambda conn: lift_report(conn))


def approve(experiment_id: int, reason: str) -> str:
    """An admin approves what the experiment awaits (its start, or a requested promotion)."""
    from intelligence.enhance import manage

    current = auth.require_admin(who)
    actor = auth.actor(current)
    try:
        return data.runner().transaction(
            lambda conn: manage.approve_experiment(conn, int(experiment_id), actor=actor, reason=reason)
        )
    finally:
        data.bump_revision()


def effectiveness_chart(series: pd.DataFrame, bucket: str) -> alt.LayerChart:
    """Success rate per arm over time: a line with points, on a band from the Wilson interval."""
    shown = series[series["n"] > 0]  # a bucket with only pending exposures has no rate yet
    x = alt.X("bucket:T", title=None, timeUnit="utcyearmonthdatehours" if bucket == "hour" else "utcyearmonthdate")
    color = alt.Color(
        "arm:N", title="arm", scale=alt.Scale(domain=["control", "variant", "active"]), legend=alt.Legend(orient="bottom")
    )
    base = alt.Chart(shown).encode(x=x, color=color)
    band = base.mark_area(opacity=0.18).encode(
        y=alt.Y("ci_low:Q", title="success rate", axis=alt.Axis(format="%"), scale=alt.Scale(domain=[0, 1])), y2="ci_high:Q"
    )
    line = base.mark_line(point=True).encode(
        y="rate:Q",
        tooltip=[
            alt.Tooltip("arm:N"),
            alt.Tooltip("bucket:T", title="from", format="%Y-%m-%d %H:%M"),
            alt.Tooltip("n:Q"),
            alt.Tooltip("successes:Q"),
            alt.Tooltip("rate:Q", format=".1%"),
            alt.Tooltip("ci_low:Q", title="CI low", format=".1%"),
            alt.Tooltip("ci_high:Q", title="CI high", format=".1%"),
        ],
    )
    return alt.layer(band, line).properties(height=260)


def _confirm_approval(e_id: int, what: str) -> None:
    """The confirmation step of an approval (or a decline of a pending start)."""
    pending = st.session_state.get(PENDING)
    if not pending or pending[0] != e_id or pending[1] not in ("approve", "decline"):
        return
    action = pending[1]
    if action == "approve":
        st.warning(
            f"Approve the {what} of experiment #{e_id}? "
            + (
                "Its variant starts reaching the pattern's traffic."
                if what == "start"
                else "The variant becomes the active enhancement for all the pattern's traffic."
            )
        )
    else:
        st.warning(f"Decline experiment #{e_id}? Its candidate is rejected and never reaches traffic.")
    reason = st.text_input("Reason (recorded in the history and the audit log)", key=f"exp_approve_reason_{e_id}")
    c = st.columns(2)
    if c[0].button(
        f"Confirm {'approval' if action == 'approve' else 'decline'}", type="primary", key=f"exp_approve_confirm_{e_id}"
    ):
        try:
            if action == "approve":
                done = approve(e_id, reason)
                st.session_state["exp_flash"] = f"Experiment #{e_id}: {done} approved."
            else:
                actions.experiment_action(who, e_id, "rollback", reason)
                st.session_state["exp_flash"] = f"Experiment #{e_id} declined."
            st.session_state.pop(PENDING, None)
            st.rerun()
        except Exception as exc:  # noqa: BLE001 - shown to the operator
            st.error(f"{type(exc).__name__}: {exc}")
    if c[1].button("Cancel", key=f"exp_approve_cancel_{e_id}"):
        st.session_state.pop(PENDING, None)
        st.rerun()


flash = st.session_state.pop("exp_flash", None)
if flash:
    st.success(flash)

runs = data.experiments()
approvals = _approval_rows(data.database_url(), data.revision(), data._tick(5))
active = [e for e in runs if e.status in ("running", "paused")]
waiting = [e for e in runs if e.status == "pending" or (approvals.get(e.id) or {}).get("awaiting") == "promote"]
decided = [e for e in runs if e.status not in ("running", "paused", "pending")]

# ------------------------------------------------------------------------------------- approvals
st.subheader("Awaiting approval")
st.caption(
    "The candidate job and the evaluator propose; an admin approves starting an experiment and promoting its "
    "variant (roll-backs never wait). LLMPROXY_EXPERIMENTS_AUTO=1 lets the loop approve itself; every approval "
    "is recorded in the history and the audit log."
)
if not waiting:
    st.caption("Nothing awaits approval.")
for e in waiting:
    info = approvals.get(e.id) or {}
    what = "start" if e.status == "pending" else "promotion"
    with st.container(border=True):
        st.markdown(
            f"**Experiment #{e.id}** · awaiting approval of its **{what}** · enhancement #{e.enhancement_id} ({e.kind}) on "
            f"pattern {('#' + str(e.pattern_id) + ' ' + (e.pattern or '')) if e.pattern_id else '(any)'}"
            + (f" · scope: key {info['scope']}" if info.get("scope") else " · scope: all traffic")
        )
        if info.get("awaiting_reason"):
            st.caption(f"Requested by {e.created_by if what == 'start' else 'evaluator'}: {info['awaiting_reason']}")
        with st.expander("Rationale and change"):
            st.write(e.rationale or "(no rationale recorded)")
            st.code(json.dumps(e.spec, indent=2, ensure_ascii=False), language="json")
        cols = st.columns(3)
        if cols[0].button(
            f"Approve {what}", key=f"exp_approve_{e.id}", disabled=not is_admin, help=None if is_admin else ADMIN_ONLY
        ):
            st.session_state[PENDING] = (e.id, "approve")
        if e.status == "pending" and cols[1].button(
            "Decline", key=f"exp_decline_{e.id}", disabled=not is_admin, help=None if is_admin else ADMIN_ONLY
        ):
            st.session_state[PENDING] = (e.id, "decline")
        _confirm_approval(e.id, "start" if e.status == "pending" else "promotion")

# ------------------------------------------------------------------------------------- active
st.subheader("Active experiments")
if not active:
    st.info("No experiment is running. Start one from a candidate below, or approve one the candidate job proposed.")
for e in active:
    s = e.stats
    info = approvals.get(e.id) or {}
    samples = sum(a.n or 0 for a in s.arms)
    with st.container(border=True):
        st.markdown(
            f"**Experiment #{e.id}** · {e.status.upper()} · enhancement #{e.enhancement_id} ({e.kind}) on "
            f"pattern {('#' + str(e.pattern_id) + ' ' + (e.pattern or '')) if e.pattern_id else '(any)'}"
            + (" · **awaiting approval to promote**" if info.get("awaiting") == "promote" else "")
        )
        st.caption(
            f"started {e.started_at:%Y-%m-%d %H:%M} UTC by {e.created_by or 'system'} · control weight "
            f"{e.control_weight:.2f} · assigned (and analysed) by {e.assign_by} · alpha {e.alpha} · minimum effect "
            f"{e.min_effect * 100:.1f} pp · {fmt.count(e.exposures)} exchanges exposed"
            + (f" · scope: key {info['scope']}" if info.get("scope") else "")
        )
        m = st.columns(4)
        m[0].metric("Samples", fmt.count(samples))
        if samples == 0:  # never a p-value (or an effect) without data
            m[1].metric("Effect (variant − control)", NO_DATA)
            m[2].metric("p-value", NO_DATA)
            m[3].metric("Decision so far", "collecting")
        else:
            m[1].metric(
                "Effect (variant − control)",
                _effect(s.effect),
                help="difference in success rate, percentage points"
                + (
                    f"; {int((1 - e.alpha) * 100)}% always-valid CI {_effect(s.effect_ci[0])} … {_effect(s.effect_ci[1])}"
                    if s.effect_ci
                    else ""
                ),
            )
            m[2].metric(
                "P(variant better)" if s.probability is not None else "p-value",
                _pct(s.probability) if s.probability is not None else (f"{s.p_value:.3f}" if s.p_value is not None else "–"),
                help="always-valid: it may be checked any number of times (docs/experiments.md)",
            )
            m[3].metric("Decision so far", s.decision or "collecting")
            if s.effect_ci:
                st.caption(f"Effect confidence interval (always valid): {_effect(s.effect_ci[0])} … {_effect(s.effect_ci[1])}")
            lift = s.other.get("relative_lift") or {}
            if lift.get("ci"):
                st.caption(
                    f"Relative lift {_lift(lift.get('estimate'))} (always-valid CI {_lift_ci(lift['ci'])}), "
                    f"analysed per {e.assign_by}"
                )
        if s.arms:
            tables.show(
                pd.DataFrame(
                    [
                        {
                            "experiment": e.id,
                            "arm": a.name,
                            "n": a.n,
                            "successes": a.successes,
                            "success rate": a.rate,
                            "CI low": a.ci_low,
                            "CI high": a.ci_high,
                        }
                        for a in s.arms
                    ]
                ),
                hide_index=True,
                width="stretch",
                key=f"exp_arms_{e.id}",
                column_order=["arm", "n", "successes", "success rate", "CI low", "CI high"],
                column_config={c: st.column_config.NumberColumn(format="percent") for c in ("success rate", "CI low", "CI high")},
            )
        reason = s.other.get("reason")
        if samples and isinstance(reason, str) and reason:
            st.caption(reason)
        with st.expander("Rationale and change"):
            st.write(e.rationale or "(no rationale recorded)")
            st.code(json.dumps(e.spec, indent=2, ensure_ascii=False), language="json")
        buttons = st.columns(len(ALLOWED[e.status]) + 1)
        for col, action in zip(buttons, ALLOWED[e.status]):
            if col.button(
                LABELS[action], key=f"exp_{action}_{e.id}", disabled=not is_admin, help=None if is_admin else ADMIN_ONLY
            ):
                st.session_state[PENDING] = (e.id, action)
        pending = st.session_state.get(PENDING)
        if pending and pending[0] == e.id and pending[1] in LABELS:
            action = pending[1]
            st.warning(
                f"{LABELS[action]} experiment #{e.id}?"
                + (
                    " Promoting makes the variant the active enhancement for all traffic of the pattern."
                    if action == "promote"
                    else ""
                )
                + (" Rolling back sends all traffic to the control." if action == "rollback" else "")
            )
            reason_text = st.text_input("Reason (recorded in the history)", key=f"exp_reason_{e.id}")
            c = st.columns(2)
            if c[0].button(f"Confirm {LABELS[action].lower()}", type="primary", key=f"exp_confirm_{e.id}"):
                try:
                    actions.experiment_action(who, e.id, action, reason_text)
                    st.session_state.pop(PENDING, None)
                    st.session_state["exp_flash"] = f"Experiment #{e.id}: {LABELS[action].lower()} done."
                    st.rerun()
                except Exception as exc:  # noqa: BLE001 - shown to the operator
                    st.error(f"{type(exc).__name__}: {exc}")
            if c[1].button("Cancel", key=f"exp_cancel_{e.id}"):
                st.session_state.pop(PENDING, None)
                st.rerun()

# ---------------------------------------------------------------------------------- candidates
st.subheader("Candidates")
cands = data.enhancements("candidate")
if cands.empty:
    st.caption("No candidate enhancements. The candidate job proposes them for patterns that fail often.")
else:
    tables.show(
        cands.drop(columns=["spec", "status"]),
        hide_index=True,
        width="stretch",
        key="exp_candidates",
        column_config={
            "rationale": st.column_config.TextColumn("Claude's rationale", width="large"),
            "created_at": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm"),
        },
    )
    ids = [int(i) for i in cands["id"]]
    kinds = dict(zip(ids, cands["kind"]))
    cols = st.columns([3, 1, 1, 1])
    pick = cols[0].selectbox(
        "Candidate",
        ids,
        format_func=lambda i: f"#{i} {kinds.get(i, '')}",
        key="exp_cand_id",
        disabled=not is_admin,
        help=None if is_admin else ADMIN_ONLY,
    )
    weight = cols[1].number_input("Control weight", 0.05, 0.95, 0.5, 0.05, key="exp_cand_weight", disabled=not is_admin)
    assign = cols[2].selectbox("Assign by", ["session", "client"], key="exp_cand_assign", disabled=not is_admin)
    spec = cands.set_index("id").loc[pick, "spec"] if pick is not None else None
    if spec is not None:
        with st.expander(f"Change proposed by candidate #{pick}"):
            st.code(json.dumps(spec, indent=2, ensure_ascii=False), language="json")
    if cols[3].button("Start experiment", key="exp_start", disabled=not is_admin):
        st.session_state["exp_start_pending"] = pick
    if st.session_state.get("exp_start_pending") == pick and pick is not None:
        st.warning(
            f"Start an A/B test of candidate #{pick}? {1 - float(weight):.0%} of the pattern's "
            f"{'sessions' if assign == 'session' else 'clients'} get the change. Starting it yourself is your approval."
        )
        c = st.columns(2)
        if c[0].button("Confirm start", type="primary", key="exp_start_confirm"):
            try:
                new_id = actions.start_experiment(who, pick, control_weight=float(weight), assign_by=assign)
                st.session_state.pop("exp_start_pending", None)
                st.session_state["exp_flash"] = f"Experiment #{new_id} started for candidate #{pick}."
                st.rerun()
            except Exception as exc:  # noqa: BLE001
                st.error(f"{type(exc).__name__}: {exc}")
        if c[1].button("Cancel", key="exp_start_cancel"):
            st.session_state.pop("exp_start_pending", None)
            st.rerun()
rejected = _rejected(data.database_url(), data.revision(), data._tick(10))
if rejected:
    with st.expander(f"Rejected candidates ({len(rejected)}): screening and declines"):
        tables.show(
            pd.DataFrame(
                [
                    {
                        "id": r["id"],
                        "pattern_id": r["pattern_id"],
                        "kind": r["kind"],
                        "why": r["status_reason"],
                        "scope": r["scope"],
                    }
                    for r in rejected
                ]
            ),
            hide_index=True,
            width="stretch",
            key="exp_rejected",
        )

# ------------------------------------------------------------------------------------- decided
st.subheader("Decided experiments")
if decided:
    tables.show(
        pd.DataFrame(
            [
                {
                    "id": e.id,
                    "status": e.status,
                    "enhancement": e.enhancement_id,
                    "kind": e.kind,
                    "pattern_id": e.pattern_id,
                    "samples": sum(a.n or 0 for a in e.stats.arms),
                    "effect": e.stats.effect,
                    "reason": e.decision_reason,
                    "decided_at": e.decided_at,
                }
                for e in decided
            ]
        ),
        hide_index=True,
        width="stretch",
        key="exp_decided",
        column_config={"effect": st.column_config.NumberColumn(format="percent")},
    )
else:
    st.caption("None yet.")

# ------------------------------------------------------------------------------------- lift
st.subheader("Lift of promoted enhancements")
report = _lift_report(data.database_url(), data.revision(), data._tick(30))
overall = report["overall"]
st.caption(
    "What the loop promises is error control, not a lift of a given size: a promotion is a false decision with "
    "probability at most alpha (sessions independent, docs/experiments.md). What it measures is shown here: each "
    "promoted enhancement's relative lift in success rate, (variant − control) / control, with the always-valid "
    "interval from its experiment, and the requests-weighted lift of the enhancements active now (weights: each "
    f"pattern's requests over the last {report['weight_days']:g} days; normal-approximation interval). Lifts "
    "measured when a sequential test stops are optimistic on average (they stop on a high estimate)."
)
m = st.columns(3)
if overall["lift"] is None:
    m[0].metric("Requests-weighted lift", NO_DATA)
    m[1].metric(f"Target +{overall['target']:.0%}", NO_DATA)
else:
    m[0].metric(
        "Requests-weighted lift",
        _lift(overall["lift"]),
        help=f"95% CI {_lift(overall['ci'][0])} … {_lift(overall['ci'][1])} over {overall['enhancements']} enhancement(s)",
    )
    m[1].metric(f"Target +{overall['target']:.0%}", overall["target_status"])
    st.caption(
        f"Overall: {_lift(overall['lift'])} (95% CI {_lift(overall['ci'][0])} … {_lift(overall['ci'][1])}), "
        f"{overall['enhancements']} active enhancement(s), {fmt.count(overall['requests'])} {overall['weights']}."
    )
m[2].metric("Promoted enhancements", fmt.count(len(report["promoted"])))
if report["per_pattern"]:
    tables.show(
        pd.DataFrame(
            [
                {
                    "pattern_id": i["pattern_id"],
                    "pattern": i["pattern"],
                    "scope": i["scope"] or "all traffic",
                    "enhancement": i["enhancement_id"],
                    "experiment": i["experiment_id"],
                    "relative lift": _lift(i["lift"]) if i["lift"] is not None else NO_DATA,
                    "CI": _lift_ci(i["ci"]),
                    "control": i.get("control_rate"),
                    "variant": i.get("variant_rate"),
                    "requests": i["requests"],
                }
                for i in report["per_pattern"]
            ]
        ),
        hide_index=True,
        width="stretch",
        key="exp_lift",
        column_config={c: st.column_config.NumberColumn(format="percent") for c in ("control", "variant")},
    )
if report["promoted"]:
    with st.expander(f"Every promoted enhancement ({len(report['promoted'])})"):
        tables.show(
            pd.DataFrame(
                [
                    {
                        "experiment": i["experiment_id"],
                        "enhancement": i["enhancement_id"],
                        "pattern_id": i["pattern_id"],
                        "status now": i["enhancement_status"],
                        "relative lift": _lift(i["lift"]) if i["lift"] is not None else NO_DATA,
                        "CI": _lift_ci(i["ci"]),
                        "decided_at": i["decided_at"],
                    }
                    for i in report["promoted"]
                ]
            ),
            hide_index=True,
            width="stretch",
            key="exp_lift_all",
        )
else:
    st.caption("No enhancement has been promoted yet.")

# ------------------------------------------------------------------------------- effectiveness
st.subheader("Effectiveness")
tested = {}  # enhancement id -> its newest experiment (runs are newest first)
for e in runs:
    if e.status != "pending":
        tested.setdefault(e.enhancement_id, e)
if not tested:
    st.caption("No enhancement has been tested yet.")
else:
    cols = st.columns([3, 1])
    # chosen, not preselected: one enhancement's effectiveness aggregates every exposure (0.7-1.6 s of SQL at
    # 30,000-50,000 exposures, docs/dashboard.md), which the page's first view should not wait for
    enh_id = cols[0].selectbox(
        "Enhancement",
        list(tested),
        index=None,
        placeholder="Choose an enhancement to chart",
        key="exp_eff_pick",
        format_func=lambda i: f"#{i} {tested[i].kind} · experiment #{tested[i].id} ({tested[i].status})",
    )
    bucket = cols[1].radio("Per", ["day", "hour"], horizontal=True, key="exp_eff_bucket")
    eff = data.effectiveness(enh_id, bucket) if enh_id is not None else None
    if eff is None:
        st.caption(f"{len(tested)} enhancement(s) tested: choose one for its success rate by arm over time.")
    elif eff.series.empty:
        st.caption("No exposures recorded for this enhancement yet.")
    else:
        st.altair_chart(effectiveness_chart(eff.series, bucket), width="stretch")
        st.caption(
            f"Success rate by arm with {int((1 - eff.doc['alpha']) * 100)}% Wilson intervals (bands). "
            "Control and variant come from the experiment; active is the traffic after promotion"
            + (f" (from {eff.doc['active_from'][:16].replace('T', ' ')} UTC)." if eff.doc["active_from"] else ".")
        )
        tables.show(
            eff.arms,
            hide_index=True,
            width="stretch",
            key="exp_eff_arms",
            column_config={c: st.column_config.NumberColumn(format="percent") for c in ("success rate", "CI low", "CI high")},
        )
        if eff.deltas.empty:
            st.caption("No deltas yet: control and variant both need finished exposures.")
        else:
            tables.show(
                eff.deltas,
                hide_index=True,
                width="stretch",
                key="exp_eff_deltas",
                column_config={"relative": st.column_config.NumberColumn(format="percent")},
            )

st.subheader("History")
history = data.experiment_history()
if history.empty:
    st.caption("No experiment events yet.")
else:
    tables.show(
        history,
        hide_index=True,
        width="stretch",
        key="exp_history",
        column_config={"at": st.column_config.DatetimeColumn("time", format="YYYY-MM-DD HH:mm:ss")},
    )
