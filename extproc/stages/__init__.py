"""The sidecar's pipeline: one ordered list of stages, one concern each.

A request passes the stages top to bottom at each of its phases, and so does its response
(``extproc.pipeline`` runs them; each stage's module says what it does and how it fails). To find
where something happens, read :func:`default_stages`.
"""

from __future__ import annotations

from ..context import Context
from ..pipeline import Stage
from .access import AccessStage
from .admission import AdmissionStage
from .credentials import CredentialsStage
from .enhance import EnhanceStage
from .feedback import FeedbackStage
from .guard import GuardStage
from .metering import MeteringStage
from .record import RecordStage
from .restore import RestoreStage
from .toolnames import ToolNamesStage
from .verdict import ClaudeVerdictStage


def default_stages(ctx: Context) -> list[Stage]:
    """The pipeline, in order.                                        failure mode"""
    return [
        AccessStage(ctx),  # routes, legacy targets, gateway keys, the parsed body     closed
        AdmissionStage(ctx),  # overloaded: a fast 503 before the body is screened      closed
        FeedbackStage(ctx),  # POST /v1/feedback, answered by the gateway itself       closed
        GuardStage(ctx),  # detectors -> policy: block, redact, edit; response screen  closed
        ClaudeVerdictStage(),  # claude_verdict rules wait for Claude (bounded)         closed
        EnhanceStage(ctx),  # live enhancements and experiment arms                    open
        ToolNamesStage(),  # provider-safe tool names out, the client's names back      open
        MeteringStage(),  # token budgets see streamed usage too                         open
        CredentialsStage(ctx),  # key scope on the final provider; operator's key       closed
        RecordStage(ctx),  # one masked ExchangeRecord per exchange                     open
        RestoreStage(),  # redacted values back into the response, for the client     closed
    ]


__all__ = ["default_stages"]
