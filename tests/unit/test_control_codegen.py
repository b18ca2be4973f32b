"""The committed control API code is what the proto compiles to today."""

from __future__ import annotations

from pathlib import Path

from intelligence.control import build


def test_committed_generated_files_equal_a_fresh_compile() -> None:
    fresh = build.generate()
    assert set(fresh) == {"__init__.py", "control_pb2.py", "control_pb2.pyi", "control_pb2_grpc.py"}
    for name, text in fresh.items():
        assert (build.GEN_DIR / name).read_text() == text, f"{name} is stale: run python -m intelligence.control.build"
    assert build.stale_files() == []


def test_stale_files_are_detected(tmp_path: Path) -> None:
    build.write(tmp_path)
    assert build.stale_files(tmp_path) == []
    (tmp_path / "control_pb2.py").write_text("# edited by hand\n")
    (tmp_path / "control_pb2_grpc.py").unlink()
    assert sorted(build.stale_files(tmp_path)) == ["control_pb2.py", "control_pb2_grpc.py"]


def test_generated_grpc_module_imports_relatively() -> None:
    text = (build.GEN_DIR / "control_pb2_grpc.py").read_text()
    assert "from . import control_pb2" in text and "from llmproxy" not in text
    from intelligence.control.gen import control_pb2_grpc

    assert hasattr(control_pb2_grpc, "ControlStub") and hasattr(control_pb2_grpc, "add_ControlServicer_to_server")
