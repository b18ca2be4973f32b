from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SubmitFeedbackRequest(_message.Message):
    __slots__ = ("request_id", "score", "thumbs", "comment")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    THUMBS_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    score: float
    thumbs: str
    comment: str
    def __init__(self, request_id: _Optional[str] = ..., score: _Optional[float] = ..., thumbs: _Optional[str] = ..., comment: _Optional[str] = ...) -> None: ...

class SubmitFeedbackResponse(_message.Message):
    __slots__ = ("feedback_id",)
    FEEDBACK_ID_FIELD_NUMBER: _ClassVar[int]
    feedback_id: int
    def __init__(self, feedback_id: _Optional[int] = ...) -> None: ...

class Experiment(_message.Message):
    __slots__ = ("id", "enhancement_id", "pattern_id", "status", "control_weight", "assign_by", "decision_reason", "created_by", "started_at", "decided_at", "json")
    ID_FIELD_NUMBER: _ClassVar[int]
    ENHANCEMENT_ID_FIELD_NUMBER: _ClassVar[int]
    PATTERN_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CONTROL_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    ASSIGN_BY_FIELD_NUMBER: _ClassVar[int]
    DECISION_REASON_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    DECIDED_AT_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    id: int
    enhancement_id: int
    pattern_id: int
    status: str
    control_weight: float
    assign_by: str
    decision_reason: str
    created_by: str
    started_at: str
    decided_at: str
    json: str
    def __init__(self, id: _Optional[int] = ..., enhancement_id: _Optional[int] = ..., pattern_id: _Optional[int] = ..., status: _Optional[str] = ..., control_weight: _Optional[float] = ..., assign_by: _Optional[str] = ..., decision_reason: _Optional[str] = ..., created_by: _Optional[str] = ..., started_at: _Optional[str] = ..., decided_at: _Optional[str] = ..., json: _Optional[str] = ...) -> None: ...

class ListExperimentsRequest(_message.Message):
    __slots__ = ("status", "limit")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    status: str
    limit: int
    def __init__(self, status: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ListExperimentsResponse(_message.Message):
    __slots__ = ("experiments",)
    EXPERIMENTS_FIELD_NUMBER: _ClassVar[int]
    experiments: _containers.RepeatedCompositeFieldContainer[Experiment]
    def __init__(self, experiments: _Optional[_Iterable[_Union[Experiment, _Mapping]]] = ...) -> None: ...

class StartExperimentRequest(_message.Message):
    __slots__ = ("enhancement_id", "control_weight", "assign_by")
    ENHANCEMENT_ID_FIELD_NUMBER: _ClassVar[int]
    CONTROL_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    ASSIGN_BY_FIELD_NUMBER: _ClassVar[int]
    enhancement_id: int
    control_weight: float
    assign_by: str
    def __init__(self, enhancement_id: _Optional[int] = ..., control_weight: _Optional[float] = ..., assign_by: _Optional[str] = ...) -> None: ...

class StartExperimentResponse(_message.Message):
    __slots__ = ("experiment_id",)
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    experiment_id: int
    def __init__(self, experiment_id: _Optional[int] = ...) -> None: ...

class ExperimentActionRequest(_message.Message):
    __slots__ = ("experiment_id", "reason")
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    experiment_id: int
    reason: str
    def __init__(self, experiment_id: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class ExperimentActionResponse(_message.Message):
    __slots__ = ("experiment",)
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    experiment: Experiment
    def __init__(self, experiment: _Optional[_Union[Experiment, _Mapping]] = ...) -> None: ...

class ExperimentHistoryRequest(_message.Message):
    __slots__ = ("experiment_id",)
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    experiment_id: int
    def __init__(self, experiment_id: _Optional[int] = ...) -> None: ...

class ExperimentHistoryEntry(_message.Message):
    __slots__ = ("id", "at", "action", "actor", "detail_json")
    ID_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    DETAIL_JSON_FIELD_NUMBER: _ClassVar[int]
    id: int
    at: str
    action: str
    actor: str
    detail_json: str
    def __init__(self, id: _Optional[int] = ..., at: _Optional[str] = ..., action: _Optional[str] = ..., actor: _Optional[str] = ..., detail_json: _Optional[str] = ...) -> None: ...

class ExperimentHistoryResponse(_message.Message):
    __slots__ = ("entries",)
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[ExperimentHistoryEntry]
    def __init__(self, entries: _Optional[_Iterable[_Union[ExperimentHistoryEntry, _Mapping]]] = ...) -> None: ...

class Enhancement(_message.Message):
    __slots__ = ("id", "pattern_id", "version", "kind", "status", "source", "rationale", "spec_json", "created_at", "json")
    ID_FIELD_NUMBER: _ClassVar[int]
    PATTERN_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    RATIONALE_FIELD_NUMBER: _ClassVar[int]
    SPEC_JSON_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    id: int
    pattern_id: int
    version: int
    kind: str
    status: str
    source: str
    rationale: str
    spec_json: str
    created_at: str
    json: str
    def __init__(self, id: _Optional[int] = ..., pattern_id: _Optional[int] = ..., version: _Optional[int] = ..., kind: _Optional[str] = ..., status: _Optional[str] = ..., source: _Optional[str] = ..., rationale: _Optional[str] = ..., spec_json: _Optional[str] = ..., created_at: _Optional[str] = ..., json: _Optional[str] = ...) -> None: ...

class ListEnhancementsRequest(_message.Message):
    __slots__ = ("status", "pattern_id", "limit")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PATTERN_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    status: str
    pattern_id: int
    limit: int
    def __init__(self, status: _Optional[str] = ..., pattern_id: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class ListEnhancementsResponse(_message.Message):
    __slots__ = ("enhancements",)
    ENHANCEMENTS_FIELD_NUMBER: _ClassVar[int]
    enhancements: _containers.RepeatedCompositeFieldContainer[Enhancement]
    def __init__(self, enhancements: _Optional[_Iterable[_Union[Enhancement, _Mapping]]] = ...) -> None: ...

class Verdict(_message.Message):
    __slots__ = ("id", "at", "request_id", "client_key_fp", "detectors", "status", "verdict", "confidence", "reasoning", "source", "action", "confirmed", "confirmed_by", "json")
    ID_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_KEY_FP_FIELD_NUMBER: _ClassVar[int]
    DETECTORS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    REASONING_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    CONFIRMED_FIELD_NUMBER: _ClassVar[int]
    CONFIRMED_BY_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    id: int
    at: str
    request_id: str
    client_key_fp: str
    detectors: _containers.RepeatedScalarFieldContainer[str]
    status: str
    verdict: str
    confidence: float
    reasoning: str
    source: str
    action: str
    confirmed: str
    confirmed_by: str
    json: str
    def __init__(self, id: _Optional[int] = ..., at: _Optional[str] = ..., request_id: _Optional[str] = ..., client_key_fp: _Optional[str] = ..., detectors: _Optional[_Iterable[str]] = ..., status: _Optional[str] = ..., verdict: _Optional[str] = ..., confidence: _Optional[float] = ..., reasoning: _Optional[str] = ..., source: _Optional[str] = ..., action: _Optional[str] = ..., confirmed: _Optional[str] = ..., confirmed_by: _Optional[str] = ..., json: _Optional[str] = ...) -> None: ...

class ListVerdictsRequest(_message.Message):
    __slots__ = ("verdict", "status", "limit")
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    verdict: str
    status: str
    limit: int
    def __init__(self, verdict: _Optional[str] = ..., status: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ListVerdictsResponse(_message.Message):
    __slots__ = ("verdicts",)
    VERDICTS_FIELD_NUMBER: _ClassVar[int]
    verdicts: _containers.RepeatedCompositeFieldContainer[Verdict]
    def __init__(self, verdicts: _Optional[_Iterable[_Union[Verdict, _Mapping]]] = ...) -> None: ...

class ConfirmVerdictRequest(_message.Message):
    __slots__ = ("verdict_id", "label")
    VERDICT_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    verdict_id: int
    label: str
    def __init__(self, verdict_id: _Optional[int] = ..., label: _Optional[str] = ...) -> None: ...

class ConfirmVerdictResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WatchEventsRequest(_message.Message):
    __slots__ = ("kinds", "since_id", "exchange_history", "include_bodies")
    KINDS_FIELD_NUMBER: _ClassVar[int]
    SINCE_ID_FIELD_NUMBER: _ClassVar[int]
    EXCHANGE_HISTORY_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_BODIES_FIELD_NUMBER: _ClassVar[int]
    kinds: _containers.RepeatedScalarFieldContainer[str]
    since_id: int
    exchange_history: int
    include_bodies: bool
    def __init__(self, kinds: _Optional[_Iterable[str]] = ..., since_id: _Optional[int] = ..., exchange_history: _Optional[int] = ..., include_bodies: _Optional[bool] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("id", "at", "kind", "severity", "title", "subject", "detail_json", "source")
    ID_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    DETAIL_JSON_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    id: int
    at: str
    kind: str
    severity: str
    title: str
    subject: str
    detail_json: str
    source: str
    def __init__(self, id: _Optional[int] = ..., at: _Optional[str] = ..., kind: _Optional[str] = ..., severity: _Optional[str] = ..., title: _Optional[str] = ..., subject: _Optional[str] = ..., detail_json: _Optional[str] = ..., source: _Optional[str] = ...) -> None: ...

class ExchangeSummary(_message.Message):
    __slots__ = ("request_id", "started_at", "session_id", "provider", "model", "method", "path", "status", "streamed", "latency_ms", "input_tokens", "output_tokens", "error", "record_json", "history")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STREAMED_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RECORD_JSON_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    started_at: str
    session_id: str
    provider: str
    model: str
    method: str
    path: str
    status: int
    streamed: bool
    latency_ms: float
    input_tokens: int
    output_tokens: int
    error: str
    record_json: str
    history: bool
    def __init__(self, request_id: _Optional[str] = ..., started_at: _Optional[str] = ..., session_id: _Optional[str] = ..., provider: _Optional[str] = ..., model: _Optional[str] = ..., method: _Optional[str] = ..., path: _Optional[str] = ..., status: _Optional[int] = ..., streamed: _Optional[bool] = ..., latency_ms: _Optional[float] = ..., input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., error: _Optional[str] = ..., record_json: _Optional[str] = ..., history: _Optional[bool] = ...) -> None: ...

class Gap(_message.Message):
    __slots__ = ("dropped",)
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    dropped: int
    def __init__(self, dropped: _Optional[int] = ...) -> None: ...

class WatchEventsResponse(_message.Message):
    __slots__ = ("event", "exchange", "gap")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    EXCHANGE_FIELD_NUMBER: _ClassVar[int]
    GAP_FIELD_NUMBER: _ClassVar[int]
    event: Event
    exchange: ExchangeSummary
    gap: Gap
    def __init__(self, event: _Optional[_Union[Event, _Mapping]] = ..., exchange: _Optional[_Union[ExchangeSummary, _Mapping]] = ..., gap: _Optional[_Union[Gap, _Mapping]] = ...) -> None: ...

class WhoAmIRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WhoAmIResponse(_message.Message):
    __slots__ = ("subject", "role", "expires_at", "auth_enabled")
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    AUTH_ENABLED_FIELD_NUMBER: _ClassVar[int]
    subject: str
    role: str
    expires_at: str
    auth_enabled: bool
    def __init__(self, subject: _Optional[str] = ..., role: _Optional[str] = ..., expires_at: _Optional[str] = ..., auth_enabled: _Optional[bool] = ...) -> None: ...
