from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Awaitable, Callable

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

# every store's tables join Base.metadata when their models are imported
import intelligence.anomaly.models
import intelligence.attacks.models
import intelligence.claude.models
import intelligence.enhance.models
import intelligence.events.models
import intelligence.jobs.cursors
import intelligence.store.replicas
import intelligence.throttle.models  # noqa: F401
from intelligence.store import migrate
from intelligence.store.engine import asyncpg_dsn, make_engine
from intelligence.store.models import Base

FreshDb = Callable[[], Awaitable[str]]
REQUEST_LOG_TABLES = {"exchanges", "sessions"}
INTELLIGENCE_TABLES = {
    "claude_calls",
    "enhancements",
    "experiments",
    "experiment_events",
    "anomaly_verdicts",
    "verdict_memory",
    "events",
    "job_cursors",
    "attack_memory",
    "policy_throttle_counts",
    "replica_heartbeats",
}


async def _tables(url: str) -> set[str]:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {r["tablename"] for r in rows}
    finally:
        await conn.close()


async def test_upgrade_on_empty_database_creates_schema_and_vector(fresh_db_url: FreshDb) -> None:
    url = await fresh_db_url()
    assert migrate.current(url) is None
    assert REQUEST_LOG_TABLES.isdisjoint(await _tables(url))

    migrate.upgrade(url)  # sync API called from inside a running loop

    assert migrate.current(url) == migrate.head()
    assert REQUEST_LOG_TABLES <= await _tables(url)
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        assert await conn.fetchval("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        indexes = {r["indexname"] for r in await conn.fetch("SELECT indexname FROM pg_indexes WHERE tablename='exchanges'")}
    finally:
        await conn.close()
    assert {
        "ix_exchanges_started_at",
        "ix_exchanges_session_started",
        "ix_exchanges_model_started",
        "ix_exchanges_provider_started",
        "ix_exchanges_status",
    } <= indexes


async def test_upgrade_is_idempotent_and_async_variant_works(fresh_db_url: FreshDb) -> None:
    url = await fresh_db_url()
    await migrate.upgrade_async(url)
    await migrate.upgrade_async(url)
    assert migrate.current(url) == migrate.head()


def test_upgrade_from_plain_sync_code(pg_url: str) -> None:
    # no running loop here: upgrade runs directly
    migrate.upgrade(pg_url)
    assert migrate.current(pg_url) == migrate.head()


async def test_concurrent_upgrades_in_one_process_serialise(fresh_db_url: FreshDb) -> None:
    url = await fresh_db_url()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            migrate.upgrade(url)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    await asyncio.to_thread(lambda: [t.join(60) for t in threads])
    assert errors == []
    assert migrate.current(url) == migrate.head()


async def test_concurrent_upgrades_from_several_processes(fresh_db_url: FreshDb) -> None:
    url = await fresh_db_url()
    code = "import sys; from intelligence.store.migrate import upgrade; upgrade(sys.argv[1])"
    procs = [
        await asyncio.create_subprocess_exec(sys.executable, "-c", code, url, stderr=asyncio.subprocess.PIPE) for _ in range(3)
    ]
    results = [await asyncio.wait_for(p.communicate(), 120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err.decode()[-2000:] for _, err in results]
    assert migrate.current(url) == migrate.head()


async def test_downgrade_to_base_drops_request_log(fresh_db_url: FreshDb) -> None:
    url = await fresh_db_url()
    migrate.upgrade(url, "0001_request_log")
    migrate.downgrade(url, "base")
    assert migrate.current(url) is None
    assert REQUEST_LOG_TABLES.isdisjoint(await _tables(url))


def _request_log_object(obj, name, type_, reflected, compare_to) -> bool:
    table = name if type_ == "table" else getattr(getattr(obj, "table", None), "name", None)
    return table in REQUEST_LOG_TABLES | INTELLIGENCE_TABLES


async def test_models_match_migrated_schema(pg_url: str) -> None:
    engine = make_engine(pg_url)

    def diff(sync_conn) -> list:
        ctx = MigrationContext.configure(
            sync_conn,
            opts={
                "compare_type": True,
                "compare_server_default": False,
                "include_object": _request_log_object,
            },
        )
        return compare_metadata(ctx, Base.metadata)

    try:
        async with engine.connect() as conn:
            differences = await conn.run_sync(diff)
    finally:
        await engine.dispose()
    # later revisions may add indexes of their own to these tables (reporting queries); every
    # column, and every index the models declare, must match
    assert [d for d in differences if not (isinstance(d, tuple) and d[0] == "remove_index")] == []


def test_current_requires_a_url_scheme_it_knows() -> None:
    with pytest.raises(ValueError):
        migrate.current("mysql://localhost/db")


# ----------------------------------------------------------- upgrade-from-previous with data, then back down
#
# docs/reliability.md ("Migrations"): every revision upgrades a database that holds rows written at the
# revision before it, and downgrades back to it with those rows still there. Downgrades are reversible for
# the schema; a downgrade drops the tables and columns its revision added, with their data (a restore
# decision, docs/operations.md), which this test checks too.


def _revisions() -> list[str]:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(migrate.alembic_config())
    return [rev.revision for rev in reversed(list(script.walk_revisions()))]


_TYPE_VALUES = {
    "text": "'r{n}'",
    "character varying": "'r{n}'",
    "integer": "{n}",
    "bigint": "{n}",
    "smallint": "{n}",
    "double precision": "0.5",
    "real": "0.5",
    "numeric": "0.5",
    "boolean": "false",
    "timestamp with time zone": "now()",
    "timestamp without time zone": "now()",
    "date": "current_date",
    "jsonb": "'{{}}'::jsonb",
    "json": "'{{}}'::json",
    "bytea": "'\\x00'::bytea",
    "uuid": "gen_random_uuid()",
    "inet": "'127.0.0.1'",
    "interval": "'1 second'",
    "ARRAY": "'{{}}'",
}

# Columns a generic value cannot satisfy: the audit chain takes only the entry that extends its head.
_OVERRIDES = {
    "audit_log": {
        "id": "(select last_id + 1 from audit_head where id = 1)",
        "prev_hash": "(select hash from audit_head where id = 1)",
    },
}


async def _fill(conn: asyncpg.Connection, n: int) -> dict[str, str]:
    """One new row in every table (parents before children, CHECK lists honoured); {table: why not} for the rest."""
    tables = [
        r["relname"]
        for r in await conn.fetch(
            "select c.relname from pg_class c join pg_namespace s on s.oid = c.relnamespace "
            "where s.nspname = 'public' and c.relkind in ('r', 'p') and c.relname <> 'alembic_version' "
            "and not c.relispartition order by c.relname"
        )
    ]
    fks = await conn.fetch(
        "select con.conrelid::regclass::text as child, con.confrelid::regclass::text as parent, "
        "a.attname as col, af.attname as pcol from pg_constraint con "
        "join pg_attribute a on a.attrelid = con.conrelid and a.attnum = con.conkey[1] "
        "join pg_attribute af on af.attrelid = con.confrelid and af.attnum = con.confkey[1] "
        "where con.contype = 'f' and con.connamespace = 'public'::regnamespace"
    )
    order = _parents_first(tables, [(r["child"], r["parent"]) for r in fks])
    skipped: dict[str, str] = {}
    for table in order:
        cols = await conn.fetch(
            "select a.attname, format_type(a.atttypid, a.atttypmod) as fmt, t.typname, t.typtype, a.attnotnull, "
            "a.atthasdef or a.attidentity <> '' or a.attgenerated <> '' as has_default, a.atttypmod "
            "from pg_attribute a join pg_type t on t.oid = a.atttypid "
            "where a.attrelid = $1::regclass and a.attnum > 0 and not a.attisdropped order by a.attnum",
            table,
        )
        checks = [
            r[0]
            for r in await conn.fetch(
                "select pg_get_constraintdef(oid) from pg_constraint where conrelid = $1::regclass and contype = 'c'", table
            )
        ]
        error = ""
        for fill_all in (False, True):  # required columns only; then every column (a CHECK may want more)
            names, values = [], []
            for c in cols:
                fk = next((f for f in fks if f["child"] == table and f["col"] == c["attname"]), None)
                if c["attname"] in _OVERRIDES.get(table, {}):
                    value = _OVERRIDES[table][c["attname"]]
                elif fk is not None:
                    value = f"(select {fk['pcol']} from {fk['parent']} order by 1 desc limit 1)"
                elif c["has_default"] or (not c["attnotnull"] and not fill_all):
                    continue
                else:
                    value = _value_for(c, checks, n)
                names.append(f'"{c["attname"]}"')
                values.append(value)
            columns = ", ".join(names)
            sql = (
                f'insert into "{table}" ({columns}) values ({", ".join(values)})'
                if names
                else f'insert into "{table}" default values'
            )
            try:
                async with conn.transaction():
                    await conn.execute(sql)
            except asyncpg.PostgresError as exc:
                error = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
            else:
                error = ""
                break
        if error:
            skipped[table] = error
    return skipped


def _value_for(col, checks: list[str], n: int) -> str:
    name = col["attname"]
    for check in checks:  # CHECK (col = ANY (ARRAY['a'::text, ...])) or (col IN (...)): its first allowed value
        if f"({name} = ANY" in check or f"{name} IN" in check or f"({name})::text = ANY" in check:
            import re

            literal = re.search(r"'([^']*)'", check)
            if literal:
                return f"'{literal.group(1)}'"
    if col["typname"] == "vector":
        dims = col["atttypmod"]
        return f"'[{','.join(['0.1'] * max(dims, 1))}]'"
    if col["typtype"] == "e":
        return f"(select enumlabel::text from pg_enum where enumtypid = '{col['fmt']}'::regtype limit 1)::{col['fmt']}"
    fmt = col["fmt"]
    base = "ARRAY" if fmt.endswith("[]") else fmt.split("(")[0]
    return _TYPE_VALUES.get(base, "'r{n}'").format(n=n)


def _parents_first(tables: list[str], edges: list[tuple[str, str]]) -> list[str]:
    order: list[str] = []
    pending = list(tables)
    while pending:
        for t in list(pending):
            if all(p not in pending or p == t for c, p in edges if c == t):
                order.append(t)
                pending.remove(t)
        if pending and all(any(p in pending and p != t for c, p in edges if c == t) for t in pending):
            order += pending  # a cycle: whatever order
            break
    return order


async def _counts(conn: asyncpg.Connection) -> dict[str, int]:
    tables = [
        r[0]
        for r in await conn.fetch(
            "select tablename from pg_tables where schemaname = 'public' and tablename <> 'alembic_version'"
        )
    ]
    return {t: await conn.fetchval(f'select count(*) from "{t}"') for t in tables}


async def test_every_revision_upgrades_and_downgrades_a_database_holding_data(fresh_db_url: FreshDb) -> None:
    url = await fresh_db_url()
    revisions = _revisions()
    assert revisions[-1] == migrate.head()
    seen_at: dict[str, dict[str, int]] = {}
    never_written: dict[str, str] = {}

    async def connect() -> asyncpg.Connection:
        return await asyncpg.connect(asyncpg_dsn(url))

    for n, rev in enumerate(revisions, start=1):
        before: dict[str, int] = {}
        if n > 1:
            conn = await connect()
            try:
                before = await _counts(conn)
            finally:
                await conn.close()
        migrate.upgrade(url, rev)  # from the previous revision, with the rows written there
        conn = await connect()
        try:
            after = await _counts(conn)
            lost = {t: (c, after.get(t)) for t, c in before.items() if after.get(t, 0) < c}
            assert not lost, f"upgrading to {rev} lost rows: {lost}"
            skipped = await _fill(conn, n)
            seen_at[rev] = await _counts(conn)
        finally:
            await conn.close()
        never_written.update({t: why for t, why in skipped.items() if seen_at[rev].get(t, 0) == 0})
        never_written = {t: why for t, why in never_written.items() if seen_at[rev].get(t, 0) == 0}
    # every table holds rows written at the revisions it existed in
    assert not never_written, never_written
    assert all(c > 0 for c in seen_at[revisions[-1]].values()), seen_at[revisions[-1]]

    for rev in reversed(revisions[:-1]):  # back down, one revision at a time, with the data in place
        migrate.downgrade(url, rev)
        conn = await connect()
        try:
            now = await _counts(conn)
        finally:
            await conn.close()
        assert migrate.current(url) == rev
        assert set(now) == set(seen_at[rev]), f"downgrade to {rev}: tables {set(now) ^ set(seen_at[rev])}"
        fewer = {t: (seen_at[rev][t], c) for t, c in now.items() if c < seen_at[rev][t]}
        assert not fewer, f"downgrading to {rev} lost rows of tables that revision has: {fewer}"
    migrate.downgrade(url, "base")
    assert migrate.current(url) is None
