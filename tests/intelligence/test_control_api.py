"""The control API over real gRPC (127.0.0.1:0) and a real database: auth, roles, RPCs, CLI."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from sqlalchemy import select, text

from intelligence.access import AccessSettings, issue_token
from intelligence.control.gen import control_pb2 as pb
from intelligence.control.gen import control_pb2_grpc as pb_grpc
from intelligence.control.server import ControlServer
from intelligence.enhance import manage
from intelligence.enhance.models import Experiment, ExperimentEvent
from intelligence.events.models import Event

SECRET = "control-api-test-secret-0123456789abcdef"
ACCESS = AccessSettings(secret_key=SECRET)
SPEC = {"position": "prepend", "text": "Answer concisely."}


def bearer(role: str, subject: str = "alice", **kw: object) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {issue_token(ACCESS, subject, role, **kw)}"),)


@pytest.fixture
async def server(migrated_db) -> AsyncIterator[ControlServer]:
    srv = ControlServer(migrated_db.engine, ACCESS, "127.0.0.1", 0)
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture
async def stub(server: ControlServer) -> AsyncIterator[pb_grpc.ControlStub]:
    async with grpc.aio.insecure_channel(server.address) as channel:
        yield pb_grpc.ControlStub(channel)


async def code_of(call) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value.code()


async def new_candidate(engine, pattern_id: int | None = None) -> int:
    async with engine.begin() as conn:
        return await manage.create_enhancement(conn, pattern_id, "system_prompt", SPEC, "test", "operator", actor="test")


# ---------------------------------------------------------------------------------------- auth
async def test_calls_without_a_valid_token_are_unauthenticated(stub) -> None:
    assert await code_of(stub.WhoAmI(pb.WhoAmIRequest())) == grpc.StatusCode.UNAUTHENTICATED
    bad = (("authorization", "Bearer not-a-jwt"),)
    assert await code_of(stub.WhoAmI(pb.WhoAmIRequest(), metadata=bad)) == grpc.StatusCode.UNAUTHENTICATED
    forged = (
        (
            "authorization",
            "Bearer " + issue_token(AccessSettings(secret_key="another-secret-0123456789-abcdefgh"), "eve", "admin"),
        ),
    )
    assert await code_of(stub.ListExperiments(pb.ListExperimentsRequest(), metadata=forged)) == grpc.StatusCode.UNAUTHENTICATED
    expired = bearer("admin", now=datetime.now(UTC) - timedelta(hours=2), minutes=5)
    assert await code_of(stub.WhoAmI(pb.WhoAmIRequest(), metadata=expired)) == grpc.StatusCode.UNAUTHENTICATED
    # the stream is guarded too
    assert await code_of(_first(stub.WatchEvents(pb.WatchEventsRequest()))) == grpc.StatusCode.UNAUTHENTICATED


async def _first(call):
    async for item in call:
        return item


async def test_viewer_reads_but_may_not_change(stub, migrated_db) -> None:
    me = await stub.WhoAmI(pb.WhoAmIRequest(), metadata=bearer("viewer", "vera"))
    assert (me.subject, me.role, me.auth_enabled) == ("vera", "viewer", True)
    assert me.expires_at
    await stub.ListExperiments(pb.ListExperimentsRequest(), metadata=bearer("viewer"))
    enhancement_id = await new_candidate(migrated_db.engine)
    for call in (
        stub.StartExperiment(pb.StartExperimentRequest(enhancement_id=enhancement_id), metadata=bearer("viewer")),
        stub.PauseExperiment(pb.ExperimentActionRequest(experiment_id=1), metadata=bearer("viewer")),
        stub.ConfirmVerdict(pb.ConfirmVerdictRequest(verdict_id=1, label="attack"), metadata=bearer("viewer")),
    ):
        assert await code_of(call) == grpc.StatusCode.PERMISSION_DENIED
    async with migrated_db.engine.connect() as conn:
        assert (await conn.execute(select(Experiment.id))).first() is None  # nothing started


async def test_admin_errors_map_to_status_codes(stub, migrated_db) -> None:
    admin = bearer("admin")
    assert (
        await code_of(stub.PauseExperiment(pb.ExperimentActionRequest(experiment_id=999), metadata=admin))
        == grpc.StatusCode.NOT_FOUND
    )
    assert (
        await code_of(stub.ExperimentHistory(pb.ExperimentHistoryRequest(experiment_id=999), metadata=admin))
        == grpc.StatusCode.NOT_FOUND
    )
    assert (
        await code_of(stub.StartExperiment(pb.StartExperimentRequest(enhancement_id=1, control_weight=1.5), metadata=admin))
        == grpc.StatusCode.INVALID_ARGUMENT
    )
    enhancement_id = await new_candidate(migrated_db.engine)
    started = await stub.StartExperiment(pb.StartExperimentRequest(enhancement_id=enhancement_id), metadata=admin)
    # resuming a running experiment is an invalid state change
    assert (
        await code_of(stub.ResumeExperiment(pb.ExperimentActionRequest(experiment_id=started.experiment_id), metadata=admin))
        == grpc.StatusCode.FAILED_PRECONDITION
    )
    assert (
        await code_of(stub.SubmitFeedback(pb.SubmitFeedbackRequest(request_id="r1"), metadata=admin))
        == grpc.StatusCode.INVALID_ARGUMENT
    )


# ---------------------------------------------------------------------------------------- RPCs
async def test_experiment_lifecycle_mutates_the_database_with_the_token_subject_as_actor(stub, migrated_db) -> None:
    engine = migrated_db.engine
    admin = bearer("admin", "ops-anna")
    enhancement_id = await new_candidate(engine)
    listed = await stub.ListEnhancements(pb.ListEnhancementsRequest(status="candidate"), metadata=bearer("viewer"))
    assert [e.id for e in listed.enhancements] == [enhancement_id]
    assert json.loads(listed.enhancements[0].spec_json)["text"] == SPEC["text"]

    started = await stub.StartExperiment(
        pb.StartExperimentRequest(enhancement_id=enhancement_id, control_weight=0.3, assign_by="client"), metadata=admin
    )
    exp_id = started.experiment_id
    paused = await stub.PauseExperiment(pb.ExperimentActionRequest(experiment_id=exp_id, reason="look closer"), metadata=admin)
    assert paused.experiment.status == "paused"
    resumed = await stub.ResumeExperiment(pb.ExperimentActionRequest(experiment_id=exp_id), metadata=admin)
    assert resumed.experiment.status == "running"
    promoted = await stub.PromoteExperiment(
        pb.ExperimentActionRequest(experiment_id=exp_id, reason="clearly better"), metadata=admin
    )
    assert promoted.experiment.status == "promoted"

    async with engine.connect() as conn:
        row = (await conn.execute(select(Experiment.__table__).where(Experiment.id == exp_id))).one()
        assert (row.status, row.control_weight, row.assign_by, row.created_by) == ("promoted", 0.3, "client", "ops-anna")
        actors = (
            await conn.execute(
                select(ExperimentEvent.action, ExperimentEvent.actor)
                .where(ExperimentEvent.experiment_id == exp_id)
                .order_by(ExperimentEvent.id)
            )
        ).all()
        assert {a for _, a in actors} == {"ops-anna"}
        assert len(actors) == 4

    listed_exp = await stub.ListExperiments(pb.ListExperimentsRequest(status="promoted"), metadata=bearer("viewer"))
    assert [e.id for e in listed_exp.experiments] == [exp_id]
    assert json.loads(listed_exp.experiments[0].json)["enhancement"]["kind"] == "system_prompt"
    history = await stub.ExperimentHistory(pb.ExperimentHistoryRequest(experiment_id=exp_id), metadata=bearer("viewer"))
    assert len(history.entries) == 4 and history.entries[-1].actor == "ops-anna"
    assert json.loads(history.entries[1].detail_json).get("reason") == "look closer"


async def test_rollback_over_rpc(stub, migrated_db) -> None:
    admin = bearer("admin", "bob")
    exp_id = (
        await stub.StartExperiment(
            pb.StartExperimentRequest(enhancement_id=await new_candidate(migrated_db.engine)), metadata=admin
        )
    ).experiment_id
    done = await stub.RollbackExperiment(pb.ExperimentActionRequest(experiment_id=exp_id, reason="worse"), metadata=admin)
    assert done.experiment.status == "rolled_back"
    assert done.experiment.decision_reason or json.loads(done.experiment.json)["status"] == "rolled_back"


async def test_submit_feedback_stores_a_row(stub, migrated_db) -> None:
    resp = await stub.SubmitFeedback(
        pb.SubmitFeedbackRequest(request_id="req-fb-1", thumbs="down", comment="wrong"), metadata=bearer("viewer")
    )
    async with migrated_db.engine.connect() as conn:
        row = (
            await conn.execute(text("SELECT request_id, thumbs, comment FROM feedback WHERE id = :id"), {"id": resp.feedback_id})
        ).one()
    assert tuple(row) == ("req-fb-1", "down", "wrong")


async def test_verdicts_list_and_confirm(stub, migrated_db) -> None:
    async with migrated_db.engine.begin() as conn:
        verdict_id = (
            await conn.execute(
                text(
                    "INSERT INTO anomaly_verdicts (client_key_fp, detectors, status, verdict, confidence, reasoning) "
                    "VALUES ('fp-x', ARRAY['volume'], 'judged', 'suspicious', 0.7, 'many calls') RETURNING id"
                )
            )
        ).scalar_one()
    listed = await stub.ListVerdicts(pb.ListVerdictsRequest(), metadata=bearer("viewer"))
    assert [(v.id, v.verdict, list(v.detectors)) for v in listed.verdicts] == [(verdict_id, "suspicious", ["volume"])]
    assert (
        await code_of(
            stub.ConfirmVerdict(pb.ConfirmVerdictRequest(verdict_id=verdict_id, label="maybe"), metadata=bearer("admin"))
        )
        == grpc.StatusCode.INVALID_ARGUMENT
    )
    await stub.ConfirmVerdict(
        pb.ConfirmVerdictRequest(verdict_id=verdict_id, label="false_positive"), metadata=bearer("admin", "carol")
    )
    async with migrated_db.engine.connect() as conn:
        row = (
            await conn.execute(text("SELECT confirmed, confirmed_by FROM anomaly_verdicts WHERE id = :id"), {"id": verdict_id})
        ).one()
    assert tuple(row) == ("false_positive", "carol")


# ---------------------------------------------------------------------------------------- CLI
async def test_experiments_cli_over_the_control_api(server, migrated_db, monkeypatch, capsys) -> None:
    from extproc.cli import main

    monkeypatch.setenv("LLMPROXY_TOKEN", issue_token(ACCESS, "cli-dan", "admin"))
    enhancement_id = await new_candidate(migrated_db.engine)

    async def cli(*argv: str) -> tuple[int, str, str]:
        try:
            await asyncio.to_thread(main, ["experiments", *argv, "--control", server.address])
        except SystemExit as exc:
            code = int(exc.code or 0)
        out = capsys.readouterr()
        return code, out.out, out.err

    code, out, _ = await cli("start", str(enhancement_id), "--json")
    assert code == 0
    exp_id = json.loads(out)["experiment_id"]
    code, out, _ = await cli("pause", str(exp_id), "--reason", "cli pause")
    assert code == 0 and "now paused" in out
    code, out, _ = await cli("list", "--json")
    assert [(r["id"], r["status"]) for r in json.loads(out)] == [(exp_id, "paused")]
    code, out, _ = await cli("history", str(exp_id))
    assert code == 0 and "cli-dan" in out
    code, _, err = await cli("promote", "424242")
    assert code == 1 and "NOT_FOUND" in err

    monkeypatch.setenv("LLMPROXY_TOKEN", issue_token(ACCESS, "vic", "viewer"))
    code, _, err = await cli("rollback", str(exp_id))
    assert code == 1 and "PERMISSION_DENIED" in err
    async with migrated_db.engine.connect() as conn:
        status = (await conn.execute(select(Experiment.status).where(Experiment.id == exp_id))).scalar_one()
        events = (await conn.execute(select(Event.kind).where(Event.kind == "experiment"))).all()
    assert status == "paused" and len(events) >= 2
