"""The control API server (grpc.aio): feedback, experiments, enhancements, verdicts and the live feed.

Embeddable: ``ControlServer(engine, access, host, port)`` with ``await start()`` / ``await stop()``
runs inside any event loop (the intelligence process hosts it; ``python -m intelligence.control``
runs it alone). It listens only on the address given, and refuses a non-loopback address when
SECRET_KEY is unset. With SECRET_KEY it keeps the revoked token ids in memory
(:class:`~intelligence.access.TokenRevocations`) and re-checks the token of an open stream every
``recheck_interval`` seconds. With ``tls`` (:class:`~intelligence.control.tls.ServerTLS`) it serves TLS, and
verifies client certificates when a client CA is given; a non-loopback listener without TLS is
allowed (a mesh or tunnel may encrypt it) but logged as a warning. Authentication and roles:
:mod:`intelligence.control.auth`.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from types import ModuleType
from typing import Any, TypeVar

import grpc
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from intelligence.access import LOCAL_OPERATOR, AccessSettings, Principal, TokenRevocations, is_loopback, require_safe_bind
from intelligence.enhance.models import Experiment
from intelligence.store.repositories import ExchangeRepository

from . import convert
from .auth import CURRENT_PRINCIPAL, RECHECK_INTERVAL, AuthInterceptor
from .gen import control_pb2 as pb
from .gen import control_pb2_grpc as pb_grpc
from .tls import ServerTLS
from .watch import EXCHANGE_KIND, EventHub, EventItem, ExchangeItem, events_after

log = logging.getLogger(__name__)

DEFAULT_PORT = 50052
MAX_LIMIT = 1000
ASSIGN_BY = ("session", "client")
VERDICT_LABELS = ("attack", "false_positive")
T = TypeVar("T")


def _limit(value: int, default: int) -> int:
    return default if value <= 0 else min(value, MAX_LIMIT)


def _actor() -> str:
    principal: Principal = CURRENT_PRINCIPAL.get() or LOCAL_OPERATOR
    return principal.subject


def _module(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name == name:
            return None
        raise


class ControlServicer(pb_grpc.ControlServicer):
    def __init__(self, engine: AsyncEngine, access: AccessSettings, hub: EventHub) -> None:
        self.engine = engine
        self.access = access
        self.hub = hub

    # ------------------------------------------------------------------------------ helpers
    async def _in_tx(
        self,
        context: grpc.aio.ServicerContext,
        fn: Callable[[AsyncConnection], Awaitable[T]],
        *,
        value_error: grpc.StatusCode = grpc.StatusCode.FAILED_PRECONDITION,
    ) -> T:
        """Run ``fn`` in one transaction; the owners' exceptions become gRPC status codes."""
        try:
            async with self.engine.begin() as conn:
                return await fn(conn)
        except LookupError as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc) or "not found")
        except ValueError as exc:
            await context.abort(value_error, str(exc))
        raise AssertionError("unreachable: abort raises")

    async def _need(self, context: grpc.aio.ServicerContext, name: str) -> Any:
        mod = _module(name)
        if mod is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{name} is not installed in this build")
        return mod

    async def _experiment_message(self, conn: AsyncConnection, experiment_id: int) -> pb.Experiment:
        row = (await conn.execute(select(Experiment.__table__).where(Experiment.id == experiment_id))).first()
        if row is None:
            raise LookupError(f"experiment {experiment_id} not found")
        return convert.experiment(dict(row._mapping))

    # ------------------------------------------------------------------------------ feedback
    async def SubmitFeedback(
        self, request: pb.SubmitFeedbackRequest, context: grpc.aio.ServicerContext
    ) -> pb.SubmitFeedbackResponse:
        from intelligence.memory.feedback import add_feedback

        try:
            feedback_id = await add_feedback(
                self.engine,
                request.request_id.strip(),
                score=request.score if request.HasField("score") else None,
                thumbs=request.thumbs or None,
                comment=request.comment or None,
            )
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return pb.SubmitFeedbackResponse(feedback_id=feedback_id)

    # ------------------------------------------------------------------------------ experiments
    async def ListExperiments(
        self, request: pb.ListExperimentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListExperimentsResponse:
        manage = await self._need(context, "intelligence.enhance.manage")
        rows = await self._in_tx(
            context,
            lambda c: manage.list_experiments(c, status=request.status or None, limit=_limit(request.limit, 200)),
            value_error=grpc.StatusCode.INVALID_ARGUMENT,
        )
        return pb.ListExperimentsResponse(experiments=[convert.experiment(r) for r in rows])

    async def StartExperiment(
        self, request: pb.StartExperimentRequest, context: grpc.aio.ServicerContext
    ) -> pb.StartExperimentResponse:
        manage = await self._need(context, "intelligence.enhance.manage")
        weight = request.control_weight if request.HasField("control_weight") else 0.5
        assign_by = request.assign_by or "session"
        if not 0.0 < weight < 1.0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "control_weight must be between 0 and 1 (exclusive)")
        if assign_by not in ASSIGN_BY:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"assign_by must be one of {ASSIGN_BY}")
        actor = _actor()
        experiment_id = await self._in_tx(
            context,
            lambda c: manage.start_experiment(c, request.enhancement_id, actor=actor, control_weight=weight, assign_by=assign_by),
        )
        return pb.StartExperimentResponse(experiment_id=int(experiment_id))

    async def _act(
        self, context: grpc.aio.ServicerContext, request: pb.ExperimentActionRequest, action: str
    ) -> pb.ExperimentActionResponse:
        manage = await self._need(context, "intelligence.enhance.manage")
        fn = getattr(manage, f"{action}_experiment")
        kwargs: dict[str, Any] = {"actor": _actor()}
        if action != "resume":
            kwargs["reason"] = request.reason

        async def run(conn: AsyncConnection) -> pb.Experiment:
            await fn(conn, request.experiment_id, **kwargs)
            get = getattr(manage, "get_experiment", None)  # richer (stats, enhancement) when B provides it
            if get is not None:
                return convert.experiment(await get(conn, request.experiment_id))
            return await self._experiment_message(conn, request.experiment_id)

        return pb.ExperimentActionResponse(experiment=await self._in_tx(context, run))

    async def PauseExperiment(
        self, request: pb.ExperimentActionRequest, context: grpc.aio.ServicerContext
    ) -> pb.ExperimentActionResponse:
        return await self._act(context, request, "pause")

    async def ResumeExperiment(
        self, request: pb.ExperimentActionRequest, context: grpc.aio.ServicerContext
    ) -> pb.ExperimentActionResponse:
        return await self._act(context, request, "resume")

    async def PromoteExperiment(
        self, request: pb.ExperimentActionRequest, context: grpc.aio.ServicerContext
    ) -> pb.ExperimentActionResponse:
        return await self._act(context, request, "promote")

    async def RollbackExperiment(
        self, request: pb.ExperimentActionRequest, context: grpc.aio.ServicerContext
    ) -> pb.ExperimentActionResponse:
        return await self._act(context, request, "rollback")

    async def ApproveExperiment(
        self, request: pb.ExperimentActionRequest, context: grpc.aio.ServicerContext
    ) -> pb.ExperimentActionResponse:
        """An admin approves the start or the requested promotion (intelligence/enhance/approval.py);
        role admin is enforced by the interceptor (not a viewer method)."""
        return await self._act(context, request, "approve")

    async def ExperimentHistory(
        self, request: pb.ExperimentHistoryRequest, context: grpc.aio.ServicerContext
    ) -> pb.ExperimentHistoryResponse:
        manage = await self._need(context, "intelligence.enhance.manage")

        async def run(conn: AsyncConnection) -> list[dict[str, Any]]:
            await self._experiment_message(conn, request.experiment_id)  # NOT_FOUND rather than an empty history
            return await manage.experiment_history(conn, request.experiment_id)

        rows = await self._in_tx(context, run)
        return pb.ExperimentHistoryResponse(entries=[convert.history_entry(r) for r in rows])

    async def ListEnhancements(
        self, request: pb.ListEnhancementsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListEnhancementsResponse:
        manage = await self._need(context, "intelligence.enhance.manage")
        pattern_id = request.pattern_id if request.HasField("pattern_id") else None
        rows = await self._in_tx(
            context,
            lambda c: manage.list_enhancements(
                c, status=request.status or None, pattern_id=pattern_id, limit=_limit(request.limit, 200)
            ),
            value_error=grpc.StatusCode.INVALID_ARGUMENT,
        )
        return pb.ListEnhancementsResponse(enhancements=[convert.enhancement(r) for r in rows])

    # ------------------------------------------------------------------------------ verdicts
    async def ListVerdicts(self, request: pb.ListVerdictsRequest, context: grpc.aio.ServicerContext) -> pb.ListVerdictsResponse:
        store = await self._need(context, "intelligence.anomaly.store")
        rows = await self._in_tx(
            context,
            lambda c: store.list_verdicts(
                c, limit=_limit(request.limit, 100), verdict=request.verdict or None, status=request.status or None
            ),
            value_error=grpc.StatusCode.INVALID_ARGUMENT,
        )
        return pb.ListVerdictsResponse(verdicts=[convert.verdict(r) for r in rows])

    async def ConfirmVerdict(
        self, request: pb.ConfirmVerdictRequest, context: grpc.aio.ServicerContext
    ) -> pb.ConfirmVerdictResponse:
        store = await self._need(context, "intelligence.anomaly.store")
        if request.label not in VERDICT_LABELS:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"label must be one of {VERDICT_LABELS}")
        actor = _actor()
        await self._in_tx(context, lambda c: store.confirm_verdict(c, request.verdict_id, request.label, actor=actor))
        return pb.ConfirmVerdictResponse()

    # ------------------------------------------------------------------------------ feed
    async def WatchEvents(
        self, request: pb.WatchEventsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WatchEventsResponse]:
        bodies = request.include_bodies
        # subscribe before reading history, so nothing committed meanwhile falls between the two
        with self.hub.subscribe(request.kinds) as sub:
            shown: set[str] = set()
            if request.exchange_history > 0 and sub.wants(EXCHANGE_KIND):
                async with self.engine.connect() as conn:
                    records = await ExchangeRepository(conn).recent(min(request.exchange_history, MAX_LIMIT))
                for record in reversed(records):
                    shown.add(record.request_id)
                    yield convert.feed_message(ExchangeItem(record), include_bodies=bodies, history=True)
            replayed = 0
            if request.since_id > 0:
                replayed = request.since_id
                while True:
                    async with self.engine.connect() as conn:
                        items = await events_after(conn, replayed)
                    for item in items:
                        replayed = item.id
                        if sub.wants(item.kind):
                            yield convert.feed_message(item, include_bodies=bodies)
                    if not items:
                        break
            while True:
                live = await sub.get()
                if isinstance(live, EventItem) and live.id <= replayed:
                    continue
                if isinstance(live, ExchangeItem) and live.record.request_id in shown:
                    continue
                yield convert.feed_message(live, include_bodies=bodies)

    async def WhoAmI(self, request: pb.WhoAmIRequest, context: grpc.aio.ServicerContext) -> pb.WhoAmIResponse:
        principal = CURRENT_PRINCIPAL.get() or LOCAL_OPERATOR
        return pb.WhoAmIResponse(
            subject=principal.subject,
            role=principal.role,
            expires_at=convert.ts(principal.expires_at),
            auth_enabled=self.access.enabled,
        )


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


class ControlServer:
    def __init__(
        self,
        engine: AsyncEngine,
        access: AccessSettings,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        queue_size: int = 1000,
        poll_interval: float = 2.0,
        listen: bool = True,
        tls: ServerTLS | None = None,
        recheck_interval: float = RECHECK_INTERVAL,
    ) -> None:
        require_safe_bind(host, access, what="control API")
        self.engine = engine
        self.access = access
        self.host = host
        self.port = port  # the bound port once started (port 0 picks a free one)
        self.tls = tls
        # read now: a wrong certificate path fails at construction, before anything listens
        self._credentials = tls.credentials() if tls is not None else None
        if tls is None and not is_loopback(host):
            # not refused: a service mesh or tunnel may encrypt the hop; clients refuse to send tokens in plaintext
            log.warning(
                "control API on %s will serve PLAINTEXT: access tokens and exchange bodies cross the network "
                "unencrypted unless something else encrypts them; set LLMPROXY_CONTROL_TLS_CERT and "
                "LLMPROXY_CONTROL_TLS_KEY to serve TLS",
                self.address,
            )
        self.hub = EventHub(engine, queue_size=queue_size, poll_interval=poll_interval, listen=listen)
        self._server: grpc.aio.Server | None = None
        # revoked token ids, in memory (NOTIFY + poll): checked on every call and while streams are open
        self.revocations: TokenRevocations | None = TokenRevocations(engine, listen=listen) if access.enabled else None
        self.recheck_interval = recheck_interval

    @property
    def address(self) -> str:
        return _address(self.host, self.port)

    async def start(self) -> None:
        access = self.access
        if self.revocations is not None:
            await self.revocations.start()  # a failed first load is retried; tokens are refused meanwhile
            access = access.with_revocations(self.revocations)
        server = grpc.aio.server(interceptors=[AuthInterceptor(access, recheck_interval=self.recheck_interval)])
        pb_grpc.add_ControlServicer_to_server(ControlServicer(self.engine, self.access, self.hub), server)
        address = _address(self.host, self.port)
        if self._credentials is not None:
            bound = server.add_secure_port(address, self._credentials)
        else:
            bound = server.add_insecure_port(address)
        if bound == 0:
            raise OSError(f"control API: cannot bind {address}")
        self.port = bound
        await self.hub.start()
        await server.start()
        self._server = server
        log.info(
            "control API listening on %s (%s, auth %s)",
            self.address,
            self.transport,
            "on" if self.access.enabled else "off: loopback only",
        )

    @property
    def transport(self) -> str:
        if self.tls is None:
            return "plaintext"
        return "mTLS" if self.tls.mutual else "TLS"

    async def stop(self, grace: float = 0.5) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.stop(grace)  # open WatchEvents streams never end on their own: cut after grace
        with contextlib.suppress(Exception):
            await self.hub.stop()
        if self.revocations is not None:
            with contextlib.suppress(Exception):
                await self.revocations.stop()
