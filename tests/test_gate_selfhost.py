"""Self-hosting in miniature: a deliberate break (top_k ignored -> degraded predictions) turns the
gate red, while an unchanged re-run stays green. The lead's end-to-end version runs the bundled
reference model; this one builds the run dirs a good and a broken harness would write."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "data" / "rundirs"))
from rundir_factory import make_run  # noqa: E402

from harness.cli import main  # noqa: E402

TASKS = {"vqav2": "vqa_score", "scienceqa": "mc", "docvqa": "ansl_em"}
CONFIGS = ("16,8,high", "12,2,low")


def good_scores(task, config, n=30):
    # the cheap config is somewhat worse; scores are deterministic per (task, sample)
    base = [1.0 if (i * 7 + len(task)) % 5 else 0.0 for i in range(n)]
    return base if config == "16,8,high" else [s if i % 6 else 0.0 for i, s in enumerate(base)]


def write_runs(root, broken=False, created="2026-11-20T10:00:00+00:00"):
    for task, metric in TASKS.items():
        for config in CONFIGS:
            scores = good_scores(task, config)
            if broken and config == "12,2,low":
                # top_k ignored: the cheap config runs like something else; many answers go wrong
                scores = [0.0 if i % 2 else s for i, s in enumerate(scores)]
            make_run(root / task, task=task, metric=metric, knobs=config, scores=scores,
                     ids=[f"{task}-{i}" for i in range(30)], latency_ms=50, estimated_ms=48, created=created)


def gate(args):
    with pytest.raises(SystemExit) as exc:
        main(list(map(str, args)))
    return exc.value.code


def test_break_turns_gate_red(tmp_path, capsys):
    write_runs(tmp_path / "good")
    baseline = tmp_path / "baseline.json"
    assert gate(["gate", "--write-baseline", baseline, tmp_path / "good"]) == 0
    write_runs(tmp_path / "rerun", created="2026-11-21T10:00:00+00:00")
    assert gate(["gate", "--baseline", baseline, tmp_path / "rerun", "--require-all"]) == 0
    write_runs(tmp_path / "broken", broken=True)
    md = tmp_path / "gate.md"
    assert gate(["gate", "--baseline", baseline, tmp_path / "broken", "--require-all", "--markdown", md]) == 1
    text = md.read_text()
    assert text.startswith("## harness gate: FAIL")
    bad_rows = [ln for ln in text.splitlines() if "REGRESSION" in ln]
    assert len(bad_rows) == 3 and all("12,2,low" in ln for ln in bad_rows)


# -- the same with the real runner and records, on the fake backend ----------------------------------
from fixtures.fakes import FakeBackend, fake_data  # noqa: E402  (tests/ is on sys.path: conftest)

from harness.knobs import Knobs  # noqa: E402


class TopKIgnored(FakeBackend):
    """A deliberately broken backend: every configuration runs with the model's full top_k."""

    def apply_knobs(self, knobs):
        k = super().apply_knobs(knobs)
        self.knobs = Knobs(k.num_blocks, self.info.max_top_k, k.tier)
        return k


def test_ignored_top_k_turns_gate_red_with_real_records(run_fake, tmp_path, capsys):
    def sweep(root, backend_cls):
        for knobs in ("8,4", "6,2"):
            run_fake(knobs=knobs, data=fake_data(24), backend=backend_cls(), out=root / knobs.replace(",", "-"))

    sweep(tmp_path / "good", FakeBackend)
    baseline = tmp_path / "baseline.json"
    assert gate(["gate", "--write-baseline", baseline, tmp_path / "good"]) == 0
    strict = ["--two-sided", "--max-changed", "0.05", "--require-all", "--no-latency"]
    sweep(tmp_path / "rerun", FakeBackend)
    assert gate(["gate", "--baseline", baseline, tmp_path / "rerun", *strict]) == 0
    sweep(tmp_path / "broken", TopKIgnored)
    md = tmp_path / "gate.md"
    assert gate(["gate", "--baseline", baseline, tmp_path / "broken", *strict, "--markdown", md]) == 1
    failing = [ln for ln in md.read_text().splitlines() if "CHANGED" in ln]
    assert len(failing) == 1 and "6,2" in failing[0]  # the full config 8,4 is unaffected by the break
