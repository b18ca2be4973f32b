"""CI: `llmproxy eval security` on the project's held-out benign sets (tests/fixtures/eval/heldout_*,
built by `python -m intelligence.detectors.evalsets`; nothing in the shipped detector was decided on
them: intelligence/detectors/data/manifest.yaml) keeps the default policy's false positives bounded,
per file and per language class."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from extproc.cli import main

EVAL = Path(__file__).resolve().parents[2] / "fixtures" / "eval"
# The goal is 1% everywhere. Measured at the last change (docs/security.md, 2026-12-07): writing 0.25%,
# code/logs/JSON 1.13% (misses the goal), multilingual documents 0.93%. Each is bounded at its measured
# level plus a few rows, so a regression fails while the gap stays documented.
BOUNDS = {
    "heldout_benign_writing.jsonl.gz": 0.01,
    "heldout_benign_code_logs_json.jsonl.gz": 0.015,
    "heldout_benign_multilingual_docs.jsonl.gz": 0.0125,
}
# any one language or source class (n = 80-240). Goal 1%; measured worst: 3% (Japanese gettext
# catalogues, 3 of 100) and 2.7% (machine logs, 4 of 150): bounded near that, the gap documented.
FAMILY_BOUND = 0.04


def test_heldout_benign_sets_stay_under_the_bound(capsys: pytest.CaptureFixture[str]) -> None:
    from intelligence.detectors.static_embed import static_table_ready

    if not static_table_ready():
        pytest.skip("static embedding table not built (python -m intelligence.detectors.static_embed)")
    args = ["eval", "security", "--json"]
    for name in BOUNDS:
        args += ["--dataset", str(EVAL / name)]
    with pytest.raises(SystemExit) as done:
        main(args)
    assert done.value.code in (0, None)
    out = json.loads(capsys.readouterr().out)
    for name, bound in BOUNDS.items():
        r = out[name]
        assert r["role"] == "heldout", name  # never used to build the detector
        assert r["n"] >= 600 and r["excluded_training_rows"] == 0
        assert r["false_positive_rate"] <= bound, (name, r["false_positive_rate"])
        for family, f in r["by_family"].items():
            assert f["false_positive_rate"] <= FAMILY_BOUND, (name, family, f)


def test_calibration_sets_are_declared_as_such() -> None:
    from intelligence.detectors.manifest import role_of

    for path in sorted(EVAL.glob("calib_*.jsonl.gz")):
        assert role_of(path)["role"] == "train", path.name
    for path in sorted(EVAL.glob("heldout_*.jsonl.gz")):
        assert role_of(path)["role"] == "heldout", path.name
    development = sorted(EVAL.glob("dev_*.jsonl.gz"))  # sampled later; their false positives chose changes
    assert development
    for path in development:
        assert role_of(path)["role"] == "calibration", path.name
