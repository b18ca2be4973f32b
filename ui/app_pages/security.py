"""Security: alerts, what the policy blocked or redacted, detector hit rates, anomaly verdicts and
the learned attack memory, quarantined keys, the audit chain, the policy editor and gateway keys.

Admin-only controls are shown disabled to viewers; every action re-checks the role server-side
(ui.actions) before it writes.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from ui import actions, auth, data, fmt, tables

st.title("Security")

try:
    data.runner()
except Exception as exc:  # noqa: BLE001 - no database configured: say so instead of a traceback
    st.warning(f"Database unavailable: {fmt.md(exc)}")
    st.stop()

who = auth.principal()
is_admin = bool(who and who.is_admin)
ADMIN_ONLY = "admin only: sign in with an admin token"


def _done(message: str) -> None:
    st.session_state["security_flash"] = message
    st.rerun()


def _fail(exc: Exception) -> None:
    st.error(f"{type(exc).__name__}: {fmt.md(exc)}")


flash = st.session_state.pop("security_flash", None)
if flash:
    st.success(flash)

# One view at a time, chosen above it: only the chosen view runs its queries and renders. (With st.tabs every
# tab ran on each page run; and content inside tabs stayed as placeholder skeletons for up to a second after
# its scripts had loaded, in a fresh browser.) The view is in the address (?tab=Keys), so it can be linked.
VIEWS = ["Alerts", "Blocked & redacted", "Detectors", "Verdicts", "Keys", "Policies", "Audit"]
view = st.segmented_control(
    "View", VIEWS, default="Alerts", required=True, key="tab", bind="query-params", label_visibility="collapsed"
)

# --------------------------------------------------------------------------------------- alerts
if view == "Alerts":
    c = st.columns([1, 3])
    only_open = c[0].toggle("Unacknowledged only", value=False, key="sec_only_open")
    # the newest 25 by default: a table a fresh browser renders at once (200 go to the grid, at its cost)
    newest = c[1].segmented_control("Newest", [25, 200], default=25, required=True, key="sec_events_n")
    ev = data.events(int(newest or 25), unacknowledged_only=only_open)
    if ev.empty:
        st.info("No events yet. Policy alerts, blocks, anomaly verdicts, quarantines and experiment decisions appear here.")
    else:
        shown = ev.assign(state=ev["acknowledged_at"].map(lambda t: "open" if pd.isna(t) else "acknowledged"))
        tables.show(
            shown,
            hide_index=True,
            width="stretch",
            key="sec_events",
            column_order=["at", "severity", "kind", "title", "subject", "state", "acknowledged_by", "source", "id"],
            column_config={
                "at": st.column_config.DatetimeColumn("time", format="YYYY-MM-DD HH:mm:ss"),
                "title": st.column_config.TextColumn(width="large"),
            },
        )
        open_ids = [int(i) for i in ev.loc[ev["acknowledged_at"].isna(), "id"]]
        titles = dict(zip(ev["id"].astype(int), ev["title"]))
        cols = st.columns([3, 1])
        chosen = cols[0].multiselect(
            "Acknowledge",
            open_ids,
            format_func=lambda i: f"#{i} {titles.get(i, '')}",
            key="sec_ack_ids",
            disabled=not is_admin,
            help=None if is_admin else ADMIN_ONLY,
        )
        if cols[1].button("Acknowledge", key="sec_ack", disabled=not is_admin or not chosen):
            try:
                n = sum(actions.acknowledge_event(who, i) for i in chosen)
                _done(f"Acknowledged {n} event(s).")
            except Exception as exc:  # noqa: BLE001 - shown to the operator
                _fail(exc)

# ---------------------------------------------------------------------------- blocked & redacted
if view == "Blocked & redacted":
    hours = (
        st.segmented_control(
            "Window",
            [1, 24, 24 * 7],
            default=24,
            format_func=lambda h: f"{h} h" if h < 48 else f"{h // 24} d",
            key="sec_enf_hours",
        )
        or 24
    )
    enf = data.enforced_requests(hours)
    c = st.columns(3)
    c[0].metric("Blocked", fmt.count(int((enf["action"] == "blocked").sum())))
    c[1].metric("Redacted", fmt.count(int((enf["action"] == "redacted").sum())))
    c[2].metric("Clients involved", fmt.count(int(enf["client"].nunique())))
    if enf.empty:
        st.info("Nothing blocked or redacted in this window.")
    else:
        tables.show(
            enf.assign(open="explorer?request_id=" + enf["request_id"]),
            hide_index=True,
            width="stretch",
            key="sec_enforced",
            column_config={
                "time": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss"),
                "status": st.column_config.NumberColumn(format="%d"),
                "open": st.column_config.LinkColumn("open", display_text="open"),
                "detail": st.column_config.TextColumn(width="large"),
            },
        )

# ------------------------------------------------------------------------------------- detectors
if view == "Detectors":
    rates = data.detector_rates(24)
    if rates.empty:
        st.info("No traffic in the last 24 hours.")
    else:
        total = rates["requests"].sum()
        c = st.columns(4)
        for col, (name, label) in zip(
            c, [("pii", "PII"), ("secrets", "Secrets"), ("injection", "Injection"), ("blocked", "Blocked")]
        ):
            col.metric(
                f"{label} (24 h)",
                fmt.percent(rates[name].sum() / total if total else None),
                help=f"{int(rates[name].sum())} of {int(total)} requests",
            )
        long = rates.melt(
            id_vars=["bucket"],
            value_vars=["pii_rate", "secrets_rate", "injection_rate", "blocked_rate"],
            var_name="detector",
            value_name="share of requests",
        )
        long["detector"] = long["detector"].str.removesuffix("_rate")
        st.line_chart(long, x="bucket", y="share of requests", color="detector", height=280)
        st.caption(
            "Share of each hour's requests in which the detector found something (injection: score at or "
            "above the detectors' calibrated threshold)."
        )

# -------------------------------------------------------------------------------------- verdicts
if view == "Verdicts":
    vd = data.verdicts(200)
    if vd.empty:
        st.info("No anomaly verdicts yet (the anomaly job judges suspicious traffic when anomaly detection is on).")
    else:
        tables.show(
            vd,
            hide_index=True,
            width="stretch",
            key="sec_verdicts",
            column_config={
                "at": st.column_config.DatetimeColumn("time", format="YYYY-MM-DD HH:mm:ss"),
                "confidence": st.column_config.ProgressColumn(min_value=0.0, max_value=1.0, format="%.2f"),
                "reasoning": st.column_config.TextColumn(width="large"),
            },
        )
        ids = [int(i) for i in vd["id"]]
        reasons = dict(zip(ids, vd["reasoning"]))
        cols = st.columns([3, 2, 1])
        vid = cols[0].selectbox(
            "Verdict",
            ids,
            format_func=lambda i: f"#{i} {str(reasons.get(i, ''))[:60]}",
            key="sec_verdict_id",
            disabled=not is_admin,
            help=None if is_admin else ADMIN_ONLY,
        )
        label = cols[1].radio(
            "Confirm as", ["attack", "false_positive"], horizontal=True, key="sec_verdict_label", disabled=not is_admin
        )
        if cols[2].button("Confirm", key="sec_verdict_confirm", disabled=not is_admin):
            try:
                actions.confirm_verdict(who, vid, label)
                _done(f"Verdict #{vid} confirmed as {label}.")
            except Exception as exc:  # noqa: BLE001
                _fail(exc)

    st.subheader("Learned attack memory")
    learned = data.learned_attacks()
    if learned.empty:
        st.caption(
            "Nothing learned yet: prompts of verdicts confirmed as attacks (by an operator, or by a confident "
            "Claude verdict) join the injection detector's memory here."
        )
    else:
        tables.show(
            learned,
            hide_index=True,
            width="stretch",
            key="sec_attacks",
            column_config={
                "created_at": st.column_config.DatetimeColumn("added", format="YYYY-MM-DD HH:mm:ss"),
                "text": st.column_config.TextColumn(width="large"),
            },
        )
        active = [int(i) for i in learned.loc[learned["status"] == "active", "id"]]
        if active:
            cols = st.columns([3, 2, 1])
            aid = cols[0].selectbox(
                "Learned attack", active, key="sec_attack_id", disabled=not is_admin, help=None if is_admin else ADMIN_ONLY
            )
            why = cols[1].text_input("Reason", key="sec_attack_reason", disabled=not is_admin)
            if cols[2].button("Disable", key="sec_attack_disable", disabled=not is_admin):
                try:
                    changed = actions.disable_attack(who, aid, why)
                    _done(f"Learned attack #{aid} disabled." if changed else f"Learned attack #{aid} was already disabled.")
                except Exception as exc:  # noqa: BLE001
                    _fail(exc)

# ------------------------------------------------------------------------------------------ keys
if view == "Keys":
    keys = data.gateway_keys()
    st.subheader("Quarantined keys")
    quarantined = keys[keys["status"] == "quarantined"]
    if quarantined.empty:
        st.caption("No key is quarantined.")
    else:
        tables.show(
            quarantined[["id", "name", "prefix", "quarantined_at", "quarantine_reason"]],
            hide_index=True,
            width="stretch",
            key="sec_quarantined",
        )
        cols = st.columns([3, 1])
        kid = cols[0].selectbox(
            "Key to release",
            list(quarantined["id"]),
            key="sec_release_id",
            disabled=not is_admin,
            help=None if is_admin else ADMIN_ONLY,
        )
        if cols[1].button("Release", key="sec_release", disabled=not is_admin):
            try:
                changed = actions.release_key(who, kid)
                _done(f"Key {kid} released." if changed else f"Key {kid} was not quarantined.")
            except Exception as exc:  # noqa: BLE001
                _fail(exc)

    st.subheader("All gateway keys")
    tables.show(keys, hide_index=True, width="stretch", key="sec_keys")
    created = st.session_state.pop("security_created_key", None)
    if created:
        st.warning(f"Key {fmt.md(created['id'])} ({fmt.md(created['name'])}) created. Copy it now: it is shown only this once.")
        st.code(created["key"], language=None)
    if is_admin:
        with st.expander("Create a key"):
            with st.form("sec_create_key", clear_on_submit=True):
                name = st.text_input("Name", key="sec_new_name")
                models = st.text_input("Models (globs, comma-separated; empty = any)", key="sec_new_models")
                providers = st.text_input("Providers (comma-separated; empty = any)", key="sec_new_providers")
                expires = st.text_input("Expires (30d, 12h or an ISO time; empty = never)", key="sec_new_expires")
                limits = st.columns(2)
                rpm = limits[0].number_input("Requests / minute (0 = unlimited)", min_value=0, step=1, key="sec_new_rpm")
                tpd = limits[1].number_input("Tokens / day (0 = unlimited)", min_value=0, step=1000, key="sec_new_tpd")
                if st.form_submit_button("Create key"):
                    try:
                        made = actions.create_key(
                            who,
                            name,
                            models=models,
                            providers=providers,
                            expires=expires,
                            rpm=int(rpm) or None,
                            tpd=int(tpd) or None,
                        )
                        st.session_state["security_created_key"] = {"id": made.id, "name": made.name, "key": made.key}
                        st.rerun()
                    except Exception as exc:  # noqa: BLE001
                        _fail(exc)
        live = keys[keys["status"].isin(["active", "quarantined"])]
        if not live.empty:
            with st.expander("Revoke a key"):
                cols = st.columns([2, 2, 1])
                rid = cols[0].selectbox(
                    "Key",
                    list(live["id"]),
                    key="sec_revoke_id",
                    format_func=lambda i: f"{i} ({dict(zip(live['id'], live['name'])).get(i, '')})",
                )
                reason = cols[1].text_input("Reason", key="sec_revoke_reason")
                sure = st.checkbox("Revoking is permanent: requests with this key are refused from now on", key="sec_revoke_sure")
                if cols[2].button("Revoke", key="sec_revoke", disabled=not sure):
                    try:
                        actions.revoke_key(who, rid, reason)
                        _done(f"Key {rid} revoked.")
                    except Exception as exc:  # noqa: BLE001
                        _fail(exc)
    else:
        st.caption(f"Creating and revoking keys: {ADMIN_ONLY}.")

# -------------------------------------------------------------------------------------- policies
if view == "Policies":
    stored = data.policies()
    if stored:
        tables.show(
            pd.DataFrame([{k: v for k, v in p.items() if k != "source"} for p in stored]),
            hide_index=True,
            width="stretch",
            key="sec_policies",
        )
    else:
        st.caption("No database policies: the gateway runs the policy file only.")
    if not is_admin:
        st.caption(f"Editing policies: {ADMIN_ONLY}.")
    else:
        names = [p["name"] for p in stored]
        pick = st.selectbox("Edit", ["(new policy)", *names], key="sec_pol_pick")
        if st.session_state.get("sec_pol_loaded") != pick:  # load the picked policy into the editor once
            st.session_state["sec_pol_loaded"] = pick
            st.session_state["sec_pol_name"] = "" if pick == "(new policy)" else pick
            st.session_state["sec_pol_text"] = next((p["source"] for p in stored if p["name"] == pick), "")
        with st.expander("Add a simple rule"):
            r = st.columns(3)
            rule_id = r[0].text_input("Rule id", key="sec_rule_id")
            action = r[1].selectbox("Action", ["block", "redact", "alert"], key="sec_rule_action")
            mode = r[2].selectbox("Mode", ["enforce", "monitor"], key="sec_rule_mode")
            m = st.columns(4)
            r_models = m[0].text_input("Models", key="sec_rule_models", help="globs, comma-separated")
            r_keys = m[1].text_input("Keys", key="sec_rule_keys", help="gateway key names/ids, comma-separated")
            r_pii = m[2].text_input("PII kinds", key="sec_rule_pii", help="e.g. EMAIL_ADDRESS, CREDIT_CARD")
            r_secrets = m[3].text_input("Secret kinds", key="sec_rule_secrets", help="e.g. AWS_ACCESS_KEY")
            inj = st.number_input("Injection score at least (0 = not a condition)", 0.0, 1.0, 0.0, 0.05, key="sec_rule_inj")
            message = st.text_input("Message (block/alert)", key="sec_rule_message")
            if st.button("Append rule to the editor", key="sec_rule_add"):
                try:
                    snippet = actions.simple_rule_yaml(
                        rule_id.strip(),
                        action=action,
                        models=r_models,
                        keys=r_keys,
                        pii=r_pii,
                        secrets=r_secrets,
                        injection_score=inj or None,
                        message=message,
                        mode=mode,
                    )
                    st.session_state["sec_pol_text"] = actions.append_rule(st.session_state.get("sec_pol_text", ""), snippet)
                    st.rerun()
                except Exception as exc:  # noqa: BLE001
                    _fail(exc)
        name = st.text_input("Policy name", key="sec_pol_name")
        source = st.text_area("Policy (YAML)", height=320, key="sec_pol_text")
        if st.button("Validate and preview diff", key="sec_pol_check"):
            st.session_state["sec_pol_checked"] = (name, source)
        checked = st.session_state.get("sec_pol_checked")
        if checked and checked == (name, source):
            result = actions.check_policy(name, source)
            if not result.ok:
                st.error("Not valid:\n\n" + "\n".join(f"- {fmt.md(i)}" for i in result.issues))
            elif not result.diff:
                st.info("Valid, and identical to the stored version.")
            else:
                st.code(result.diff, language="diff")
                if st.button("Save policy", type="primary", key="sec_pol_save"):
                    try:
                        actions.save_policy(who, name, source)
                        st.session_state.pop("sec_pol_checked", None)
                        st.session_state.pop("sec_pol_loaded", None)
                        _done(f"Policy {fmt.md(name)} saved; the gateway reloads it within seconds.")
                    except Exception as exc:  # noqa: BLE001
                        _fail(exc)
        elif checked:
            st.caption("Edited since the last check: validate again to see the diff and save.")

# ----------------------------------------------------------------------------------------- audit
if view == "Audit":
    audit = data.audit_status()
    if audit.ok:
        st.success(
            f"Audit chain intact: {fmt.count(audit.checked)} entries verified from genesis to the head (#{audit.head_id}).",
            icon=":material/verified:",
        )
    else:
        st.error(
            f"Audit chain BROKEN at entry #{audit.first_broken_id}: {audit.reason}"
            + (f" ({audit.detail})" if audit.detail else ""),
            icon=":material/gpp_bad:",
        )
    st.caption("Re-verified at most once a minute. `llmproxy audit verify` checks the same chain from the command line.")
    tables.show(
        audit.recent,
        hide_index=True,
        width="stretch",
        key="sec_audit_recent",
        column_config={"ts": st.column_config.DatetimeColumn("time", format="YYYY-MM-DD HH:mm:ss")},
    )
