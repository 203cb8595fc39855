"""Self-hosting, end to end: the bundled reference model on bundled samples, gated against a
baseline written from a good run. A deliberate break in knob application (top_k ignored: every
block runs the model's default 8 experts) must turn the gate red; an unchanged re-run stays green.
This is what `.ci/run` does on all eight tasks against the committed leaderboard/baseline.json."""

import pytest

from harness.backends import layouts
from harness.cli import main

TASKS = "scienceqa,vqav2"
GRID = "num_blocks=12 top_k=2,8 tier=low"
STRICT = ["--two-sided", "--max-changed", "0.05", "--require-all", "--no-latency"]


def cli(*args):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    return exc.value.code


def sweep(out):
    return cli("sweep", "--grid", GRID, "--task", TASKS, "--limit", 20, "--device", "cpu",
               "--estimator", "none", "--output", out, "--quiet")


@pytest.fixture
def top_k_ignored(monkeypatch):
    original = layouts.KnobSwitch.apply

    def broken_apply(self, active, top_k):
        return original(self, active, max(k for k in self.default_top_k if k is not None))

    monkeypatch.setattr(layouts.KnobSwitch, "apply", broken_apply)


def test_gate_catches_ignored_top_k_on_reference_model(tmp_path, request):
    assert sweep(tmp_path / "good") == 0
    baseline = tmp_path / "baseline.json"
    assert cli("gate", "--write-baseline", baseline, tmp_path / "good") == 0

    assert sweep(tmp_path / "rerun") == 0
    assert cli("gate", "--baseline", baseline, tmp_path / "rerun", *STRICT) == 0

    request.getfixturevalue("top_k_ignored")
    assert sweep(tmp_path / "broken") == 0
    md = tmp_path / "gate.md"
    assert cli("gate", "--baseline", baseline, tmp_path / "broken", *STRICT, "--markdown", md) == 1
    failing = [ln for ln in md.read_text().splitlines() if "CHANGED" in ln or "REGRESSION" in ln]
    # only configurations with top_k < 8 are affected by the break
    assert failing and all(",2," in ln for ln in failing)
