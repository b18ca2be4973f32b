"""Real-browser check: headless Chromium (Debian's package) loads every page of a running dashboard,
saves screenshots to docs/screenshots/, finds no error element, and sees a request sent through the
gateway appear on the live page within a second."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from tests.browser.conftest import Dashboard

# Screenshots go to a temporary folder; LLMPROXY_SAVE_SCREENSHOTS=1 writes docs/screenshots/ instead
# (how the committed ones were made), so a test run never dirties the work tree.
SHOTS = (
    Path(__file__).resolve().parents[2] / "docs" / "screenshots"
    if os.environ.get("LLMPROXY_SAVE_SCREENSHOTS") == "1"
    else Path(tempfile.mkdtemp(prefix="llmproxy-shots-"))
)
PAGES = [
    ("live", "", "Live traffic"),
    ("explorer", "explorer", "Explorer"),
    ("analytics", "analytics", "Analytics"),
    ("patterns", "patterns", "Patterns"),
    ("security", "security", "Security"),
    ("experiments", "experiments", "Experiments"),
    ("system", "system", "System"),
]
LIVE_BUDGET_S = 1.0
# text that only appears once a page has rendered its last section (fragments render after the title)
READY = {"security": "Unacknowledged only", "experiments": "History", "system": "Claude spend today"}


def settle(page, title: str, timeout: float = 30.0, quiet: float = 0.8) -> float:
    """Wait until the page shows its title and nothing is still loading (then ``quiet`` s more to be sure).

    Returns the monotonic time the page first looked complete.
    """
    page.get_by_role("heading", name=title).first.wait_for(timeout=timeout * 1000)
    deadline = time.monotonic() + timeout
    quiet_since = None
    while time.monotonic() < deadline:
        busy = page.locator('[data-testid="stSkeleton"], [data-testid="stSpinner"]').count()
        if busy == 0:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since > quiet:
                return quiet_since
        else:
            quiet_since = None
        time.sleep(0.05)
    raise AssertionError(f"page {title!r} did not settle in {timeout}s")


def _no_error(page, name: str) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0, f"{name}: {page.inner_text('body')[:2000]}"


# The live-latency check runs first, on a dashboard with only its own browser session: the page tour below
# leaves the server busy for a while (measured: medians above 1 s right after it).
def _wait_for_text(page, text: str, timeout: float = 10.0) -> None:
    """Poll the DOM every 10 ms (Playwright's own waits back off to 1 s between checks)."""
    # the grid draws on a canvas; its accessible table carries the same cells
    locator = page.get_by_text(text, exact=True)
    deadline = time.monotonic() + timeout
    while locator.count() == 0:
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not on the live page after {timeout}s")
        time.sleep(0.01)


def test_a_request_through_the_gateway_appears_on_the_live_page_within_a_second(dashboard: Dashboard, browser) -> None:
    from ui.runner import DbRunner

    runner = DbRunner(dashboard.db_url)  # hears the same NOTIFY the dashboard does
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    page.goto(dashboard.url)
    settle(page, "Live traffic")
    on_page, notified = [], []
    try:
        with httpx.Client(base_url=dashboard.gateway, timeout=30) as client:
            # steady state: the first rows and refreshes warm the query caches, imports and the KPI fragment
            # (every 5 s); measure the feed, not start-up
            for _ in range(3):
                model = f"gpt-4o-mini-warm{uuid.uuid4().hex[:8]}"
                assert (
                    client.post(
                        "/openai/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": "warm-up"}]}
                    ).status_code
                    == 200
                )
                _wait_for_text(page, model, timeout=30.0)
            time.sleep(6)
            for _ in range(12):
                model = f"gpt-4o-mini-e2e{uuid.uuid4().hex[:8]}"
                response = client.post(
                    "/openai/v1/chat/completions",
                    json={"model": model, "messages": [{"role": "user", "content": "browser check"}]},
                )
                done_wall, done = time.time(), time.monotonic()  # the response has ended: the client has every byte
                assert response.status_code == 200
                _wait_for_text(page, model)
                on_page.append(time.monotonic() - done)
                arrived = runner.feed.arrivals.get(response.headers["x-llmproxy-request-id"])
                if arrived is not None:
                    notified.append(arrived - done_wall)
                assert page.locator('[data-testid="stException"]').count() == 0
                time.sleep(0.2)  # requests a moment apart, as traffic is, not in lock-step with the refresh
    finally:
        context.close()
        runner.close()
    print(f"response end -> NOTIFY (s): {[round(d, 3) for d in notified]}")
    print(f"response end -> row on the live page (s): {[round(d, 3) for d in on_page]}")
    assert len(notified) == len(on_page)
    assert statistics.median(on_page) < LIVE_BUDGET_S, on_page
    # all but the slowest: on two shared cores one of the twelve can coincide with the KPI fragment's 5-second
    # refresh and Chromium's own work and stall for 2-3 s (seen in 1 of 5 runs; docs/dashboard.md)
    assert sorted(on_page)[-2] < 2 * LIVE_BUDGET_S, on_page


def test_every_page_renders_without_errors_in_light_dark_and_narrow(dashboard: Dashboard, browser) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    # Streamlit scrolls inside its own container, so a screenshot shows one viewport: make it tall.
    context = browser.new_context(viewport={"width": 1440, "height": 1600}, color_scheme="light")
    page = context.new_page()
    try:
        for name, path, title in PAGES:
            started = time.monotonic()
            page.goto(f"{dashboard.url}/{path}")
            if name in READY:
                page.get_by_text(READY[name]).first.wait_for(timeout=30_000)
            complete = settle(page, title)
            print(f"{name}: complete {complete - started:.2f}s after navigation (full page load)")
            _no_error(page, name)
            page.screenshot(path=str(SHOTS / f"{name}-light.png"), full_page=True)
            page.emulate_media(color_scheme="dark")  # Streamlit follows the system theme by default
            settle(page, title, quiet=0.5)
            _no_error(page, name)
            page.screenshot(path=str(SHOTS / f"{name}-dark.png"), full_page=True)
            page.emulate_media(color_scheme="light")
        detail_pages = [
            ("exchange", f"explorer?request_id={dashboard.sample_request}", "Explorer"),
            ("session", f"explorer?session={dashboard.sample_session}", "Explorer"),
        ]
        page.set_viewport_size({"width": 1440, "height": 2400})
        for name, path, title in detail_pages:
            page.goto(f"{dashboard.url}/{path}")
            settle(page, title)
            if name == "exchange":
                page.get_by_role("tab", name="Request diff").first.wait_for(state="attached", timeout=15_000)
            settle(page, title, quiet=0.5)
            _no_error(page, name)
            page.screenshot(path=str(SHOTS / f"{name}-light.png"), full_page=True)
        page.set_viewport_size({"width": 420, "height": 900})
        for name, path, title in PAGES[:3]:
            page.goto(f"{dashboard.url}/{path}")
            settle(page, title)
            _no_error(page, name)
            # nothing wider than the window: no horizontal scrolling of the page itself
            assert page.evaluate("document.documentElement.scrollWidth") <= 440, name
            page.screenshot(path=str(SHOTS / f"{name}-narrow.png"))
    finally:
        context.close()
