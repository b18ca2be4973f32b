"""The Experiments page (ui/app_pages/experiments.py) on the learning loop's data, through Streamlit's
AppTest against a real Postgres: approvals, "no data yet" instead of a p-value, and the lift report."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from intelligence.enhance import manage
from intelligence.enhance.evaluator import ExperimentEvaluator
from tests.ui.conftest import APP, numeric, table_frames

from .test_enhance_support import Ex, arm_rows, make_pattern, write


@pytest.fixture(autouse=True)
def loopback_dashboard(monkeypatch: pytest.MonkeyPatch):
    """As tests/ui/conftest.py does: AppTest leaves server.address unset (all interfaces), which the
    dashboard refuses without SECRET_KEY."""
    from streamlit import config

    before = config.get_option("server.address")
    config.set_option("server.address", "127.0.0.1")
    monkeypatch.delenv("SECRET_KEY", raising=False)
    yield
    config.set_option("server.address", before)


def _open(monkeypatch: pytest.MonkeyPatch, url: str) -> AppTest:
    monkeypatch.setenv("DATABASE_URL", url)
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.switch_page("app_pages/experiments.py")
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


async def _seed(engine) -> dict[str, int]:
    ids: dict[str, int] = {}
    async with engine.begin() as conn:
        p1, p2, p3 = await make_pattern(conn, "invoices"), await make_pattern(conn, "tickets"), await make_pattern(conn, "mail")
        win = await manage.create_enhancement(conn, p1, "system_prompt", {"text": "Keep it short."}, "", "claude")
        ids["promoted"] = await manage.start_experiment(conn, win, actor="test")
        await write(
            conn, arm_rows(p1, ids["promoted"], win, "control", 120, 36) + arm_rows(p1, ids["promoted"], win, "variant", 120, 84)
        )
        await write(conn, [Ex(p1) for _ in range(100)])
        empty = await manage.create_enhancement(conn, p2, "system_prompt", {"text": "Answer in English."}, "", "claude")
        ids["empty"] = await manage.start_experiment(conn, empty, actor="test")
        pending = await manage.create_enhancement(conn, p3, "system_prompt", {"text": "Sign with the team name."}, "", "claude")
        ids["pending"] = await manage.propose_experiment(conn, pending, actor="candidate-job", reason="fails often", auto=False)
    await ExperimentEvaluator(engine, min_samples=30, auto_approve=True).tick()
    return ids


async def test_page_shows_approvals_no_data_yet_and_the_lift(migrated_db, monkeypatch) -> None:
    ids = await _seed(migrated_db.engine)
    at = _open(monkeypatch, migrated_db.url)
    text = " ".join(m.value for m in at.markdown) + " ".join(c.value for c in at.caption)
    assert f"Experiment #{ids['pending']}" in text and "awaiting approval of its **start**" in text.replace("\\", "")
    # the running experiment without exposures: "no data yet", never a p-value
    values = {(m.label, m.value) for m in at.metric}
    assert ("p-value", "no data yet") in values and ("Effect (variant − control)", "no data yet") in values
    # the promoted one: +133% relative lift (0.30 -> 0.70), per pattern and overall
    lift = next(f for f in map(numeric, table_frames(at)) if {"relative lift", "CI", "requests"} <= set(f.columns))
    assert list(lift["experiment"]) == [ids["promoted"]] and lift.iloc[0]["relative lift"] == "+133%"
    assert ("Requests-weighted lift", "+133%") in values and ("Target +30%", "met") in values

    at.button(key=f"exp_approve_{ids['pending']}").click()
    at.run()
    async with migrated_db.engine.connect() as conn:
        assert (await manage.get_experiment(conn, ids["pending"]))["status"] == "pending"  # not before confirming
    at.text_input(key=f"exp_approve_reason_{ids['pending']}").set_value("read the change")
    at.button(key=f"exp_approve_confirm_{ids['pending']}").click()
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    async with migrated_db.engine.connect() as conn:
        row = await manage.get_experiment(conn, ids["pending"])
        history = await manage.experiment_history(conn, ids["pending"])
    assert row["status"] == "running"
    assert [(h["action"], h["actor"]) for h in history][-2:] == [("approved", "dashboard:local"), ("started", "dashboard:local")]
    assert history[-2]["detail"]["reason"] == "read the change"
