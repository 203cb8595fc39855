"""End to end with the real bundled reference model: the README's main command on a few samples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REFERENCE = Path(__file__).resolve().parents[1] / "harness" / "zoo" / "reference" / "config.json"

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not REFERENCE.is_file(), reason="the bundled reference model is not built yet")]


def test_run_scienceqa_with_reference_model(tmp_path, capsys, monkeypatch):
    from harness.cli import main

    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "run"
    args = ["run", "--task", "scienceqa", "--knobs", "14,6", "--limit", "6", "--output", str(out), "--json", "-q"]
    with pytest.raises(SystemExit) as exc:
        main(args)
    captured = capsys.readouterr()
    assert exc.value.code == 0, captured.err
    s = json.loads(captured.out)
    assert s["model"] == "reference" and s["config"].startswith("14,6") and s["n"] == 6
    assert s["n_failed"] == 0 and s["score"] is not None
    assert s["latency_ms"]["measured"]["total"]["mean"] > 0
    assert s["latency_ms"]["estimated"] is not None and s["estimator_error"]["mape_total"] is not None
    lines = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert all(ln["knobs"]["num_blocks"] == 14 and ln["knobs"]["top_k"] == 6 for ln in lines)
    assert all(ln["vision_tokens"] in (16, 64, 144) for ln in lines)
    # resume of a finished run: nothing recomputed, same results
    with pytest.raises(SystemExit) as exc:
        main(args)
    again = json.loads(capsys.readouterr().out)
    assert exc.value.code == 0 and again["score"] == s["score"] and again["n"] == 6
