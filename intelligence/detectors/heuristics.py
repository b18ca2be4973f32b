"""Layer 1 of injection detection: fast, explainable patterns (no model).

Each rule belongs to a family (instruction override, role hijack, ...) and has a weight: how sure
one hit of it alone makes us. Families combine with a noisy-or, so two independent weak signals
add up while one family matching many times does not. Rules run on the normalised text and on every
decoded payload (normalize.py), so a base64- or homoglyph-hidden instruction hits the same rule.

The phrases are deliberately general (verbs x objects, not memorised prompts); tests cover each
family with positive and negative examples.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

import ahocorasick
import numpy as np

from .normalize import Normalized

_I = re.IGNORECASE


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    family: str
    weight: float
    pattern: re.Pattern[str]
    # Lower-case substrings of which every match contains at least one: a substring test is ~100x
    # cheaper than a case-insensitive search over a long prompt, so the regex runs only when one
    # is present. Empty: always run. Must be a *necessary* condition (tests check each rule's
    # positive examples still hit).
    gate: tuple[str, ...] = ()
    # Run on the lower-cased text without IGNORECASE (same matches, ~1.7x faster in CPython's re);
    # only for case-insensitive patterns without upper-case literals (see ``_r``).
    on_lowered: bool = False


@dataclass(frozen=True, slots=True)
class RuleHit:
    rule: str
    family: str
    weight: float
    excerpt: str  # the matched text, shortened, for the explanation


def _r(name: str, family: str, weight: float, pattern: str, flags: int = _I) -> Rule:
    if flags & _I and _lowercase_only(pattern):
        first = _first_letters(pattern)
        # A leading lookahead on the possible first letters lets re skip most positions quickly.
        fast = f"(?=[{''.join(sorted(first))}]){pattern}" if first else pattern
        return Rule(name, family, weight, re.compile(fast, flags & ~_I), _GATES.get(name, ()), on_lowered=True)
    return Rule(name, family, weight, re.compile(pattern, flags), _GATES.get(name, ()))


def _first_letters(pattern: str) -> set[str] | None:
    """The letters a match can start with, for patterns shaped ``\\b(?:word|word...)...`` with no
    other top-level alternative; None when that cannot be read off safely."""
    if not pattern.startswith("\\b(?:"):
        return None
    depth, i, alternatives, current, group_end = 0, 2, [], "", -1
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            if depth == 1:
                current += pattern[i : i + 2]
            i += 2
            continue
        if c == "[":  # a character class may hold "|" or ")": skip it whole
            j = (
                pattern.index("]", i + 2)
                if pattern.startswith("[]", i) or pattern.startswith("[^]", i)
                else pattern.index("]", i + 1)
            )
            if depth == 1:
                current += pattern[i : j + 1]
            i = j + 1
            continue
        if c == "(":
            depth += 1
            if depth == 1:
                i += 3  # "(?:"
                continue
        elif c == ")":
            depth -= 1
            if depth == 0 and group_end < 0:
                group_end = i
                i += 1
                continue
        elif c == "|":
            if depth == 0:
                return None  # another top-level alternative starts elsewhere
            if depth == 1 and group_end < 0:
                alternatives.append(current)
                current = ""
                i += 1
                continue
        if depth == 1 and group_end < 0:
            current += c
        i += 1
    alternatives.append(current)
    if group_end < 0 or (group_end + 1 < len(pattern) and pattern[group_end + 1] in "?*{"):
        return None  # an optional first group: the match may start with what follows it
    letters: set[str] = set()
    for alt in alternatives:
        if not alt or not ("a" <= alt[0] <= "z") or (len(alt) > 1 and alt[1] in "?*{"):
            return None
        letters.add(alt[0])
    return letters


def _lowercase_only(pattern: str) -> bool:
    """No upper-case letter outside escapes (\\S, \\W, ... keep their meaning)."""
    return not re.search(r"[A-Z]", re.sub(r"\\.", "", pattern))


_IGNORE_GATE = (
    "ignor",
    "disregard",
    "forget",
    "overlook",
    "skip",
    "bypass",
    "override",
    "neglect",
    "abandon",
    "aside",
    "throw",
    "discard",
    "drop",
    "dismiss",
)
# The costliest rules on long prompts (profiled), each gated on the words its pattern cannot match without.
_GATES: dict[str, tuple[str, ...]] = {
    "ignore_previous": _IGNORE_GATE,
    "ignore_above": _IGNORE_GATE,
    "hypothetical_disclaimer": ("hypothetical", "fictional", "purpose"),
    "ask_password": ("pass", "secret", "api key", "access code", "pin"),
    "output_steering": ("let", "might", "could", "should", "suggest", "must", "following"),
    "reveal_system_prompt": (
        "system",
        "initial",
        "hidden",
        "original",
        "prompt",
        "developer",
        "secret",
        "confidential",
        "instructions",
    ),
    "authority_claim": (
        "creator",
        "developer",
        "owner",
        "admin",
        "maintainer",
        "operator",
        "programmer",
        "god",
        "boss",
        "supervisor",
        "manager",
        "officer",
        "detective",
        "agent",
        "investigator",
        "official",
        "president",
    ),
    "no_guardrails_persona": (
        "guideline",
        "restriction",
        "filter",
        "limitation",
        "polic",
        "rule",
        "boundaries",
        "constraint",
        "censorship",
        "confines",
        "principles",
        "standards",
        "safeguard",
        "guardrail",
        "moral",
        "ethic",
    ),
    "enter_mode": ("mode",),
    "new_instructions": ("instruction", "task", "objective", "directive", "order", "system prompt"),
    "no_warnings": ("warning", "disclaimer", "caveat", "apolog", "moraliz", "moralis", "lectur", "ethical"),
    "split_payload": ("part", "string", "variable", "segment", "combine", "concatenate", "join"),
    "override_mode": ("override", "bypass"),
    "encode_the_secret": (
        "password",
        "secret",
        "passphrase",
        "key",
        "instructions",
        "prompt",
        "email address",
        "birth",
        "initials",
    ),
    # Rules whose key phrase is rare even in long jailbreak templates: the gate almost always says no.
    "from_now_on": ("from now on",),
    "you_are_now": ("you are now", "you are no longer"),
    "vendor_claim": ("as an ai",),
    "evasion_intent": ("without", "undetectable", "untraceable", "evad", "cover"),
    "shouted_override": ("mode", "override", "admin", "system"),
    "fake_system_header": ("system", "admin"),
    "instead_of_task": ("instead of", "rather than"),
    # Rules that ran on every text until 2026-12-07 (a fifth of the rules' time on long documents):
    # each gate is the set of literals one of which every match contains.
    "do_not_follow": ("follow", "obey", "adhere", "comply", "listen"),
    "forget_that": ("forget", "ignore", "disregard", "never mind"),
    "instead_question": ("instead",),
    "persona_name": ("dan", "stan", "dude", "aim", "ucar", "antigpt", "evilbot", "devmode"),
    "banned_refusal_phrases": ("sorry", "apologi", "cannot", "can't", "can not", "as an ai", "language model", "unable"),
    "disregard_ethics": ("ethic", "moral", "legal", "safety"),
    "no_matter_how_harmful": ("no matter how", "regardless of how", "even if"),
    "must_answer_everything": ("you have to", "you must", "you are required", "you will", "you shall", "you need to", "always"),
    "forced_prefix": ("response", "reply", "answer", "output", "message"),
    "fiction_laundering": (
        "fictional",
        "hypothetical",
        "educational",
        "research",
        "used",
        "novel",
        "story",
        "screenplay",
        "movie",
        "script",
        "book",
        "thriller",
    ),
    "mode_tag": ("<",),
    "address_the_ai": ("ai", "assistant", "agent", "chatbot", "language model", "llm", "gpt", "claude", "model"),
    "hidden_instruction_marker": ("<!--", "important", "attention", "note", "message", "instruction"),
    "state_instead": ("ignore", "disregard"),
    "hypothetical_override": ("ignore", "disregard"),
    "regardless_of_instructions": ("regardless", "irrespective"),
    "chat_template_tokens": ("<|", "[inst]", "[/inst]", "<<sys>>", "<</sys>>"),
    "immerse_role": ("immerse", "you are about to", "never break character"),
    "repeat_above": ("above", "before this", "verbatim", "word for word", "so far", "preceding"),
    "unfiltered_persona": ("unfiltered", "uncensored", "amoral", "unrestricted", "unchained", "unshackled", "unaligned", "limit"),
    "never_refuse": ("refuse", "decline", "reject", "deny", "say", "apologi"),
    "decode_and_follow": (
        "base64",
        "rot",
        "caesar",
        "cipher",
        "morse",
        "binary",
        "hex",
        "leetspeak",
        "pig latin",
        "encoded",
        "backwards",
    ),
    "rules_revoked": ("rule", "instruction", "guideline", "directive", "restriction", "prompt", "overrid"),
    "ignore_user_request": ("user",),
    "real_task": ("task", "instruction", "objective", "goal", "job"),
    "do_x_instead": ("instead", "rather"),
    "when_processing_say": ("when ",),
    "claimed_admin_voice": ("this is ",),
    "say_access_granted": ("access granted",),
    "instructions_given_at_start": ("given", "were", "are"),
    "tool_directive": ("tool", "function", "plugin", "command", "curl", "wget", "ssh", "id_rsa", "/etc/", ".aws", ".env"),
    "send_data_out": ("http", "@", "account"),
    "bracket_system_tag": ("[system]", "[admin]", "[developer]", "[sys]", "<system>", "<admin>", "<developer>"),
    "dan_persona": ("do anything now", "dan", "developer mode", "jailbr"),
}


_IGNORE_VERB = r"(?:ignore|ignoring|disregard\w*|forget|forgetting|overlook|skip|bypass|override|neglect|abandon|set aside|throw away|discard|drop|dismiss)"
# Not "the", "given" or "current": "ignore the rule" / "ignore the current settings" are ordinary
# words in software documentation (spell and grammar checkers).
_PRIOR = r"(?:previous|prior|preceding|above|earlier|former|original|initial|old|all|any|every|your|these|those|system|existing)"
_DIRECTIVE = (
    r"(?:instructions?|directives?|directions?|rules?|guidelines?|prompts?|commands?|orders?|context|constraints?"
    r"|restrictions?|programming|guidance|polic(?:y|ies)|training|limitations?|tasks?"
    r"|everything|what (?:you|i) (?:have been|were|was) told|what you(?:'ve| have) been told)"
)
_HARM_ADJ = (
    r"(?:immoral|unethical|illegal|dangerous|harmful|reckless|inhumane|offensive|sexually explicit|questionable|inappropriate)"
)
_GUARD_NOUN = (
    r"(?:guidelines?|restrictions?|filters?|filtering|limitations?|polic(?:y|ies)|rules?|boundaries|constraints?"
    r"|censorship|confines|principles|standards|safeguards|guardrails|morals?|ethics)"
)

RULES: tuple[Rule, ...] = (
    # -- instruction override ---------------------------------------------------------------
    _r(
        "ignore_previous",
        "instruction_override",
        0.9,
        rf"\b{_IGNORE_VERB}\b[^.!?\n]{{0,40}}?\b{_PRIOR}\b[^.!?\n]{{0,30}}?\b{_DIRECTIVE}",
    ),
    _r(
        "ignore_above",
        "instruction_override",
        0.8,
        rf"\b{_IGNORE_VERB}\s+(?:about\s+)?(?:all\s+)?(?:of\s+)?(?:the\s+|that\s+|this\s+)?(?:above|before|preceding|foregoing|everything(?=\s*(?:$|[.!,;:)\n]|(?:you|i|that|above|before|previously|so far|else|and)\b)))\b",
    ),
    _r(
        "regardless_of_instructions",
        "instruction_override",
        0.8,
        r"\b(?:regardless|irrespective) of\s+(?:any\s+|all\s+|your\s+|the\s+|previous\s+|prior\s+)+(?:instructions?|tasks?|rules?|guidelines?|directives?|restrictions?)",
    ),
    _r(
        "do_not_follow",
        "instruction_override",
        0.85,
        r"\b(?:do not|don't|stop|no longer|never)\s+(?:follow|obey|adhere to|comply with|listen to)\w*\s+(?:your|the|any|those|these|previous|prior|original|system)\b[^.!?\n]{0,20}\b(?:instructions?|rules?|guidelines?|directives?|prompts?)",
    ),
    _r(
        "new_instructions",
        "instruction_override",
        0.6,
        r"\b(?:new|updated|revised|real|actual|true|secret|hidden|additional|important)\s+(?:instructions?|task|objective|directives?|orders?|system prompt)\s*[:\-]",
    ),
    _r(
        "instead_of_task",
        "instruction_override",
        0.55,
        r"\b(?:instead of|rather than)\s+(?:following|doing|completing|answering|summari[sz]ing|translating)\b[^.!?\n]{0,30}\b(?:instructions?|task|request|question|text|document|email|article)",
    ),
    _r(
        "forget_that",
        "instruction_override",
        0.35,
        r"\b(?:forget|ignore|disregard|never mind)\s+(?:about\s+)?(?:that|this|it|those|these)\b\s*[,.;:!-]",
    ),
    _r("instead_question", "instruction_override", 0.3, r"\binstead\s*[?!.]?\s*$"),
    _r(
        "from_now_on",
        "instruction_override",
        0.35,
        r"\bfrom now on\b[^.!?\n]{0,30}\b(?:you (?:are|will|must|shall|have to)|respond|answer|act|reply|only|ignore)\b",
    ),
    # -- role hijack / persona jailbreaks ---------------------------------------------------
    _r(
        "dan_persona",
        "role_hijack",
        0.9,
        r"\bdo anything now\b|\bdan\s+(?:mode|prompt|jailbreak)|\b(?:act|pretend|role-?play)\s+as\s+(?:a\s+)?dan\b|\bdeveloper mode (?:enabled|output)|\bjailbr(?:ea|o)k(?:en)?\s+(?:mode|version|ai|chatbot|persona)",
    ),
    _r("persona_name", "role_hijack", 0.45, r"\b(?:DAN|STAN|DUDE|AIM|UCAR|BetterDAN|AntiGPT|EvilBOT|DevMode)\b", 0),
    _r(
        "no_guardrails_persona",
        "role_hijack",
        0.8,
        rf"\b(?:no|without|free (?:of|from)|not (?:bound|restricted|limited|constrained|governed) by|broken free of|freed from|liberated from|(?:do not|don't|doesn't|does not|never|won't|will not)\s+(?:have to\s+|need to\s+)?(?:abide by|follow|adhere to|care about|have|obey|respect|be bound by))\b[^.\n]{{0,25}}?\b(?:ethic\w*|moral\w*|safety|content|openai|anthropic|usual|typical|programming|any|rules|legal)\b[^.\n]{{0,20}}?\b{_GUARD_NOUN}",
    ),
    _r(
        "unfiltered_persona",
        "role_hijack",
        0.6,
        r"\b(?:unfiltered|uncensored|amoral|unrestricted|unchained|unshackled|unaligned|no-?limits?)\b[^.\n]{0,25}\b(?:ai|assistant|chatbot|bot|model|version|mode|persona|character|response)",
    ),
    _r(
        "you_are_now",
        "role_hijack",
        0.55,
        r"\byou are (?:now|no longer)\b[^.!?\n]{0,40}\b(?:free|freed|unrestricted|unfiltered|jailbroken|unlocked|not bound|without (?:any )?(?:limits|restrictions|rules)|a different ai|another ai|evil|bound by)",
    ),
    _r(
        "immerse_role",
        "role_hijack",
        0.65,
        r"\b(?:immerse yourself in(?:to)? the role of (?:another|a different|an?) (?:ai|model|chatbot|assistant)|you are about to (?:become|immerse yourself)|never break character)",
    ),
    # -- refusal suppression and forced compliance ------------------------------------------
    _r(
        "never_refuse",
        "refusal_suppression",
        0.7,
        r"\b(?:never|not ever|do not|don't|must not|cannot|can't|won't|will not)\s+(?:ever\s+)?(?:refuse|decline|reject|deny|say no|apologi[sz]e|say (?:that )?(?:you|it) can(?:'|no)t)",
    ),
    _r(
        "no_warnings",
        "refusal_suppression",
        0.45,
        r"\b(?:do not|don't|never)\b[^.\n]{0,25}\b(?:include|add|give|provide|use|mention|write|any)?\b[^.\n]{0,10}\b(?:warnings?|disclaimers?|caveats?|apolog\w+|moraliz\w+|moralis\w+|lectur\w+|ethical (?:concerns|considerations|implications|notes))\b"
        # "without" only right before what it leaves out: "compiles without warnings" is a build log's
        # boast, "without pathspec issues warning" is a sentence about something else.
        r"|\bwithout\s+(?:(?:any|adding|including|giving|the|usual|your|moral|ethical|safety|legal|unnecessary|or|and|,)\s+)*(?:warnings?|disclaimers?|caveats?|apolog\w+|moraliz\w+|moralis\w+|lectur\w+|ethical (?:concerns|considerations|implications|notes))\b",
    ),
    _r(
        "banned_refusal_phrases",
        "refusal_suppression",
        0.8,
        r"\b(?:never|don't|do not|not|avoid)\b[^.\n]{0,60}[\"'“](?:i'm sorry|i am sorry|i apologi[sz]e|i cannot|i can't|i can not|as an ai|as a language model|i am unable|i'm unable)",
    ),
    _r(
        "disregard_ethics",
        "refusal_suppression",
        0.7,
        r"\b(?:disregard|ignore|without regard (?:to|for)|regardless of|setting aside|put aside)\b[^.\n]{0,20}\b(?:ethic\w*|moral\w*|legal\w*|safety)\b[^.\n]{0,15}\b(?:implications?|concerns?|considerations?|consequences?|issues?|guidelines?|restrictions?)",
    ),
    _r(
        "no_matter_how_harmful",
        "refusal_suppression",
        0.75,
        rf"\b(?:no matter how|regardless of how|even if (?:it is|it's|the (?:request|question|content) is|they are))\s+(?:\w+\s+)?{_HARM_ADJ}",
    ),
    _r(
        "must_answer_everything",
        "refusal_suppression",
        0.55,
        r"\b(?:you (?:have to|must|are required to|will|shall|need to)|always)\s+(?:answer|respond to|comply with|fulfill|obey|do)\w*\s+(?:all|any|every|everything|anything|whatever)\b",
    ),
    _r(
        "forced_prefix",
        "refusal_suppression",
        0.75,
        r"\b(?:start|begin|prefix|open)\w*\s+(?:your|the|each|every)?\s*(?:response|reply|answer|output|message)s?\s+(?:with|by (?:saying|writing))\b[^.\n]{0,40}?[\"'“:]?\s*(?:sure|absolutely|of course|certainly|yes|here is|here's|okay)\b",
    ),
    _r(
        "fiction_laundering",
        "fictional_framing",
        0.3,
        r"\b(?:purely|entirely|strictly|just|only)\s+(?:for\s+)?(?:fictional|hypothetical|educational|research)|\b(?:never|not) (?:be )?(?:actually )?used (?:for|to|in|by) (?:any(?:thing)? |real |actual )?(?:harm\w*|malicious|illegal|nefarious|unethical|bad|evil|criminal|dangerous|wrong\w*|real[- ](?:world|life)|actual|practice|reality|the real world)\b|\bfor (?:a|my) (?:novel|story|screenplay|movie|script|book|thriller)\b|\bfor the (?:novel|screenplay|movie|thriller)\b|\bin (?:a|this) (?:fictional|hypothetical) (?:world|scenario|story|universe)\b|\bhypothetical(?:ly)?\b|\bfictional\b",
    ),
    _r(
        "roleplay_frame",
        "roleplay_frame",
        0.2,
        r"^\s*(?:you are (?:a|an|the)\b|imagine (?:you are|you're|that you|yourself)|pretend (?:you|to be)|let's (?:play|pretend|imagine)|in this (?:role|scenario|story)|as an? \w+ (?:expert|researcher|writer|journalist|consultant))",
    ),
    _r(
        "evasion_intent",
        "harmful_intent",
        0.35,
        r"\bwithout (?:getting caught|being (?:caught|detected|noticed|traced))|\b(?:undetectable|untraceable)\b|\bevad(?:e|ing) (?:the )?(?:police|law enforcement|detection|authorities|taxes)\b|\bcover (?:my|your|their|his|her) tracks\b",
    ),
    _r(
        "hypothetical_disclaimer",
        "fictional_framing",
        0.3,
        r"\b(?:purely|entirely|strictly|just|only)?\s*(?:hypothetical(?:ly)?|fictional(?:ly)?|for (?:educational|research|academic) (?:and research )?purposes?)\b[^.\n]{0,60}\b(?:not|never|won't)\b[^.\n]{0,25}\b(?:used|real|actually|harm|intend)",
    ),
    # -- system prompt / secret exfiltration ------------------------------------------------
    _r(
        "reveal_system_prompt",
        "prompt_exfiltration",
        0.75,
        r"\b(?:reveal|show|print|repeat|output|display|leak|tell|give|share|disclose|dump|spell|write out|recite|expose|what(?:'s| is| are| were))\b[^.?!\n]{0,25}?\b(?:your|the|ur|its|these|those)\s+(?:[\w-]+\s+){0,4}?(?:system prompt|system message|initial prompt|initial instructions|hidden (?:prompt|instructions|rules)|original (?:prompt|instructions)|pre-?prompt|developer (?:message|instructions)|(?:secret|confidential|hidden) (?:key|code|password|word|phrase|string|token|value|instructions|data|information)|instructions (?:above|you were given|you received|you have been given|you've been given)|(?:setup|set-up|configuration) (?:text|instructions|prompt))",
    ),
    _r(
        "repeat_above",
        "prompt_exfiltration",
        0.75,
        r"\b(?:repeat|print|output|reveal|copy|echo|return|show|display|write out|quote)\s+(?:back\s+)?(?:all\s+|everything\s+|the\s+)?(?:words|text|content|instructions|everything|all|prompt|messages?)?\s*(?:[\w-]+\s+){0,3}?(?:(?<!\bas )above(?!\s+(?:the|a|an|each|every|its|their|his|her)\s|\s+[\d$€£]|\s+(?:as needed|as necessary|for (?:each|every|all|the other)|until|steps?|procedure|process|commands?)\b)|before this|verbatim|word for word|so far|preceding)",
    ),
    _r(
        "ask_password",
        "prompt_exfiltration",
        0.45,
        r"\b(?:what(?:'s| is)|tell me|give me|share|reveal|confirm|provide|need|say|write|spell)\b[^.?!\n]{0,25}\b(?:the|your|ur|this|our)\s+(?:\w+\s+)?(?:password|passphrase|passcode|secret key|secret code|secret word|api key|access code|pin)\b",
    ),
    # -- mode switch / authority claims -----------------------------------------------------
    _r(
        "mode_tag",
        "mode_switch",
        0.7,
        r"(?<![A-Za-z])<\s*/?\s*(?:system|god|admin|administrator|developer|dev|sudo|root|override|debug|maintenance|jailbreak)\s*(?:mode|access|override)?\s*>",  # not Perl POD's B<root>
    ),
    _r(
        "enter_mode",
        "mode_switch",
        0.75,
        r"\b(?:enter\w*|activat\w*|enabl\w*|initiat\w*|switch\w*(?: to| into)?|now in|engag\w*|unlock\w*|turn\w* on)\b[^.\n]{0,20}\b(?:god|developer|dev|debug|maintenance|admin|administrator|root|sudo|override|unrestricted|unlocked|jailbreak|jailbroken|diagnostic|verification|emergency|dan|unfiltered|evil)\s+mode\b",
    ),
    _r(
        "override_mode",
        "mode_switch",
        0.6,
        r"\b(?:system|admin|law enforcement|developer|security|emergency|safety)\s+(?:override|bypass)\b|\boverride (?:mode|code|protocol)\b",
    ),
    _r(
        "authority_claim",
        "mode_switch",
        0.35,
        r"\b(?:i am|i'm)\s+(?:your|the|an?)\s+(?:\w+\s+)?(?:creator|developer|owner|administrator|admin|maintainer|operator|programmer|system administrator|god|boss|supervisor|manager|police officer|law enforcement officer|detective|federal agent|investigator|government official|president)\b|\bas\s+(?:your|the|an?)\s+(?:creator|developer|owner|administrator|admin|maintainer|operator|programmer|system administrator|god|boss|supervisor|manager|police officer|law enforcement officer|detective|federal agent|investigator|government official|president)\b|\bi am god\b",
    ),
    _r(
        "vendor_claim",
        "mode_switch",
        0.4,
        r"\bas an ai (?:developed|created|made|built|trained) by (?:openai|anthropic|google|meta)\b[^.\n]{0,40}\b(?:mode|reset|verify|audit|upgrade|i(?:'m| am))",
    ),
    # -- fake conversation / delimiter injection --------------------------------------------
    _r(
        "chat_template_tokens",
        "delimiter_injection",
        0.7,
        r"<\|im_start\|>|<\|im_end\|>|<\|system\|>|<\|assistant\|>|<\|user\|>|\[/?INST\]|<</?SYS>>|<\|endoftext\|>|<\|eot_id\|>|<\|start_header_id\|>",
        0,
    ),
    _r(
        "fake_system_header",
        "delimiter_injection",
        0.5,
        r"(?:^|\n)[ \t]{0,8}(?:#{1,4}[ \t]{0,4}|\[|<)?(?:system|new system prompt|system override|admin)(?:\]|>)?[ \t]{0,4}(?::|\n)[ \t\n]{0,8}\S",
    ),
    # -- indirect injection: instructions aimed at the assistant inside content -------------
    _r(
        "address_the_ai",
        "indirect_injection",
        0.55,
        r"\b(?:ai|assistant|agent|chatbot|language model|llm|gpt|claude|model)s?\s*[,:]\s*(?:you must|you should|you will|please|ignore|do not|don't|instead|now|when|always|never|call|use|run|delete|send|rate|forget)\b",
    ),
    _r(
        "hidden_instruction_marker",
        "indirect_injection",
        0.55,
        r"<!--[^>]{0,200}\b(?:(?:ignore|disregard)\b(?!\s+(?:[\w.-]+\s+){0,3}?(?:files?|director(?:y|ies)|lines?|fields?|errors?|warnings?|case|whitespace|entries|missing|if)\b)|say|respond|reply|tell|instructions?|assistant|ai|llm|chatbot)\b|\b(?:important|attention|note|message|instructions?)\s*(?:to|for)\s+(?:the\s+|all\s+|any\s+)?(?:ai|assistant|model|llm|agent|chatbot)s?\b|\battention\s*,?\s*(?:ai|assistant|language model|llm|agent|chatbot)s?\s*[:,!]",
    ),
    _r(
        "state_instead",
        "indirect_injection",
        0.5,
        r"\b(?:ignore|disregard)\w*\s+(?:the\s+)?(?:actual|real|given|provided|original|above|previous|preceding|whole|entire)\s+"
        r"(?:webpage|page|document|article|text|email|resume|function|code|data|table|paper|file|content|input|question)\b"
        r"|\b(?:ignore|disregard)\s+(?:the|this)\s+(?:webpage|page|document|article|text|email|resume|data|file|content|input|question)\s*(?:,|and)\s*(?:instead\s+|just\s+|only\s+|simply\s+)?(?:say|write|print|output|respond|reply|tell|answer)\b",
    ),
    _r(
        "output_steering",
        "indirect_injection",
        0.35,
        r"\b(?:let's|let us|we might|we could|we should|i suggest you(?: to)?)\s+(?:just\s+)?(?:say|state|claim|declare|print|output|admit|assume|consider the output as|report)\b|\byou (?:must|should) (?:say|state|claim|declare|admit|print|output)\b|\b(?:please\s+)?(?:say|state|print|output|write|repeat)\s+the following\s*:",
    ),
    _r(
        "shouted_override",
        "mode_switch",
        0.6,
        r"<\s*[A-Z][A-Z _-]{0,30}\b(?:MODE|OVERRIDE|ADMIN|SYSTEM)\b[A-Z _-]{0,20}>|\b[A-Z]{3,}(?: [A-Z]{3,}){0,3} OVERRIDE\b",
        0,
    ),
    _r(
        "hypothetical_override",
        "indirect_injection",
        0.45,
        r"\b(?:hypothetical|imagine|suppose|let's (?:imagine|consider|pretend))\b[^.\n]{0,60}\b(?:we|you)\s+(?:ignore|disregard|were to ignore)\b",
    ),
    # -- general moves seen in indirect and extraction attacks -------------------------------
    _r(
        "rules_revoked",
        "instruction_override",
        0.8,
        r"\b(?:previous|prior|above|earlier|original|old|initial|all|your)\s+(?:[\w-]+\s+){0,2}?(?:rules|instructions|guidelines|directives|restrictions|prompts?)\s+(?:(?:you were given|you received)\s+)?(?:(?:earlier|before)\s+)?(?:no longer (?:apply|matter|count)|(?:are|were|is|have been)\s+(?:now\s+)?(?:void|obsolete|cancell?ed|revoked|outdated|invalid|no longer valid|lifted|suspended))"
        r"|\boverrides?\s+(?:anything|everything|all)\b[^.\n]{0,20}\b(?:before|above|previous|earlier|said|else)",
    ),
    _r(
        "ignore_user_request",
        "instruction_override",
        0.8,
        r"\b(?:ignore|disregard|forget|skip)\w*\s+(?:what(?:ever)?\s+the user\s+(?:asked|said|wants|requested|wrote|typed)|the user'?s?\s+(?:request|question|instructions?|message|task|prompt))",
    ),
    _r(
        "real_task",
        "instruction_override",
        0.5,
        r"\b(?:your|the)\s+(?:real|actual|true|new|only)\s+(?:task|instructions?|objective|goal|job)\b[^.\n]{0,40}?\bis (?:to|now)\b",
    ),
    _r(
        "do_x_instead",
        "indirect_injection",
        0.6,
        r"\b(?:do not|don't|never)\s+(?:summari[sz]e|translate|answer|analy[sz]e|review|classify|describe|process)\b[^.\n]{0,40}[.,;:]?\s*(?:instead|rather)\b",
    ),
    _r(
        "when_processing_say",
        "indirect_injection",
        0.55,
        r"\bwhen (?:you(?:'re| are)?\s+)?(?:asked (?:about|to summari[sz]e)|summari[sz]ing|processing|reading|reviewing|analy[sz]ing|evaluating)\b[^.\n]{0,40}?\b(?:this|the)\s+(?:document|email|e-mail|page|article|product|file|resume|cv|candidate|review|text|website|message)\b[^.\n]{0,60}?\b(?:say|tell|respond|reply|state|recommend|rate|mention|claim|output|write)\b",
    ),
    _r(
        "claimed_admin_voice",
        "mode_switch",
        0.45,
        r"\bthis is (?:the|your) (?:admin|administrator|developer|owner|operator|system|creator)\b",
    ),
    _r(
        "say_access_granted",
        "prompt_exfiltration",
        0.6,
        r"\b(?:say|respond|reply|answer|output|print|begin|start|prefix|write)\w*\b[^.\n]{0,40}\baccess granted\b",
    ),
    _r(
        "instructions_given_at_start",
        "prompt_exfiltration",
        0.55,
        r"\b(?:instructions|rules|prompt|guidelines)\s+(?:you were|you've been|you have been)\s+given\b[^.?\n]{0,40}\b(?:start|beginning|top)\b|\b(?:what|which)\s+(?:were|are)\s+(?:the|your)\s+(?:exact\s+|original\s+|initial\s+|first\s+)?(?:instructions|rules)\b",
    ),
    # Acting on tools or sending data out: addressed to an agent from inside content (only read in
    # tool results, documents and tool schemas: a user asking for a tool call is ordinary).
    _r(
        "tool_directive",
        "tool_directive",
        0.5,
        r"\b(?:call|use|invoke|run|execute|trigger)\s+(?:the\s+|your\s+)?[\w.-]{2,40}\s+(?:tool|function|plugin|command)\b[^.\n]{0,40}?\b(?:to|with|now|and)\b"
        r"|\b(?:curl|wget)\s+\S+\s*\|\s*(?:sudo\s+)?(?:ba|z)?sh\b"
        r"|(?:~/\.ssh|id_rsa|/etc/(?:passwd|shadow)|\.aws/credentials|\.env\b)",
    ),
    _r(
        "send_data_out",
        "tool_directive",
        0.5,
        r"\b(?:send|e-?mail|forward|post|upload|append|transfer|wire|exfiltrate|leak)\b[^.\n]{0,80}?\b(?:to|at|into)\s+(?:https?://|[\w.+-]+@[\w-]+\.\w+|(?:bank )?account (?:number )?\d)",
    ),
    _r(
        "bracket_system_tag",
        "delimiter_injection",
        0.5,
        r"(?:^|\n)[ \t]{0,8}(?:\[(?:system|admin|developer|sys)\]|<(?:system|admin|developer)>)[ \t]{0,4}\S",
    ),
    # -- obfuscation requests ---------------------------------------------------------------
    _r(
        "decode_and_follow",
        "obfuscation",
        0.45,
        r"\b(?:decode|decrypt|decipher|translate|convert|unscramble|reverse)\b[^.\n]{0,40}\b(?:base64|rot-?13|caesar|cipher|morse|binary|hex(?:adecimal)?|leetspeak|pig latin|encoded|backwards)\b[^.\n]{0,60}\b(?:and|then)\s+(?:follow|execute|do|obey|answer|respond|act|tell me what it says|carry out|perform)",
    ),
    _r(
        "encode_the_secret",
        "obfuscation",
        0.45,
        r"\b(?:encode|write|spell|say|give|provide|tell|translate)\w*\b[^.\n]{0,40}\b(?:password|secret|passphrase|key|instructions|prompt|email address|birth|initials)\b[^.\n]{0,40}\b(?:base64|rot-?13|hex|binary|morse|leetspeak|pig latin|reverse(?:d)? order|backwards|acrostic|each (?:digit|letter|character)|first (?:three|two|\w+) letters|one letter at a time|separated by)",
    ),
    _r(
        "split_payload",
        "obfuscation",
        0.4,
        r"\b(?:part|string|variable|segment)\s*\w{0,3}\s*(?:is|=)\s*[\"'][^\"']{1,80}[\"'][^.\n]{0,40}\b(?:part|string|variable|segment)\s*\w{0,3}\s*(?:is|=)\s*[\"']|\b(?:combine|concatenate|join)\b[^.\n]{0,40}\b(?:parts?|strings?|[a-z]\s*\+\s*[a-z])",
    ),
)

# Instruction overrides in the languages attackers most often translate them into. Translation is
# a known way past English-only filters; these are the literal equivalents of "ignore (all) the
# previous instructions", not a memory of any corpus.
_MULTILINGUAL_PARTS = [
    r"ignor(?:e|a|á|iere|ieren|ez|ar|ate|ieren sie)\b[^.\n]{0,30}\b(?:instrucciones|instructions|anweisungen|istruzioni|instruções|instrucoes|consignes|directives|indicaciones|vorgaben|regeln|règles|reglas|regole|regras)",
    r"(?:vergiss|vergessen sie|olvida|oublie|oubliez|dimentica|esqueça|esqueca)\b[^.\n]{0,30}\b(?:anweisungen|instrucciones|instructions|istruzioni|instruções|regeln|reglas|règles|regole|regras|alles)",
    # word starts: "неправильным" (wrong) holds "правил" (rules)
    r"\b(?:игнорир\w*|забудь\w*|не обращай\w*)[^.\n]{0,30}\b(?:инструкци\w*|указани\w*|правил\w*)",
    r"(?:忽略|无视|無視|忘记|忘記)[^。\n]{0,15}(?:指令|指示|说明|說明|规则|規則|提示)",
    r"(?:以前|前)の[^。\n]{0,10}(?:指示|命令|ルール)[^。\n]{0,10}(?:無視|忘れ)|指示を無視|無視して",
    r"(?:이전|앞의|위의)[^.\n]{0,10}(?:지시|명령|지침)[^.\n]{0,15}(?:무시|잊)",
    r"(?:تجاهل|انس)[^.\n]{0,30}(?:التعليمات|الأوامر|التوجيهات)",
    r"(?:पिछले|पहले के)[^.\n]{0,20}(?:निर्देश\w*)[^.\n]{0,20}(?:अनदेखी|अनदेखा|भूल)",
    r"(?:αγνοήστε|αγνόησε|ξεχάστε)[^.\n]{0,30}(?:οδηγίες|εντολές)",
    r"(?:zignoruj|zapomnij)[^.\n]{0,30}(?:instrukcje|polecenia)",
    r"(?:negeer|vergeet)[^.\n]{0,30}(?:instructies|aanwijzingen)",
    r"(?:önceki|tüm)[^.\n]{0,20}(?:talimatları|komutları)[^.\n]{0,15}(?:yoksay|unut|görmezden)",
]
_MULTILINGUAL_OVERRIDE = re.compile("|".join(_MULTILINGUAL_PARTS), _I)

# "Show your system prompt" in other languages: the system prompt named, with a show/print verb
# within a few characters either side (literal translations written for this project).
_ML_PROMPT_NOUN = (
    r"(?:系统提示词?|系統提示詞?|系统指令|系統指令|初始指令|システムプロンプト|システム・プロンプト|初期指示|시스템\s*프롬프트|초기\s*지시|"
    r"системн\w*\s+(?:промпт\w*|подсказк\w*|инструкци\w*)|исходн\w*\s+инструкци\w*|"
    r"prompt\s+(?:de|del)\s+sistema|instrucciones\s+(?:iniciales|originales|del sistema)|prompt\s+syst[eè]me|instructions\s+(?:initiales|d'origine)|"
    r"system-?prompt|systemanweisung\w*|موجه\s+النظام|تعليمات\s+النظام|التعليمات\s+(?:الأصلية|الأولية)|सिस्टम\s+प्रॉम्प्ट|मूल\s+निर्देश)"
)
_ML_SHOW_VERB = (
    r"(?:打印|输出|輸出|显示|顯示|告诉|告訴|给我|給我|展示|列出|复述|重复|表示|出力|教えて|見せ|書き出|そのまま|출력|보여|알려|그대로|"
    r"покажи|выведи|напиши|расскажи|повтори|раскрой|muestra|muéstrame|imprime|dime|revela|repite|affiche|montre|répète|révèle|"
    r"zeig|gib|wiederhole|اعرض|اكتب|أظهر|اطبع|كرر|दिखा|बता|लिख|दोहरा)"
)
_ML_REVEAL = re.compile(
    rf"{_ML_PROMPT_NOUN}.{{0,24}}{_ML_SHOW_VERB}|{_ML_SHOW_VERB}.{{0,24}}{_ML_PROMPT_NOUN}", re.IGNORECASE | re.DOTALL
)
_ML_REVEAL_GATE = (
    "提示",
    "指令",
    "プロンプト",
    "初期指示",
    "프롬프트",
    "지시",
    "промпт",
    "подсказк",
    "инструкци",
    "sistema",
    "système",
    "systeme",
    "initiales",
    "origine",
    "system",
    "النظام",
    "التعليمات",
    "प्रॉम्प्ट",
    "निर्देश",
)

# The same branches one by one on the lower-cased text, each run only when its verb is present: one
# alternation of twelve scripts is tried at every position of a long prompt (~0.3-0.8 ms).
_MULTILINGUAL_BRANCHES: tuple[tuple[tuple[str, ...], re.Pattern[str]], ...] = tuple(
    (gate, re.compile(branch))
    for gate, branch in zip(
        (
            ("ignor",),
            ("vergiss", "vergessen", "olvida", "oubli", "dimentica", "esque"),
            ("игнорир", "забудь", "не обращай"),
            ("忽略", "无视", "無視", "忘记", "忘記"),
            ("無視", "忘れ"),
            ("무시", "잊"),
            ("تجاهل", "انس"),
            ("अनदेख", "भूल"),
            ("αγνο", "αγνό", "ξεχάστε"),
            ("zignoruj", "zapomnij"),
            ("negeer", "vergeet"),
            ("yoksay", "unut", "görmezden"),
        ),
        _MULTILINGUAL_PARTS,
        strict=True,
    )
)

# Normalisation findings: each is a weak signal on its own (they have legitimate uses), strong
# together with a rule hit.
FLAG_WEIGHTS: dict[str, float] = {
    "unicode_tags": 0.8,  # invisible ASCII copies have no legitimate use in a prompt
    "bidi": 0.45,
    "zero_width": 0.35,
    "homoglyph": 0.45,
    "variation_selectors": 0.5,
    "compatibility_forms": 0.15,
    "base64": 0.3,
    "hex": 0.25,
    "binary": 0.25,
    "rot13": 0.35,
    "percent": 0.2,
}
# A phrase of one to four tokens repeated ten or more times in a row ("poem poem poem ..."), found in
# linear time on token ids. (It used to be the regex ``(\b\S+(?:\s+\S+){0,3}?)(?:\s+\1){9,}``,
# whose backtracking took seconds on crafted input.)
REPEAT_MIN = 10
REPEAT_MAX_PHRASE = 4


def repeated_phrase(text: str) -> str | None:
    """The first phrase of <= ``REPEAT_MAX_PHRASE`` tokens repeated >= ``REPEAT_MIN`` times in a row."""
    tokens = text.lower().split()
    if len(tokens) < REPEAT_MIN:
        return None
    index: dict[str, int] = {}
    ids = np.fromiter((index.setdefault(t, len(index)) for t in tokens), dtype=np.int64, count=len(tokens))
    if len(index) == len(tokens):
        return None
    for k in range(1, REPEAT_MAX_PHRASE + 1):
        need = (REPEAT_MIN - 1) * k  # positions i with token i == token i+k inside the repeated run
        same = ids[k:] == ids[:-k]
        if len(same) < need or not same.any():
            continue
        # longest run of True: boundaries of runs from the padded difference
        padded = np.concatenate(([0], same.astype(np.int8), [0]))
        edges = np.flatnonzero(np.diff(padded))
        starts, ends = edges[::2], edges[1::2]
        long_runs = np.flatnonzero(ends - starts >= need)
        if len(long_runs):
            i = int(starts[long_runs[0]])
            return " ".join(tokens[i : i + k * REPEAT_MIN])
    return None


def _gate_automaton() -> ahocorasick.Automaton:
    """Every gate word of every rule in one Aho-Corasick automaton: one linear pass over a text says
    which gates it holds, instead of a substring search per gate word per rule."""
    automaton = ahocorasick.Automaton()
    words = {g for rule in RULES for g in rule.gate} | {g for gate, _ in _MULTILINGUAL_BRANCHES for g in gate}
    for word in words | set(_ML_REVEAL_GATE):
        automaton.add_word(word, word)
    automaton.make_automaton()
    return automaton


_GATES = _gate_automaton()
_RULE_GATES = tuple(frozenset(rule.gate) for rule in RULES)
_BRANCH_GATES = tuple(frozenset(gate) for gate, _ in _MULTILINGUAL_BRANCHES)
_REVEAL_GATE = frozenset(_ML_REVEAL_GATE)


def _present_gates(lowered: str) -> set[str]:
    return {word for _, word in _GATES.iter(lowered)}


def scan_text(text: str) -> list[RuleHit]:
    hits: list[RuleHit] = []
    lowered = text.lower()
    aligned = len(lowered) == len(text)  # lower() can lengthen a few letters ("İ")
    present = _present_gates(lowered)
    for rule, gate in zip(RULES, _RULE_GATES):
        if gate and gate.isdisjoint(present):
            continue
        m = rule.pattern.search(lowered if rule.on_lowered else text)
        if m:
            found = text[m.start() : m.end()] if rule.on_lowered and aligned else m.group()
            hits.append(RuleHit(rule.name, rule.family, rule.weight, _excerpt(found)))
    m = next(
        (
            hit
            for gate, (_, branch) in zip(_BRANCH_GATES, _MULTILINGUAL_BRANCHES)
            if not (gate and gate.isdisjoint(present)) and (hit := branch.search(lowered))
        ),
        None,
    )
    if m:
        found = text[m.start() : m.end()] if aligned else m.group()
        hits.append(RuleHit("ignore_previous_translated", "instruction_override", 0.85, _excerpt(found)))
    if not (_REVEAL_GATE and _REVEAL_GATE.isdisjoint(present)):
        reveal = _ML_REVEAL.search(lowered)
        if reveal:
            found = text[reveal.start() : reveal.end()] if aligned else reveal.group()
            hits.append(RuleHit("reveal_system_prompt_translated", "prompt_exfiltration", 0.7, _excerpt(found)))
    phrase = repeated_phrase(text)
    if phrase:
        hits.append(RuleHit("repeated_tokens", "repetition", 0.4, _excerpt(phrase)))
    return hits


def scan(normalized: Normalized) -> list[RuleHit]:
    """Rule hits over the canonical text, its decoded payloads and its leetspeak-folded form."""
    hits = scan_text(normalized.text)
    for d in normalized.decoded:
        for h in scan_text(d.text):
            hits.append(RuleHit(h.rule, h.family, h.weight, f"[{d.encoding}] {h.excerpt}"))
    if normalized.leet is not None:
        for h in scan_text(normalized.leet):
            hits.append(RuleHit(h.rule, h.family, h.weight, f"[leet] {h.excerpt}"))
    for flag in sorted(normalized.flags):
        w = FLAG_WEIGHTS.get(flag)
        if w:
            hits.append(RuleHit(f"normalization:{flag}", "evasion", w, flag))
    return hits


def combine(hits: Iterable[RuleHit]) -> float:
    """Noisy-or over families (strongest hit per family)."""
    best: dict[str, float] = {}
    for h in hits:
        best[h.family] = max(best.get(h.family, 0.0), h.weight)
    miss = 1.0
    for w in best.values():
        miss *= 1.0 - w
    return 1.0 - miss


def _excerpt(s: str, n: int = 80) -> str:
    s = " ".join(s.split())
    return s if len(s) <= n else s[: n - 1] + "…"


@lru_cache(maxsize=1)
def rule_names() -> tuple[str, ...]:
    return tuple(r.name for r in RULES) + ("ignore_previous_translated", "reveal_system_prompt_translated", "repeated_tokens")
