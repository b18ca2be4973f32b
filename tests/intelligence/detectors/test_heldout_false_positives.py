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
# The goal is 1% everywhere. Measured at the last change (docs/security.md): writing 0.4%,
# code/logs/JSON 1.1%, multilingual documents 1.9%: the last two miss the goal and are bounded
# at their measured level plus noise here, so a regression fails while the gap stays documented.
BOUNDS = {
    "heldout_benign_writing.jsonl.gz": 0.01,
    "heldout_benign_code_logs_json.jsonl.gz": 0.02,
    "heldout_benign_multilingual_docs.jsonl.gz": 0.025,
}
# any one language class (n = 100-160). Goal 1%; measured worst: Russian LibreOffice help 7.5%
# (mixed Russian/English UI text): bounded at the measured level, the gap documented.
FAMILY_BOUND = 0.08


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
