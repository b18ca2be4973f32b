"""Experiments: Claude's candidate enhancements, running A/B tests with their statistics, controls
(start, pause, resume, promote, roll back, each confirmed) and the history of every decision."""

from __future__ import annotations

import json

import altair as alt
import pandas as pd
import streamlit as st

from ui import actions, auth, data, fmt, intel

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


def _pct(v: float | None) -> str:
    return fmt.percent(v)


def _effect(v: float | None) -> str:
    return "–" if v is None else f"{v * 100:+.1f} pp"


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


flash = st.session_state.pop("exp_flash", None)
if flash:
    st.success(flash)

runs = intel.experiments()
active = [e for e in runs if e.status in ("running", "paused")]
decided = [e for e in runs if e.status not in ("running", "paused")]

# ------------------------------------------------------------------------------------- active
st.subheader("Active experiments")
if not active:
    st.info("No experiment is running. Start one from a candidate below (or let the evaluator do it).")
for e in active:
    s = e.stats
    with st.container(border=True):
        st.markdown(
            f"**Experiment #{e.id}** · {e.status.upper()} · enhancement #{e.enhancement_id} ({e.kind}) on "
            f"pattern {('#' + str(e.pattern_id) + ' ' + (e.pattern or '')) if e.pattern_id else '(any)'}"
        )
        st.caption(
            f"started {e.started_at:%Y-%m-%d %H:%M} UTC by {e.created_by or 'system'} · control weight "
            f"{e.control_weight:.2f} · assigned by {e.assign_by} · alpha {e.alpha} · minimum effect "
            f"{e.min_effect * 100:.1f} pp · {fmt.count(e.exposures)} exchanges exposed"
        )
        m = st.columns(4)
        m[0].metric("Samples", fmt.count(sum(a.n or 0 for a in s.arms)))
        m[1].metric(
            "Effect (variant − control)",
            _effect(s.effect),
            help="difference in success rate, percentage points"
            + (f"; {int((1 - e.alpha) * 100)}% CI {_effect(s.effect_ci[0])} … {_effect(s.effect_ci[1])}" if s.effect_ci else ""),
        )
        m[2].metric(
            "P(variant better)" if s.probability is not None else "p-value",
            _pct(s.probability) if s.probability is not None else (f"{s.p_value:.3f}" if s.p_value is not None else "–"),
        )
        m[3].metric("Decision so far", s.decision or "collecting")
        if s.effect_ci:
            st.caption(f"Effect confidence interval: {_effect(s.effect_ci[0])} … {_effect(s.effect_ci[1])}")
        if s.arms:
            st.dataframe(
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
        if s.other:
            st.caption(" · ".join(f"{k}: {v}" for k, v in s.other.items() if not isinstance(v, (dict, list))))
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
        if pending and pending[0] == e.id:
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
            reason = st.text_input("Reason (recorded in the history)", key=f"exp_reason_{e.id}")
            c = st.columns(2)
            if c[0].button(f"Confirm {LABELS[action].lower()}", type="primary", key=f"exp_confirm_{e.id}"):
                try:
                    actions.experiment_action(who, e.id, action, reason)
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
cands = intel.enhancements("candidate")
if cands.empty:
    st.caption("No candidate enhancements. The candidate job proposes them for patterns that fail often.")
else:
    st.dataframe(
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
            f"{'sessions' if assign == 'session' else 'clients'} get the change."
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

# ------------------------------------------------------------------------------------- history
st.subheader("Decided experiments")
if decided:
    st.dataframe(
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
# ------------------------------------------------------------------------------- effectiveness
st.subheader("Effectiveness")
tested = {}  # enhancement id -> its newest experiment (runs are newest first)
for e in runs:
    tested.setdefault(e.enhancement_id, e)
if not tested:
    st.caption("No enhancement has been tested yet.")
else:
    cols = st.columns([3, 1])
    enh_id = cols[0].selectbox(
        "Enhancement",
        list(tested),
        key="exp_eff_pick",
        format_func=lambda i: f"#{i} {tested[i].kind} · experiment #{tested[i].id} ({tested[i].status})",
    )
    bucket = cols[1].radio("Per", ["day", "hour"], horizontal=True, key="exp_eff_bucket")
    eff = intel.effectiveness(enh_id, bucket)
    if eff.series.empty:
        st.caption("No exposures recorded for this enhancement yet.")
    else:
        st.altair_chart(effectiveness_chart(eff.series, bucket), width="stretch")
        st.caption(
            f"Success rate by arm with {int((1 - eff.doc['alpha']) * 100)}% Wilson intervals (bands). "
            "Control and variant come from the experiment; active is the traffic after promotion"
            + (f" (from {eff.doc['active_from'][:16].replace('T', ' ')} UTC)." if eff.doc["active_from"] else ".")
        )
        st.dataframe(
            eff.arms,
            hide_index=True,
            width="stretch",
            key="exp_eff_arms",
            column_config={c: st.column_config.NumberColumn(format="percent") for c in ("success rate", "CI low", "CI high")},
        )
        if eff.deltas.empty:
            st.caption("No deltas yet: control and variant both need finished exposures.")
        else:
            st.dataframe(
                eff.deltas,
                hide_index=True,
                width="stretch",
                key="exp_eff_deltas",
                column_config={"relative": st.column_config.NumberColumn(format="percent")},
            )

st.subheader("History")
history = intel.experiment_history()
if history.empty:
    st.caption("No experiment events yet.")
else:
    st.dataframe(
        history,
        hide_index=True,
        width="stretch",
        key="exp_history",
        column_config={"at": st.column_config.DatetimeColumn("time", format="YYYY-MM-DD HH:mm:ss")},
    )
