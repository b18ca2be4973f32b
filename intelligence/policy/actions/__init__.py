"""The ``actions`` part of a rule: one class per action key (:mod:`.base` has the protocol), and
:data:`REGISTRY`, the table of the actions the policy language has, in the order docs/policy.md
lists them. Adding an action is one class (in the module of its kind) plus one line here, plus its
test; docs/policy.md, "Adding a policy action", walks through one.

A parse with more actions than these takes an extended registry, leaving this one untouched::

    registry = REGISTRY.extended(MyAction)
    parse_policy(text, actions=registry)
"""

from __future__ import annotations

from ..decision import Phase
from .base import BOTH_PHASES, REQUEST_ONLY, Action, ActionRegistry, RuleContext, parse_actions
from .deferred import (
    VERDICT_DEFAULT_CONFIDENCE,
    VERDICT_DEFAULT_TIMEOUT_MS,
    VERDICT_TIMEOUT_MS,
    ClaudeVerdictAction,
    ThrottleAction,
)
from .fields import (
    DefaultFieldsAction,
    RemoveFieldsAction,
    RewriteResponseFieldsAction,
    SetFieldsAction,
    StripResponseFieldsAction,
)
from .gates import AllowAction, AllowModelsAction, BlockAction, RequireHeadersAction
from .records import AlertAction, QuarantineKeyAction, TagAction
from .redaction import REDACT_CATEGORIES, MaskAction, RedactAction
from .shaping import (
    AppendSystemAction,
    AppendUserAction,
    CapMaxTokensAction,
    PrependSystemAction,
    PrependUserAction,
    RouteAction,
    SetHeadersAction,
    StripHeadersAction,
)

REGISTRY = ActionRegistry(
    (
        AllowAction,
        BlockAction,
        RedactAction,
        MaskAction,
        RequireHeadersAction,
        StripHeadersAction,
        SetHeadersAction,
        CapMaxTokensAction,
        AllowModelsAction,
        RouteAction,
        TagAction,
        AlertAction,
        ThrottleAction,
        QuarantineKeyAction,
        PrependSystemAction,
        AppendSystemAction,
        PrependUserAction,
        AppendUserAction,
        SetFieldsAction,
        DefaultFieldsAction,
        RemoveFieldsAction,
        StripResponseFieldsAction,
        RewriteResponseFieldsAction,
        ClaudeVerdictAction,
    )
)
ACTION_KEYS = REGISTRY.keys
RESPONSE_ACTIONS = frozenset(REGISTRY.available(Phase.RESPONSE))

__all__ = [
    "ACTION_KEYS",
    "BOTH_PHASES",
    "REDACT_CATEGORIES",
    "REGISTRY",
    "REQUEST_ONLY",
    "RESPONSE_ACTIONS",
    "VERDICT_DEFAULT_CONFIDENCE",
    "VERDICT_DEFAULT_TIMEOUT_MS",
    "VERDICT_TIMEOUT_MS",
    "Action",
    "ActionRegistry",
    "AlertAction",
    "AllowAction",
    "AllowModelsAction",
    "AppendSystemAction",
    "AppendUserAction",
    "BlockAction",
    "CapMaxTokensAction",
    "ClaudeVerdictAction",
    "DefaultFieldsAction",
    "MaskAction",
    "PrependSystemAction",
    "PrependUserAction",
    "QuarantineKeyAction",
    "RedactAction",
    "RemoveFieldsAction",
    "RewriteResponseFieldsAction",
    "RouteAction",
    "RuleContext",
    "SetFieldsAction",
    "SetHeadersAction",
    "StripHeadersAction",
    "StripResponseFieldsAction",
    "TagAction",
    "ThrottleAction",
    "parse_actions",
]
