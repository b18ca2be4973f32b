"""Which ``Host`` (and ``Origin``) the dashboard answers to: protection against DNS rebinding.

Without SECRET_KEY the dashboard serves the local operator (an admin) with no token, on loopback only. A
web page elsewhere can still reach it through DNS rebinding: ``evil.example`` resolves to 127.0.0.1 after
the page loaded, and the browser treats the dashboard as the page's own origin. What gives it away is
the ``Host`` header: the browser sends the name it resolved (``evil.example:8501``). So, without
SECRET_KEY, only loopback names are answered: ``127.0.0.1`` (any 127/8 address), ``localhost``, ``::1``,
plus the names listed in ``LLMPROXY_DASHBOARD_HOSTS`` (comma-separated; a leading ``*.`` matches
subdomains). With SECRET_KEY every session needs a signed token, and the check applies only when
``LLMPROXY_DASHBOARD_HOSTS`` is set (then: loopback plus those names).

Enforced three times: by the ASGI middleware in front of every route of the dashboard server (pages,
Streamlit's websocket, the live feed; :mod:`ui.live.server`), by the app itself before it renders
(:func:`ui.auth.gate`), and by the live feed on its websocket (Host and Origin).
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from intelligence.access import AccessSettings, is_loopback

HOSTS_ENV = "LLMPROXY_DASHBOARD_HOSTS"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def configured_hosts(env: dict[str, str] | None = None) -> tuple[str, ...]:
    raw = (os.environ if env is None else env).get(HOSTS_ENV, "")
    return tuple(h.strip().lower().rstrip(".") for h in raw.split(",") if h.strip())


def allowed_hosts(access: AccessSettings | None = None, env: dict[str, str] | None = None) -> tuple[str, ...] | None:
    """The host names answered to, or None when any is (SECRET_KEY set and no names configured)."""
    access = access or AccessSettings.from_env(env)
    names = configured_hosts(env)
    if access.enabled and not names:
        return None
    return LOOPBACK_NAMES + names


def hostname(host_header: str | None) -> str | None:
    """The name part of a ``Host`` header (``[::1]:8501`` -> ``::1``); None when it is malformed."""
    if not host_header:
        return None
    try:
        parts = urlsplit("//" + host_header.strip())
        _ = parts.port  # validates the port
    except ValueError:
        return None
    if parts.hostname is None or parts.username is not None or parts.password is not None or parts.path:
        return None
    return parts.hostname.lower().rstrip(".")


def _matches(name: str, allowed: tuple[str, ...]) -> bool:
    for pattern in allowed:
        if pattern.startswith("*."):
            if name.endswith(pattern[1:]):
                return True
        elif name == pattern:
            return True
    return is_loopback(name)  # localhost and every loopback address (127.0.0.0/8, ::1): always in the list


def host_allowed(host_header: str | None, allowed: tuple[str, ...] | None) -> bool:
    """Whether a request with this ``Host`` header may be answered. A request without one (not a browser:
    every browser sends it) is answered; it cannot come from a rebinding page."""
    if allowed is None or host_header is None:
        return True
    name = hostname(host_header)
    return name is not None and _matches(name, allowed)


def origin_allowed(origin: str | None, host_header: str | None, allowed: tuple[str, ...] | None) -> bool:
    """Whether a websocket's ``Origin`` may connect: absent (not a browser), or the same host as the request
    (the dashboard's own page) with that host allowed."""
    if origin is None:
        return True
    try:
        parts = urlsplit(origin)
        origin_host = parts.netloc.lower()
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not origin_host:
        return False
    if host_header is None or origin_host != host_header.strip().lower():
        return False
    return host_allowed(origin_host, allowed)
