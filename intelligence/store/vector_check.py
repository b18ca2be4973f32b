"""Start-up self-check: can this PostgreSQL run pgvector's arithmetic on this machine's CPU?

A pgvector built with ``-march=native`` on an AVX-512 machine traps with an illegal instruction on
one without it: the backend dies on the first vector distance, ``avg(vector)`` or HNSW insert, the
postmaster restarts in crash recovery, and everything that embeds prompts crash-loops the database.
That happened to users of an earlier embedded build. So before anything relies on it, one scratch
transaction (always rolled back) computes a distance, an average and a normalisation and inserts
into HNSW indexes on ``vector`` and ``halfvec``, at the dimension the pattern memory uses. A backend
that dies doing so is reported in one sentence that says what to do, instead of silently crash-looping.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass

import asyncpg

from .engine import asyncpg_dsn

DIMS = 384  # the pattern memory's embedding size: long enough for every SIMD loop and its tail

CRASH_EMBEDDED = (
    "the embedded PostgreSQL crashed running a pgvector operation: its pgvector build uses CPU instructions "
    "this machine lacks (the embedded build needs x86-64-v3: AVX2 and FMA); set DATABASE_URL to a PostgreSQL "
    "whose pgvector was built for this CPU, such as your distribution's postgresql-NN-pgvector package "
    "(docs/operations.md)"
)
CRASH_EXTERNAL = (
    "PostgreSQL at DATABASE_URL crashed running a pgvector operation: its pgvector build uses CPU instructions "
    "this machine lacks (it was compiled with -march=native on another CPU); install a pgvector built without "
    '-march=native (your distribution\'s postgresql-NN-pgvector package, or `make OPTFLAGS=""`), or unset '
    "DATABASE_URL to use the embedded database (docs/operations.md)"
)
NO_PGVECTOR = "PostgreSQL has no pgvector extension available: install pgvector (0.7 or newer) on the database server"


@dataclass(frozen=True)
class VectorCheck:
    ok: bool
    message: str = ""  # one sentence for the operator when not ok
    detail: str = ""  # the underlying error, for logs
    crashed: bool = False  # the backend died: the CPU-instruction case

    def as_dict(self) -> dict[str, object]:
        return {"ok": self.ok, "message": self.message, "detail": self.detail, "crashed": self.crashed}


def _vector_literal(seed: int) -> str:
    # Deterministic, non-trivial values (no zero vectors: cosine of zero is NaN).
    return "[" + ",".join(f"{math.sin(seed * 7.1 + i * 0.37) + 1.5:.5f}" for i in range(DIMS)) + "]"


_SETUP = (
    "CREATE TEMP TABLE llmproxy_vector_check (v vector({d}), h halfvec({d})) ON COMMIT DROP",
    "CREATE INDEX ON llmproxy_vector_check USING hnsw (v vector_cosine_ops)",
    "CREATE INDEX ON llmproxy_vector_check USING hnsw (h halfvec_l2_ops)",
)


async def _exercise(conn: asyncpg.Connection) -> None:
    """The scratch transaction; the caller rolls it back, so the table and its indexes never persist."""
    await conn.execute("BEGIN")
    await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    for stmt in _SETUP:
        await conn.execute(stmt.format(d=DIMS))
    for seed in range(1, 33):  # enough rows for HNSW to compare neighbours on insert
        await conn.execute(
            "INSERT INTO llmproxy_vector_check VALUES (l2_normalize($1::vector), $1::vector::halfvec)", _vector_literal(seed)
        )
    row = await conn.fetchrow(
        "SELECT min(v <=> $1::vector) AS cos, min(v <-> $1::vector) AS l2, min(h <-> $1::vector::halfvec) AS hl2, "
        "vector_dims(avg(v)) AS dims FROM llmproxy_vector_check",
        _vector_literal(99),
    )
    if row is None or row["dims"] != DIMS or row["cos"] is None or not math.isfinite(row["cos"]):
        raise RuntimeError(f"pgvector returned a wrong result: {dict(row) if row else None}")


_DIED = (
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.ConnectionFailureError,
    asyncpg.exceptions.CrashShutdownError,
    ConnectionError,
    EOFError,
)


async def check_vector_support(url: str, *, embedded: bool, timeout: float = 30.0) -> VectorCheck:
    """Run the scratch transaction; never raises. ``embedded`` picks the advice in the sentence."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            conn = await asyncpg.connect(asyncpg_dsn(url), timeout=min(timeout, 10.0))
            break
        except (asyncpg.exceptions.CannotConnectNowError, asyncpg.exceptions.ConnectionDoesNotExistError) as exc:
            # starting up, or in crash recovery (a connection can also be cut while it is made): wait it out
            if asyncio.get_running_loop().time() > deadline:
                return VectorCheck(False, f"PostgreSQL is not accepting connections: {exc}", repr(exc))
            await asyncio.sleep(0.25)
        except Exception as exc:  # noqa: BLE001 - the database is down: not this check's verdict to give
            return VectorCheck(False, f"cannot connect to PostgreSQL: {type(exc).__name__}: {exc}", repr(exc))
    try:
        await asyncio.wait_for(_exercise(conn), timeout)
        await conn.execute("ROLLBACK")
        return VectorCheck(True)
    except (asyncpg.exceptions.UndefinedFileError, asyncpg.exceptions.FeatureNotSupportedError) as exc:
        return VectorCheck(False, NO_PGVECTOR, repr(exc))
    except Exception as exc:  # noqa: BLE001 - classified below; the check never raises
        # The backend went away mid-statement (whatever the driver calls it): it crashed, and the
        # one way arithmetic this plain crashes a backend is an instruction the CPU does not have.
        if isinstance(exc, _DIED) or conn.is_closed():
            return VectorCheck(False, CRASH_EMBEDDED if embedded else CRASH_EXTERNAL, repr(exc), crashed=True)
        if isinstance(exc, asyncpg.exceptions.PostgresError):
            return VectorCheck(False, f"the pgvector self-check failed: {exc}", repr(exc))
        return VectorCheck(False, f"the pgvector self-check failed: {type(exc).__name__}: {exc}", repr(exc))
    finally:
        if not conn.is_closed():
            conn.terminate()  # an open scratch transaction dies with the connection


__all__ = ["VectorCheck", "check_vector_support", "CRASH_EMBEDDED", "CRASH_EXTERNAL", "NO_PGVECTOR", "DIMS"]
