"""A small synchronous client of the control API, used by the CLI.

``ControlClient(addr, token)`` sends ``authorization: Bearer <token>`` with every call (no header
without a token: a loopback server without SECRET_KEY needs none). With ``tls``
(:class:`~intelligence.control.tls.ClientTLS`) the channel is TLS; without it, a token is never sent
to a non-loopback address (:class:`~intelligence.control.tls.PlaintextRefused` at construction).
:func:`client_from_env` builds one the way the CLI does (token, TLS settings from the environment).
Errors stay ``grpc.RpcError``; :func:`describe_error` turns one into a line for a terminal.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any

import grpc

from .gen import control_pb2 as pb
from .gen import control_pb2_grpc as pb_grpc
from .tls import ClientTLS, require_private_channel

DEFAULT_ADDR = "127.0.0.1:50052"
ADDR_ENV = "LLMPROXY_CONTROL_ADDR"
TOKEN_ENV = "LLMPROXY_TOKEN"


def default_addr(env: dict[str, str] | None = None) -> str:
    env = dict(os.environ) if env is None else env
    return env.get(ADDR_ENV) or DEFAULT_ADDR


def describe_error(exc: grpc.RpcError) -> str:
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    return f"{code.name if code is not None else 'ERROR'}: {details}"


def client_from_env(
    addr: str | None = None, *, ca: str | None = None, env: dict[str, str] | None = None, timeout: float = 10.0
) -> ControlClient:
    """The CLI's client: address, token ($LLMPROXY_TOKEN) and TLS ($LLMPROXY_CONTROL_TLS_*) from the
    environment unless given; raises TLSConfigError or PlaintextRefused (both ValueError)."""
    env = dict(os.environ) if env is None else env
    tls = ClientTLS.from_env(env, ca=ca)
    return ControlClient(addr or default_addr(env), env.get(TOKEN_ENV) or None, tls=tls, timeout=timeout, env=env)


class ControlClient:
    def __init__(
        self,
        addr: str,
        token: str | None = None,
        *,
        timeout: float = 10.0,
        tls: ClientTLS | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        require_private_channel(addr, token=token, tls=tls, env=env)
        self.addr = addr
        self.timeout = timeout
        self.tls = tls
        self._metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {token}"),) if token else ()
        if tls is not None:
            self._channel = grpc.secure_channel(addr, tls.credentials(), options=tls.channel_options())
        else:
            self._channel = grpc.insecure_channel(addr)
        self._stub = pb_grpc.ControlStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _call(self, name: str, request: Any) -> Any:
        return getattr(self._stub, name)(request, metadata=self._metadata, timeout=self.timeout)

    def whoami(self) -> pb.WhoAmIResponse:
        return self._call("WhoAmI", pb.WhoAmIRequest())

    def submit_feedback(
        self, request_id: str, *, score: float | None = None, thumbs: str | None = None, comment: str | None = None
    ) -> int:
        req = pb.SubmitFeedbackRequest(request_id=request_id, thumbs=thumbs or "", comment=comment or "")
        if score is not None:
            req.score = score
        return self._call("SubmitFeedback", req).feedback_id

    def list_experiments(self, *, status: str | None = None, limit: int = 0) -> list[pb.Experiment]:
        return list(self._call("ListExperiments", pb.ListExperimentsRequest(status=status or "", limit=limit)).experiments)

    def start_experiment(self, enhancement_id: int, *, control_weight: float | None = None, assign_by: str | None = None) -> int:
        req = pb.StartExperimentRequest(enhancement_id=enhancement_id, assign_by=assign_by or "")
        if control_weight is not None:
            req.control_weight = control_weight
        return self._call("StartExperiment", req).experiment_id

    def experiment_action(self, action: str, experiment_id: int, *, reason: str = "") -> pb.Experiment:
        """``action``: pause | resume | promote | rollback; returns the experiment afterwards."""
        method = {
            "pause": "PauseExperiment",
            "resume": "ResumeExperiment",
            "promote": "PromoteExperiment",
            "rollback": "RollbackExperiment",
        }[action]
        return self._call(method, pb.ExperimentActionRequest(experiment_id=experiment_id, reason=reason)).experiment

    def experiment_history(self, experiment_id: int) -> list[pb.ExperimentHistoryEntry]:
        return list(self._call("ExperimentHistory", pb.ExperimentHistoryRequest(experiment_id=experiment_id)).entries)

    def list_enhancements(
        self, *, status: str | None = None, pattern_id: int | None = None, limit: int = 0
    ) -> list[pb.Enhancement]:
        req = pb.ListEnhancementsRequest(status=status or "", limit=limit)
        if pattern_id is not None:
            req.pattern_id = pattern_id
        return list(self._call("ListEnhancements", req).enhancements)

    def list_verdicts(self, *, verdict: str | None = None, status: str | None = None, limit: int = 0) -> list[pb.Verdict]:
        return list(
            self._call("ListVerdicts", pb.ListVerdictsRequest(verdict=verdict or "", status=status or "", limit=limit)).verdicts
        )

    def confirm_verdict(self, verdict_id: int, label: str) -> None:
        self._call("ConfirmVerdict", pb.ConfirmVerdictRequest(verdict_id=verdict_id, label=label))

    def watch(
        self, *, kinds: Iterable[str] = (), since_id: int = 0, exchange_history: int = 0, include_bodies: bool = False
    ) -> Iterator[pb.WatchEventsResponse]:
        """The live feed; iterate until done, then ``cancel()`` the returned call (or close the client)."""
        req = pb.WatchEventsRequest(
            kinds=list(kinds), since_id=since_id, exchange_history=exchange_history, include_bodies=include_bodies
        )
        return self._stub.WatchEvents(req, metadata=self._metadata)  # no deadline: a feed runs until cancelled
