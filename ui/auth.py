"""Who is looking at the dashboard: signed access tokens (issue 5) kept in the browser session.

With SECRET_KEY set every session must present a token made by ``llmproxy token create`` (pasted into
the sign-in form, or passed once as ``?token=`` and then removed from the address bar). The token is
re-verified on every script run, so an expired token signs the session out at its next interaction,
and every admin action re-checks the role right before it writes (:func:`require_admin`), whatever
the page showed. Without SECRET_KEY the dashboard serves the local operator (an admin), which is only
allowed on loopback: :func:`bind_problem` says why a non-loopback server must refuse.
"""

from __future__ import annotations

import streamlit as st

from intelligence.access import (
    LOCAL_OPERATOR,
    AccessSettings,
    InvalidToken,
    Principal,
    UnsafeBind,
    require_safe_bind,
    verify_token,
)
from ui import fmt, hosts

TOKEN_KEY = "llmproxy_access_token"
ERROR_KEY = "llmproxy_access_error"
# What Streamlit listens on when server.address is unset: every interface.
STREAMLIT_DEFAULT_BIND = "0.0.0.0"


class NotAllowed(PermissionError):
    """The session's principal may not do this (a viewer asking for an admin action, or no principal)."""


def settings() -> AccessSettings:
    return AccessSettings.from_env()


def bind_address() -> str:
    return st.get_option("server.address") or STREAMLIT_DEFAULT_BIND


def bind_problem(access: AccessSettings | None = None) -> str | None:
    """Why this server may not serve at all (non-loopback without SECRET_KEY), or None."""
    try:
        require_safe_bind(bind_address(), access or settings(), what="dashboard")
    except UnsafeBind as exc:
        return str(exc.code)
    return None


def principal(access: AccessSettings | None = None) -> Principal | None:
    """The verified principal of this session, or None when it has no valid token."""
    access = access or settings()
    if not access.enabled:
        return LOCAL_OPERATOR
    token = st.session_state.get(TOKEN_KEY)
    if not token:
        return None
    try:
        return verify_token(access, token)
    except InvalidToken as exc:
        st.session_state.pop(TOKEN_KEY, None)
        st.session_state[ERROR_KEY] = str(exc)
        return None


def require_admin(who: Principal | None = None) -> Principal:
    """Re-verify the session right before an admin action; raises :class:`NotAllowed` otherwise."""
    who = who if who is not None else principal()
    if who is None:
        raise NotAllowed("sign in first")
    if not who.is_admin:
        raise NotAllowed(f"{who.subject} is a viewer: this needs an admin token")
    # a principal handed in by a page is re-derived from the session, so a stale role cannot act
    current = principal()
    if current is None or not current.is_admin or current.subject != who.subject:
        raise NotAllowed("the session's token no longer grants admin")
    return current


def actor(who: Principal) -> str:
    """How the audit log and experiment history name a dashboard user."""
    return f"dashboard:{who.subject}"


def _take_query_token() -> None:
    """Move ``?token=`` into the session and out of the address bar (and browser history)."""
    token = st.query_params.get("token")
    if token:
        st.session_state[TOKEN_KEY] = token.strip()
        st.session_state.pop(ERROR_KEY, None)
        del st.query_params["token"]


def _sign_in_form() -> None:
    st.title("Sign in")
    st.write(
        "This dashboard requires an access token. Create one with "
        "`llmproxy token create --subject NAME --role viewer|admin` and paste it here."
    )
    error = st.session_state.pop(ERROR_KEY, None)
    if error:
        st.error(error)
    token = st.text_input("Access token", type="password", key="llmproxy_token_input")
    if st.button("Sign in", type="primary") and token.strip():
        try:
            verify_token(settings(), token.strip())
        except InvalidToken as exc:
            st.error(str(exc))
            return
        st.session_state[TOKEN_KEY] = token.strip()
        st.rerun()


def request_host() -> str | None:
    """The ``Host`` header of this browser session's connection (None outside a server, e.g. in AppTest)."""
    try:
        return st.context.headers.get("host")
    except Exception:  # noqa: BLE001 - no request context
        return None


def host_problem(access: AccessSettings | None = None) -> str | None:
    """Why this session must not be served: its Host is not an allowed name (DNS rebinding; ui.hosts)."""
    host = request_host()
    if hosts.host_allowed(host, hosts.allowed_hosts(access or settings())):
        return None
    return (
        f"This dashboard does not answer to the host name {host!r}. Open it as http://127.0.0.1 or "
        f"http://localhost, or list the name in {hosts.HOSTS_ENV}."
    )


def stream_token() -> str:
    """What the live view presents to the live feed: the session's signed token, or (no SECRET_KEY) the
    dashboard process's local key."""
    if settings().enabled:
        return str(st.session_state.get(TOKEN_KEY) or "")
    from ui.live.server import local_key

    return local_key()


def gate() -> Principal:
    """The session's principal; without one, the sign-in form is shown and the script stops here."""
    access = settings()
    problem = bind_problem(access) or host_problem(access)
    if problem:
        st.error(problem)
        st.stop()
    if access.enabled:
        _take_query_token()
    who = principal(access)
    if who is None:
        _sign_in_form()
        st.stop()
    return who


def sidebar(who: Principal) -> None:
    with st.sidebar:
        if who.expires_at is None:
            st.caption("Local operator (admin) · no authentication (loopback only)")
            return
        st.caption(
            f"Signed in as **{fmt.md(who.subject)}** ({who.role}) · token expires {who.expires_at.strftime('%Y-%m-%d %H:%M UTC')}"
        )
        if st.button("Sign out", key="llmproxy_sign_out"):
            st.session_state.pop(TOKEN_KEY, None)
            st.rerun()
