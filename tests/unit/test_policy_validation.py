"""Strict validation: every error names the line and the field; all errors are reported at once."""

from __future__ import annotations

import textwrap

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from intelligence.policy import PolicyError, parse_policy, validate
from intelligence.policy.actions.fields import FieldsAction
from intelligence.policy.actions.shaping import PromptAction
from intelligence.policy.parse import MAX_POLICY_CHARS


def issues_of(text: str) -> list[tuple[int, str, str]]:
    return [(i.line, i.field, i.message) for i in validate(textwrap.dedent(text).lstrip("\n"), origin="p.yaml")]


def one_issue(text: str) -> tuple[int, str, str]:
    found = issues_of(text)
    assert len(found) == 1, found
    return found[0]


# (yaml, line, field, fragment of the message)
CASES = [
    (
        """
     rules:
       - id: a
         match:
           modles: [gpt-4o]
         actions: {tag: x}
     """,
        4,
        "rules[0].match.modles",
        "did you mean 'models'",
    ),
    (
        """
     version: 1
     rules: []
     rulez: []
     """,
        3,
        "rulez",
        "did you mean 'rules'",
    ),
    (
        """
     rules:
       - id: a
         actions:
           cap_max_tokens: "lots"
     """,
        4,
        "rules[0].actions.cap_max_tokens",
        "expected a whole number",
    ),
    (
        """
     rules:
       - id: a
         actions:
           cap_max_tokens: 0
     """,
        4,
        "rules[0].actions.cap_max_tokens",
        "out of range",
    ),
    (
        """
     rules:
       - id: a
         match:
           models: ["gpt-[4"]
         actions: {tag: x}
     """,
        4,
        "rules[0].match.models[0]",
        "unclosed '['",
    ),
    (
        """
     rules:
       - id: a
         match:
           models: "re:(unclosed"
         actions: {tag: x}
     """,
        4,
        "rules[0].match.models",
        "invalid regex",
    ),
    (
        """
     rules:
       - id: a
         mode: enforcing
         actions: {tag: x}
     """,
        3,
        "rules[0].mode",
        "'enforcing' is not one of: enforce, monitor, off",
    ),
    (
        """
     rules:
       - id: a
         actions: {tag: x}
       - id: a
         actions: {tag: y}
     """,
        4,
        "rules[1].id",
        "duplicate rule id 'a' (first on line 2)",
    ),
    (
        """
     rules:
       - actions: {tag: x}
     """,
        2,
        "rules[0].id",
        "missing",
    ),
    (
        """
     rules:
       - id: a
     """,
        2,
        "rules[0].actions",
        "missing",
    ),
    (
        """
     rules:
       - id: a
         actions: {}
     """,
        3,
        "rules[0].actions",
        "no actions",
    ),
    (
        """
     rules:
       - id: a
         actions: {allow: true, block: true}
     """,
        3,
        "rules[0].actions.block",
        "cannot both allow and block",
    ),
    (
        """
     rules:
       - id: a
         phase: response
         actions: {cap_max_tokens: 5}
     """,
        4,
        "rules[0].actions.cap_max_tokens",
        "not available in a `phase: response` rule",
    ),
    (
        """
     rules:
       - id: a
         match: {status: {gte: 500}}
         actions: {tag: x}
     """,
        3,
        "rules[0].match.status",
        "only for `phase: response` rules",
    ),
    (
        """
     rules:
       - id: a
         match:
           injection_score: {gte: 1.5}
         actions: {tag: x}
     """,
        4,
        "rules[0].match.injection_score.gte",
        "out of range",
    ),
    (
        """
     rules:
       - id: a
         match:
           injection_score: {above: 0.5}
         actions: {tag: x}
     """,
        4,
        "rules[0].match.injection_score.above",
        "unknown key",
    ),
    (
        """
     rules:
       - id: a
         match:
           time: {days: [funday]}
         actions: {tag: x}
     """,
        4,
        "rules[0].match.time.days",
        "not a day",
    ),
    (
        """
     rules:
       - id: a
         match:
           time: {hours: ["9-17"]}
         actions: {tag: x}
     """,
        4,
        "rules[0].match.time.hours",
        "not a window",
    ),
    (
        """
     rules:
       - id: a
         match:
           apis: [chat, grpc]
         actions: {tag: x}
     """,
        4,
        "rules[0].match.apis",
        "unknown api 'grpc'",
    ),
    (
        """
     rules:
       - id: a
         actions:
           set_fields:
             temperature: 0.2
     """,
        5,
        "rules[0].actions.set_fields['temperature']",
        "must start with '/'",
    ),
    (
        """
     rules:
       - id: a
         actions:
           set_fields: {/model: gpt-4o}
     """,
        4,
        "rules[0].actions.set_fields['/model']",
        "use `route",
    ),
    (
        """
     rules:
       - id: a
         actions:
           remove_fields: ["/a~2b"]
     """,
        4,
        "rules[0].actions.remove_fields[0]",
        "'~' must be followed by 0 or 1",
    ),
    (
        """
     rules:
       - id: a
         actions:
           set_headers: {x-llmproxy-provider: openai}
     """,
        4,
        "rules[0].actions.set_headers.x-llmproxy-provider",
        "gateway's own",
    ),
    (
        """
     rules:
       - id: a
         actions:
           redact: {kinds: [secrets], in: [response], restore: true}
     """,
        4,
        "rules[0].actions.redact.restore",
        "add `in: [request]`",
    ),
    (
        """
     rules:
       - id: a
         actions:
           mask: {kinds: [pii], restore: true}
     """,
        4,
        "rules[0].actions.mask.restore",
        "unknown key",
    ),
    (
        """
     rules:
       - id: a
         actions:
           redact: ["email address"]
     """,
        4,
        "rules[0].actions.redact.kinds",
        "not a detector kind",
    ),
    (
        """
     rules:
       - id: a
         actions:
           throttle: {per: key}
     """,
        4,
        "rules[0].actions.throttle.rpm",
        "missing",
    ),
    (
        """
     rules:
       - id: a
         actions:
           block: {status: 200}
     """,
        4,
        "rules[0].actions.block.status",
        "out of range",
    ),
    (
        """
     rules:
       - id: a
         actions:
           allow: false
     """,
        4,
        "rules[0].actions.allow",
        "expected `true`",
    ),
    (
        """
     rules:
       - id: "bad id!"
         actions: {tag: x}
     """,
        2,
        "rules[0].id",
        "not a valid id",
    ),
    (
        """
     aliases:
       fast: fast
     rules: []
     """,
        2,
        "aliases.fast",
        "may not point at itself",
    ),
    (
        """
     aliases:
       "gpt-*": gpt-4o
     rules: []
     """,
        2,
        "aliases.gpt-*",
        "plain model name",
    ),
    (
        """
     version: 2
     rules: []
     """,
        1,
        "version",
        "unsupported version 2",
    ),
    (
        """
     rules:
       - id: a
         actions: {tag: x}
         actions: {tag: y}
     """,
        4,
        "rules[0].actions",
        "duplicate key (first on line 3)",
    ),
    (
        """
     rules: {id: a}
     """,
        1,
        "rules",
        "expected a list of rules",
    ),
    (
        """
     name: p
     """,
        1,
        "rules",
        "missing",
    ),
    (
        """
     rules:
       - id: a
         actions:
           alert: {severity: loud}
     """,
        4,
        "rules[0].actions.alert.severity",
        "not one of: info, warning, critical",
    ),
    (
        """
     rules:
       - id: a
         actions:
           route: {}
     """,
        4,
        "rules[0].actions.route",
        "give model, provider or both",
    ),
    (
        """
     rules:
       - id: a
         match:
           headers: {values: {"bad header": "x"}}
         actions: {tag: x}
     """,
        4,
        "rules[0].match.headers.values.bad header",
        "not a valid header name",
    ),
    (
        """
     rules:
       - id: a
         actions:
           strip_headers: [":path"]
     """,
        4,
        "rules[0].actions.strip_headers",
        "not a valid header name",
    ),
]


@pytest.mark.parametrize(("text", "line", "field", "fragment"), CASES, ids=[c[2] for c in CASES])
def test_errors_name_line_and_field(text: str, line: int, field: str, fragment: str) -> None:
    got_line, got_field, message = one_issue(text)
    assert (got_line, got_field) == (line, field), message
    assert fragment in message


def test_all_errors_are_reported_at_once_with_source() -> None:
    text = textwrap.dedent("""\
        rules:
          - id: a
            match: {modles: [x]}
            actions: {tag: x}
          - id: b
            actions: {cap_max_tokens: -1, colour: red}
        """)
    with pytest.raises(PolicyError) as info:
        parse_policy(text, origin="team.yaml")
    got = [(i.line, i.field) for i in info.value.issues]
    assert got == [(3, "rules[0].match.modles"), (6, "rules[1].actions.colour"), (6, "rules[1].actions.cap_max_tokens")]
    assert str(info.value.issues[0]).startswith("team.yaml:3: rules[0].match.modles: unknown key")
    assert "team.yaml:3" in str(info.value)


def test_not_yaml_and_not_a_mapping_and_empty() -> None:
    ((line, field, message),) = issues_of("rules: [\n")
    assert line == 2 and field == "" and "not valid YAML" in message
    ((line, field, message),) = issues_of("- just\n- a list\n")
    assert (line, field) == (1, "") and "expected a mapping" in message
    ((line, field, message),) = issues_of("")
    assert "empty policy" in message
    ((line, field, message),) = issues_of("rules: !!python/object:os.system []\n")
    assert (line, field) == (1, "rules") and "unsupported YAML tag" in message
    ((line, field, message),) = issues_of("rules: []\nname: !!python/name:os.system x\n")
    assert line == 2 and "not valid YAML" in message


def test_non_string_keys_and_huge_policies() -> None:
    ((line, field, message),) = issues_of("1: x\nrules: []\n")
    assert line == 1 and "keys must be strings" in message
    with pytest.raises(PolicyError) as info:
        parse_policy("#" * (MAX_POLICY_CHARS + 1))
    assert "limit" in info.value.issues[0].message


def test_deeply_nested_values_are_refused() -> None:
    deep = "rules:\n  - id: a\n    actions:\n      set_fields:\n        /x: " + "[" * 80 + "]" * 80 + "\n"
    found = issues_of(deep)
    assert found and "nested deeper" in found[0][2]
    bomb = issues_of("rules: " + "[" * 20_000 + "]" * 20_000)
    assert bomb and "nested deeper" in bomb[0][2]


def test_a_valid_policy_with_every_feature() -> None:
    doc = parse_policy(
        textwrap.dedent("""\
        version: 1
        name: everything
        description: all the knobs
        defaults: {mode: enforce, priority: 50}
        aliases: {fast: gpt-4o-mini, smart: claude-sonnet-4}
        rules:
          - id: all-match
            description: every condition
            priority: 1
            match:
              keys: [gk_1, "team-*"]
              clients: ["10.*"]
              models: ["gpt-*", "re:^o[0-9]"]
              providers: [openai]
              paths: ["/v1/*"]
              apis: [chat, responses, messages]
              methods: [POST]
              patterns: ["p_*"]
              pii: [EMAIL_ADDRESS, "CREDIT_*"]
              secrets: any
              injection_score: {gte: default, lt: 1}
              injection_layers: [heuristic, memory]
              flags: [zero_width]
              request_bytes: {lte: 1000000}
              time: {days: [mon, Tuesday], hours: ["08:00-18:00", "22:00-02:00"]}
              headers: {present: [x-team], absent: [x-debug], values: {x-env: "prod*"}}
            unless:
              keys: [admin]
            actions:
              redact: {kinds: [secrets, "AWS_*"], in: [request, response], restore: false}
              mask: [pii]
              require_headers: [x-team]
              strip_headers: [x-debug]
              set_headers: {x-gateway: llmproxy, x-num: 3}
              cap_max_tokens: 1024
              allow_models: ["gpt-4o*"]
              route: {model: gpt-4o-mini, provider: OpenRouter}
              tag: [a, b, a]
              alert: {severity: critical, message: look}
              throttle: {rpm: 60, burst: 10, per: client}
              quarantine_key: {reason: abuse}
              prepend_system: "be safe"
              append_system: "really"
              prepend_user: "note:"
              append_user: "thanks"
              set_fields: {/temperature: 0.2, /metadata/team: x}
              default_fields: {/top_p: 0.9}
              remove_fields: [/logit_bias]
              strip_response_fields: [/system_fingerprint]
              rewrite_response_fields: {/model: gateway}
          - id: answers
            phase: response
            match: {status: {gte: 200, lt: 300}, response_bytes: {gt: 0}, pii: any}
            actions: {mask: {kinds: [pii]}, alert: true, quarantine_key: true, block: true}
        """),
        origin="all.yaml",
    )
    assert doc.name == "everything" and dict(doc.aliases) == {"fast": "gpt-4o-mini", "smart": "claude-sonnet-4"}
    first, second = doc.rules
    assert first.priority == 1 and second.priority == 50 and first.line == 7
    a = first.actions  # one action object per key (intelligence.policy.actions)
    assert (a["route"].route.model, a["route"].route.provider) == ("gpt-4o-mini", "openrouter") and a["tag"].tags == ("a", "b")
    assert dict(a["set_headers"].headers) == {"x-gateway": "llmproxy", "x-num": "3"}
    throttle = a["throttle"].enforced
    assert (throttle.rpm, throttle.burst, throttle.per) == (60, 10, "client") and a["quarantine_key"].quarantine.reason == "abuse"
    assert len([x for x in a if isinstance(x, PromptAction)]) == 4
    assert [sum(len(x.edits) for x in a if isinstance(x, FieldsAction) and x.response is r) for r in (False, True)] == [4, 2]
    assert second.actions["alert"].alert.severity == "warning"
    assert second.actions["quarantine_key"].quarantine.reason.startswith("policy rule everything/answers")


def test_name_override_for_database_policies() -> None:
    doc = parse_policy("name: other\nrules: [{id: a, actions: {tag: x}}]\n", name="team-a")
    assert doc.name == "team-a" and doc.rules[0].qualified == "team-a/a"
    assert doc.rules[0].effects.fired_enforce.policy == "team-a"


# (actions or match written inline, field, fragment): the type checks of every action and condition
INLINE = [
    ("actions: {set_fields: [/a]}", "rules[0].actions.set_fields", "expected a mapping of JSON pointer"),
    ("actions: {remove_fields: {a: 1}}", "rules[0].actions.remove_fields", "expected a list of JSON pointers"),
    ("actions: {remove_fields: ['']}", "rules[0].actions.remove_fields[0]", "must not be empty"),
    ("actions: {set_fields: {'': 1}}", "rules[0].actions.set_fields['']", "must not be empty"),
    ("actions: {redact: {in: [request]}}", "rules[0].actions.redact.kinds", "missing"),
    ("actions: {redact: {kinds: [pii], in: [upstream]}}", "rules[0].actions.redact.in", "use request, response or both"),
    ("actions: {redact: {kinds: [pii], restore: maybe}}", "rules[0].actions.redact.restore", "expected true or false"),
    ("actions: {redact: 5}", "rules[0].actions.redact", "expected a list of strings"),
    ("actions: {redact: []}", "rules[0].actions.redact", "must not be an empty list"),
    ("actions: {redact: [pii, 7]}", "rules[0].actions.redact[1]", "expected a string"),
    ("actions: {set_headers: [a]}", "rules[0].actions.set_headers", "expected a mapping of header name"),
    ("actions: {set_headers: {'a b': x}}", "rules[0].actions.set_headers.a b", "not a valid header name"),
    ("actions: {set_headers: {Content-Length: '5'}}", "rules[0].actions.set_headers.Content-Length", "managed by the gateway"),
    ("actions: {set_headers: {x-a: [1]}}", "rules[0].actions.set_headers.x-a", "expected a string"),
    ('actions: {set_headers: {x-a: "a\\r\\nb"}}', "rules[0].actions.set_headers.x-a", "line breaks"),
    ("actions: {block: yes please}", "rules[0].actions.block", "expected a mapping"),
    ("actions: {block: {message: ''}}", "rules[0].actions.block.message", "must not be empty"),
    ("actions: {alert: {message: 5}}", "rules[0].actions.alert.message", "expected a string"),
    ("actions: {alert: 5}", "rules[0].actions.alert", "expected a mapping"),
    ("actions: {throttle: {rpm: 5, per: team}}", "rules[0].actions.throttle.per", "not one of: key, client"),
    ("actions: {throttle: 5}", "rules[0].actions.throttle", "expected a mapping"),
    ("actions: {quarantine_key: {reason: 5}}", "rules[0].actions.quarantine_key.reason", "expected a string"),
    ("actions: {quarantine_key: 1}", "rules[0].actions.quarantine_key", "expected a mapping"),
    ("actions: {route: {model: 5}}", "rules[0].actions.route.model", "expected a string"),
    ("actions: {prepend_system: ''}", "rules[0].actions.prepend_system", "must not be empty"),
    ("actions: {allow_models: ['a[']}", "rules[0].actions.allow_models[0]", "unclosed"),
    ("actions: [tag]", "rules[0].actions", "expected a mapping"),
    ("priority: high\n    actions: {tag: x}", "rules[0].priority", "expected a whole number"),
    ("priority: 99999999\n    actions: {tag: x}", "rules[0].priority", "out of range"),
    ("phase: later\n    actions: {tag: x}", "rules[0].phase", "not one of: request, response"),
    ("description: 5\n    actions: {tag: x}", "rules[0].description", "expected a string"),
    ("match: [models]\n    actions: {tag: x}", "rules[0].match", "expected a mapping"),
    ("match: {injection_score: {}}\n    actions: {tag: x}", "rules[0].match.injection_score", "at least one bound"),
    ("match: {injection_score: {gte: high}}\n    actions: {tag: x}", "rules[0].match.injection_score.gte", "expected a number"),
    ("match: {injection_score: 0.5}\n    actions: {tag: x}", "rules[0].match.injection_score", "expected a mapping"),
    ("match: {time: {}}\n    actions: {tag: x}", "rules[0].match.time", "give days, hours or both"),
    ("match: {time: 5}\n    actions: {tag: x}", "rules[0].match.time", "expected a mapping"),
    ("match: {time: {hours: ['25:00-26:00']}}\n    actions: {tag: x}", "rules[0].match.time.hours", "not a window"),
    ("match: {headers: {}}\n    actions: {tag: x}", "rules[0].match.headers", "give present, absent or values"),
    ("match: {headers: {values: [x]}}\n    actions: {tag: x}", "rules[0].match.headers.values", "mapping of header name"),
    ("match: {headers: {present: ['a b']}}\n    actions: {tag: x}", "rules[0].match.headers.present", "not a valid header name"),
    ("match: {headers: [5]}\n    actions: {tag: x}", "rules[0].match.headers[0]", "expected a string"),
    ("match: {apis: 5}\n    actions: {tag: x}", "rules[0].match.apis", "expected a list of strings"),
    ("match: {pii: [5]}\n    actions: {tag: x}", "rules[0].match.pii[0]", "expected a string"),
    ("match: {request_bytes: {gt: -1}}\n    actions: {tag: x}", "rules[0].match.request_bytes.gt", "out of range"),
]


@pytest.mark.parametrize(("body", "field", "fragment"), INLINE, ids=[c[0][:40] for c in INLINE])
def test_inline_type_errors(body: str, field: str, fragment: str) -> None:
    found = issues_of(f"rules:\n  - id: a\n    {body}\n")
    assert found, body
    line, got_field, message = found[0]
    assert (got_field, line >= 2) == (field, True), found
    assert fragment in message, found


def test_top_level_type_errors() -> None:
    assert issues_of("name: 5\nrules: []\n")[0][1:] == ("name", "expected a string, got int 5")
    assert issues_of("defaults: {mode: sometimes}\nrules: []\n")[0][1] == "defaults.mode"
    assert issues_of("defaults: {priority: x}\nrules: []\n")[0][1] == "defaults.priority"
    assert issues_of("aliases: [a]\nrules: []\n")[0][1:] == ("aliases", "expected a mapping of alias -> model, got a list")
    assert issues_of("aliases: {a: b, b: c}\nrules: []\n")[0][1:] == (
        "aliases.a",
        "alias target 'b' is itself an alias; point at the model",
    )
    assert issues_of("rules:\n  - 5\n")[0][:2] == (2, "rules[0]")


_scalars = st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.floats(allow_nan=False) | st.text(max_size=12)
_keys = st.sampled_from(
    [
        "rules",
        "id",
        "match",
        "actions",
        "models",
        "keys",
        "block",
        "redact",
        "kinds",
        "in",
        "tag",
        "cap_max_tokens",
        "time",
        "hours",
        "days",
        "headers",
        "set_fields",
        "/a",
        "mode",
        "priority",
        "injection_score",
        "gte",
        "phase",
        "throttle",
        "rpm",
        "aliases",
        "x",
    ]
) | st.text(max_size=6)
_docs = st.recursive(
    _scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=5), max_leaves=30
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=_docs)
def test_parser_never_raises_anything_but_policy_error_on_documents(doc: object) -> None:
    text = yaml.safe_dump({"rules": [doc]} if not isinstance(doc, dict) else doc)
    try:
        parse_policy(text)
    except PolicyError as exc:
        assert all(i.line >= 0 and isinstance(i.field, str) and i.message for i in exc.issues)


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=200))
def test_parser_never_raises_anything_but_policy_error_on_text(text: str) -> None:
    try:
        parse_policy(text)
    except PolicyError:
        pass
