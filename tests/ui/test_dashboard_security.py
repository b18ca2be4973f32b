"""Dashboard security: DNS rebinding (the Host allowlist, in the app and in the server in front of it) and
client-controlled or Claude-written strings rendered as text, not Markdown or HTML, on every page."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from urllib.parse import quote

import asyncpg
import pytest
from markdown_it import MarkdownIt
from streamlit.testing.v1 import AppTest

from intelligence.access import AccessSettings
from intelligence.store.engine import asyncpg_dsn
from intelligence.store.migrate import upgrade_async
from tests.conftest import database_url
from tests.ui.conftest import APP, plain, table_frames
from tests.ui.evil_seed import EVIL, EVIL_HOST, EvilRows, seed_evil_rows
from ui import auth, hosts

SECRET_KEY = "u_EPOUJL988uYeBf5-sXOAnsz-WuKqR0_lSmOfCKwEIfK863YyjkiVW2ZvoxinB1"

# ------------------------------------------------------------------------------------------ Host allowlist


def test_host_allowlist_without_secret_key_is_loopback_plus_configured_names() -> None:
    open_ = AccessSettings(secret_key=None)
    allowed = hosts.allowed_hosts(open_, env={})
    for host in ("127.0.0.1:8501", "localhost:8501", "LOCALHOST", "[::1]:8501", "127.0.0.2:80", "localhost.", None):
        assert hosts.host_allowed(host, allowed), host
    for host in (f"{EVIL_HOST}:8501", "127.0.0.1.nip.io:8501", "localhost.evil.example", "0.0.0.0:8501", "[::]:8501", "", "a b"):
        assert not hosts.host_allowed(host, allowed), host
    named = hosts.allowed_hosts(open_, env={hosts.HOSTS_ENV: "dash.corp.example, *.lab.example"})
    assert hosts.host_allowed("dash.corp.example:443", named) and hosts.host_allowed("a.lab.example", named)
    assert not hosts.host_allowed("lab.example.evil.example", named) and hosts.host_allowed("127.0.0.1", named)
    # with SECRET_KEY every session needs a token: any name, unless names are configured
    signed = AccessSettings(secret_key=SECRET_KEY)
    assert hosts.allowed_hosts(signed, env={}) is None and hosts.host_allowed(f"{EVIL_HOST}:1", None)
    assert not hosts.host_allowed(f"{EVIL_HOST}:1", hosts.allowed_hosts(signed, env={hosts.HOSTS_ENV: "dash.corp.example"}))


def test_websocket_origin_must_be_the_page_itself() -> None:
    allowed = hosts.LOOPBACK_NAMES
    assert hosts.origin_allowed(None, "127.0.0.1:8501", allowed)  # not a browser
    assert hosts.origin_allowed("http://127.0.0.1:8501", "127.0.0.1:8501", allowed)
    assert not hosts.origin_allowed("http://evil.example", "127.0.0.1:8501", allowed)  # cross-site page
    assert not hosts.origin_allowed("http://127.0.0.1:9999", "127.0.0.1:8501", allowed)
    assert not hosts.origin_allowed(f"http://{EVIL_HOST}:8501", f"{EVIL_HOST}:8501", allowed)  # rebinding
    assert not hosts.origin_allowed("null", "127.0.0.1:8501", allowed)


def test_the_app_renders_nothing_for_a_forged_host(monkeypatch: pytest.MonkeyPatch, pg_url: str) -> None:
    monkeypatch.setenv("DATABASE_URL", pg_url)
    monkeypatch.delenv(hosts.HOSTS_ENV, raising=False)
    monkeypatch.setattr(auth, "request_host", lambda: f"{EVIL_HOST}:8501")
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert not at.exception
    assert any("does not answer to the host name" in plain(e.value) for e in at.error)
    assert not at.title and not at.get("bidi_component") and not at.dataframe and not at.table  # no page, no data
    monkeypatch.setenv(hosts.HOSTS_ENV, EVIL_HOST)  # an operator who serves the dashboard under that name
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert [t.value for t in at.title] == ["Live traffic"]


# ------------------------------------------------------------------------------------------ text, not Markdown


@pytest.fixture(scope="module")
async def evil(pg_server_url: str) -> AsyncIterator[tuple[str, EvilRows]]:
    name = f"uievil_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(asyncpg_dsn(pg_server_url))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = database_url(pg_server_url, name)
    await upgrade_async(url)
    rows = await seed_evil_rows(url)
    yield url, rows
    admin = await asyncpg.connect(asyncpg_dsn(pg_server_url))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


MARKDOWN = MarkdownIt("commonmark").enable("table").enable("strikethrough")
# what GFM's autolink-literal extension links in text (mdast-util-gfm-autolink-literal): http(s)://..., www. and e-mail
GFM_AUTOLINK = re.compile(r"(?i)(?:https?://|www(?=\.))[-.\w]+|[-.\w+]+@[-\w]+(?:\.[-\w]+)+")


def markdown_bodies(at: AppTest) -> list[str]:
    """Every string the page hands to Streamlit's Markdown renderer."""
    out: list[str] = []
    for kind in ("markdown", "caption", "title", "header", "subheader", "error", "warning", "info", "success", "toast"):
        out += [e.value for e in getattr(at, kind)]
    out += [e.proto.body for e in at.get("alert")]
    for m in at.metric:
        out += [m.label, m.proto.help or ""]
    for t in at.table:  # st.table renders Markdown in every cell
        out += [str(v) for v in t.value.to_numpy().ravel()] + [str(i) for i in t.value.index]
    return [s for s in out if s]


def assert_text_only(at: AppTest, expect_visible: list[str]) -> None:
    bodies = markdown_bodies(at)
    for body in bodies:
        # GitHub-flavoured Markdown (Streamlit's) links bare URLs and e-mail addresses in the parsed text
        assert not GFM_AUTOLINK.findall(_outside_code(body)), body
        rendered = MARKDOWN.render(body)
        assert not any(_points_at_evil(u) for u in _attrs(rendered)), (body, rendered)
        assert "<img" not in rendered and "<script" not in rendered, (body, rendered)
        if "loud" in body:
            assert "<strong>loud</strong>" not in rendered, (body, rendered)
    shown = "\n".join(plain(b) for b in bodies)
    for text in expect_visible:
        assert text in shown, (text, shown[:3000])


def _outside_code(body: str) -> str:
    """The text GFM would scan for bare links: parsed text outside code spans (code is never linked)."""
    import html

    rendered = re.sub(r"<code>.*?</code>", " ", MARKDOWN.render(body), flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", "", rendered))


def _points_at_evil(url: str) -> bool:
    """A link or image source that leads to the attacker's host (not our own link carrying it, quoted, as a parameter)."""
    from urllib.parse import urlsplit

    return EVIL_HOST in urlsplit(url).netloc or url.lower().startswith(("javascript:", "data:"))


def _attrs(rendered: str) -> list[str]:
    import re

    return re.findall(r'(?:href|src)="([^"]*)"', rendered)


def open_page(monkeypatch: pytest.MonkeyPatch, url: str, page: str | None, **params: str) -> AppTest:
    monkeypatch.setenv("DATABASE_URL", url)
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    if page:
        at.switch_page(f"app_pages/{page}.py")
    for k, v in params.items():
        at.query_params[k] = v
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def test_client_strings_render_as_text_on_the_exchange_page(evil: tuple[str, EvilRows], monkeypatch) -> None:
    url, rows = evil
    at = open_page(monkeypatch, url, "explorer", request_id=rows.request_id)
    assert_text_only(at, [rows.model, f"upstream said {EVIL}", f"/openai/v1/chat/completions?x={EVIL}", rows.tool, f"odd {EVIL}"])
    # the links the page builds itself still work, with the session id quoted into the URL
    links = [m.value for m in at.markdown if "session timeline" in m.value]
    assert links and f"explorer?session={quote(rows.session_id, safe='')}" in links[0]
    assert not any(_points_at_evil(u) for u in _attrs(MARKDOWN.render(links[0])))
    tool_calls = next(f for f in table_frames(at) if "name (client)" in f.columns)
    assert tool_calls.iloc[0]["name (client)"] == rows.tool  # a table cell: shown as it is


def test_client_strings_render_as_text_in_the_session_view(evil: tuple[str, EvilRows], monkeypatch) -> None:
    url, rows = evil
    at = open_page(monkeypatch, url, "explorer", session=rows.session_id)
    assert_text_only(at, [rows.session_id, rows.model, f"upstream said {EVIL}"])
    assert f"reply {EVIL}\n→ calls {rows.tool}" in [t.value for t in at.text]  # st.text: never Markdown


def test_claude_labels_and_alert_titles_render_as_text(evil: tuple[str, EvilRows], monkeypatch) -> None:
    url, rows = evil
    at = open_page(monkeypatch, url, "patterns", pattern=str(rows.pattern_id))
    assert_text_only(at, [f"{rows.marker} {EVIL}"])  # the pattern label Claude wrote
    at = open_page(monkeypatch, url, "security")
    assert_text_only(at, [f"{rows.marker} {EVIL}"])  # the alert banner's newest title
    for name in ("Blocked & redacted", "Detectors", "Keys", "Policies", "Audit", "Verdicts"):  # lazy tabs: one at a time
        at.session_state["tab"] = name
        at.run()
        assert not at.exception, [e.message for e in at.exception]
        assert_text_only(at, [])
    verdicts = next(f for f in table_frames(at) if "reasoning" in f.columns)
    assert f"{rows.marker} Claude says {EVIL}" in set(verdicts["reasoning"])
    live = open_page(monkeypatch, url, None)
    view = json.loads(next(e for e in live.get("bidi_component") if e.proto.component_name == "llmproxy_live").proto.json)
    assert view["banner"]["newest"] == f"{rows.marker} {EVIL}"  # the browser inserts it as text (textContent)
    assert rows.model in {r["model"] for r in view["rows"]}
