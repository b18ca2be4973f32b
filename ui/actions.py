"""What an admin can change from the dashboard. Each action re-checks the session's role first
(:func:`ui.auth.require_admin`: a hidden button is not a permission check), runs in one database
transaction with its audit entry, and bumps the views' revision so every page shows the change.

Experiments go through intelligence.enhance.manage, verdict confirmations through
intelligence.anomaly.store, keys through intelligence.keys.store and policies through
intelligence.policy.store: the dashboard owns no business rules of its own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from intelligence.access import Principal
from ui import auth, data

T = TypeVar("T")
OPERATOR_ACTION = "operator_action"  # audit kind of dashboard actions that have no kind of their own


def _admin_tx(who: Principal | None, fn: Callable[[Any, str], Awaitable[T]]) -> T:
    current = auth.require_admin(who)
    actor = auth.actor(current)
    try:
        return data.runner().transaction(lambda conn: fn(conn, actor))
    finally:
        data.bump_revision()


# ---------------------------------------------------------------------------------------------
# alerts and verdicts


def acknowledge_event(who: Principal | None, event_id: int) -> bool:
    """Mark an event seen; False when it was already acknowledged (nothing changes)."""

    async def go(conn, actor: str) -> bool:
        from intelligence.audit import AuditLog
        from intelligence.dashboard.alerts import AlertRepository

        done = await AlertRepository(conn).acknowledge(int(event_id), actor)
        if done is None:
            return False
        await AuditLog().append(
            conn,
            OPERATOR_ACTION,
            f"event:{done.id}",
            {"action": "acknowledge", "kind": done.kind, "title": done.title},
            actor,
        )
        return True

    return _admin_tx(who, go)


def confirm_verdict(who: Principal | None, verdict_id: int, label: str) -> None:
    """An operator's ground truth for a verdict: ``attack`` or ``false_positive`` (remembered for next time)."""
    if label not in ("attack", "false_positive"):
        raise ValueError("label must be attack or false_positive")

    async def go(conn, actor: str) -> None:
        from intelligence.anomaly.store import confirm_verdict as confirm

        await confirm(conn, int(verdict_id), label, actor=actor)

    _admin_tx(who, go)


def disable_attack(who: Principal | None, attack_id: int, reason: str = "") -> bool:
    """Take a learned attack out of the inline detector's memory (audited); False when it was already out."""

    async def go(conn, actor: str) -> bool:
        from intelligence.attacks.store import disable_attack as disable

        _, changed = await disable(conn, int(attack_id), actor=actor, reason=reason or None)
        return changed

    return _admin_tx(who, go)


# ---------------------------------------------------------------------------------------------
# gateway keys


def release_key(who: Principal | None, key_id: str) -> bool:
    """Lift a quarantine (audited as key_event release); False when the key was not quarantined."""

    async def go(conn, actor: str) -> bool:
        from intelligence.events import publish
        from intelligence.keys.store import release_key as release

        record, changed = await release(conn, key_id, actor=actor)
        if changed:
            await publish(
                conn,
                kind="quarantine",
                title=f"gateway key {record.name} ({record.id}) released",
                subject=record.id,
                detail={"action": "release", "actor": actor},
                source="dashboard",
            )
        return changed

    return _admin_tx(who, go)


@dataclass(frozen=True)
class CreatedKeyView:
    key: str  # shown once, never stored
    id: str
    name: str
    prefix: str


def create_key(
    who: Principal | None,
    name: str,
    *,
    models: str = "",
    providers: str = "",
    expires: str = "",
    rpm: int | None = None,
    tpd: int | None = None,
) -> CreatedKeyView:
    """A new gateway key; the returned ``key`` is the only copy (the database keeps a hash)."""
    from intelligence.keys.material import Budgets, parse_expiry, split_list
    from intelligence.keys.store import NewKey
    from intelligence.keys.store import create_key as create

    spec = NewKey(
        name=name.strip(),
        models=split_list(models),
        providers=split_list(providers),
        expires_at=parse_expiry(expires) if expires.strip() else None,
        budgets=Budgets(rpm=rpm or None, tpd=tpd or None),
    )

    async def go(conn, actor: str) -> CreatedKeyView:
        created = await create(conn, spec, actor=actor)
        return CreatedKeyView(key=created.key, id=created.record.id, name=created.record.name, prefix=created.record.prefix)

    return _admin_tx(who, go)


def revoke_key(who: Principal | None, key_id: str, reason: str = "") -> bool:
    async def go(conn, actor: str) -> bool:
        from intelligence.keys.store import revoke_key as revoke

        _, changed = await revoke(conn, key_id, actor=actor, reason=reason or None)
        return changed

    return _admin_tx(who, go)


# ---------------------------------------------------------------------------------------------
# policies


@dataclass(frozen=True)
class PolicyCheck:
    ok: bool
    issues: list[str]
    diff: str  # unified diff against the stored version ("" when unchanged)


def check_policy(name: str, source: str) -> PolicyCheck:
    """Validate a policy text and diff it against the stored one (read-only: viewers may try this too)."""
    from intelligence.policy.errors import PolicyError
    from intelligence.policy.parse import validate
    from intelligence.policy.store import check_name, unified_diff

    issues: list[str] = []
    try:
        check_name(name)
    except PolicyError as exc:
        issues += [i.message for i in exc.issues]
    issues += [str(i) for i in validate(source, origin=f"db:{name}")]
    old = next((p["source"] for p in data.policies() if p["name"] == name), "")
    return PolicyCheck(ok=not issues, issues=issues, diff=unified_diff(old, source, name) if old != source else "")


def save_policy(who: Principal | None, name: str, source: str, *, enabled: bool = True) -> str:
    """Store a database policy (validated again by the store, audited with its diff); returns the diff."""

    async def go(conn, actor: str) -> str:
        from intelligence.policy.store import set_policy

        return (await set_policy(conn, name, source, actor=actor, enabled=enabled)).diff

    return _admin_tx(who, go)


def simple_rule_yaml(
    rule_id: str,
    *,
    action: str,
    models: str = "",
    keys: str = "",
    pii: str = "",
    secrets: str = "",
    injection_score: float | None = None,
    message: str = "",
    description: str = "",
    mode: str = "enforce",
) -> str:
    """One rule in the policy format, from the simple-rule form (validated like any other text)."""
    import yaml

    match: dict[str, Any] = {}
    for field_name, value in (("models", models), ("keys", keys), ("pii", pii), ("secrets", secrets)):
        items = [v.strip() for v in value.split(",") if v.strip()]
        if items:
            match[field_name] = items
    if injection_score is not None:
        match["injection_score"] = {"gte": float(injection_score)}
    actions: dict[str, Any]
    if action == "block":
        actions = {"block": {"message": message or "blocked by policy"} if message else True}
    elif action == "redact":
        kinds = match.get("pii", []) + match.get("secrets", [])
        if not kinds:
            raise ValueError("name the PII or secret kinds to redact")
        actions = {"redact": kinds}
    elif action == "alert":
        actions = {"alert": message or rule_id}
    else:
        raise ValueError(f"unknown action {action!r}")
    rule: dict[str, Any] = {"id": rule_id, "mode": mode}
    if description:
        rule["description"] = description
    rule["match"] = match
    rule["actions"] = actions
    return yaml.safe_dump({"rules": [rule]}, sort_keys=False)


def append_rule(source: str, rule_yaml: str) -> str:
    """Add the rule of ``rule_yaml`` (from :func:`simple_rule_yaml`) to a policy text, keeping its comments.

    The new item is indented like the policy's existing rule items; a policy without ``rules:`` gets it
    as a new top-level list.
    """
    import re

    item = rule_yaml.split("\n", 1)[1] if rule_yaml.startswith("rules:") else rule_yaml  # "- id: ..." lines
    if not source.strip():
        return rule_yaml
    lines = source.rstrip("\n").split("\n")
    start = next((i for i, line in enumerate(lines) if re.match(r"^rules:\s*(#.*)?$", line)), None)
    if start is None:
        return source.rstrip("\n") + "\n" + rule_yaml
    indent = next((m.group(1) for line in lines[start + 1 :] if (m := re.match(r"^(\s*)- ", line))), "")
    # the rules block ends at the next top-level key
    end = next(
        (
            i
            for i in range(start + 1, len(lines))
            if lines[i] and not lines[i][0].isspace() and not lines[i].startswith("-") and not lines[i].startswith("#")
        ),
        len(lines),
    )
    added = [indent + line if line else line for line in item.rstrip("\n").split("\n")]
    return "\n".join(lines[:end] + added + lines[end:]) + "\n"


# ---------------------------------------------------------------------------------------------
# experiments (intelligence.enhance.manage)

EXPERIMENT_ACTIONS = ("pause", "resume", "promote", "rollback")


def start_experiment(
    who: Principal | None, enhancement_id: int, *, control_weight: float = 0.5, assign_by: str = "session"
) -> int:
    async def go(conn, actor: str) -> int:
        from intelligence.enhance import manage

        return await manage.start_experiment(
            conn, int(enhancement_id), actor=actor, control_weight=control_weight, assign_by=assign_by
        )

    return _admin_tx(who, go)


def experiment_action(who: Principal | None, experiment_id: int, action: str, reason: str = "") -> None:
    """pause | resume | promote | rollback one experiment (LookupError / ValueError from manage pass through)."""
    if action not in EXPERIMENT_ACTIONS:
        raise ValueError(f"action must be one of {EXPERIMENT_ACTIONS}")

    async def go(conn, actor: str) -> None:
        from intelligence.enhance import manage

        if action == "resume":
            await manage.resume_experiment(conn, int(experiment_id), actor=actor)
        else:
            fn = {"pause": manage.pause_experiment, "promote": manage.promote_experiment, "rollback": manage.rollback_experiment}[
                action
            ]
            await fn(conn, int(experiment_id), actor=actor, reason=reason)

    _admin_tx(who, go)
