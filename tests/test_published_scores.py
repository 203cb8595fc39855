"""Published reference scores: the shipped file, the model/split rule, and the leaderboard column."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "data" / "rundirs"))
from rundir_factory import make_run  # noqa: E402

from harness.errors import HarnessError  # noqa: E402
from harness.reports.leaderboard import render  # noqa: E402
from harness.reports.published import load_published, model_is, published_for, split_of  # noqa: E402
from harness.reports.rundirs import load_runs  # noqa: E402


def test_shipped_molmoe_scores_are_the_papers_table_1():
    got = {(s.model, s.task, s.split): s.value for s in load_published()}
    assert got == {("allenai/MolmoE-1B-0924", "vqav2", "testdev"): 83.9,
                   ("allenai/MolmoE-1B-0924", "textvqa", "validation"): 78.8,
                   ("allenai/MolmoE-1B-0924", "docvqa", "test"): 77.7}
    assert all("Molmo paper" in s.source and "Table 1" in s.source for s in load_published())


@pytest.mark.parametrize("model, expect", [
    ("molmoe:allenai/MolmoE-1B-0924", True), ("hf:allenai/MolmoE-1B-0924", True),
    ("molmoe:/models/MolmoE-1B-0924", True), ("molmoe:./snapshots/molmoe-1b-0924/", True),
    ("molmoe:allenai/MolmoE-1B-0924 [molmoe-1b-molmo-eval]", True), ("molmoe:someone/MolmoE-1B-0924", False), ("reference", False), ("molmoe:/models/MolmoE-7B-0924", False),
])
def test_model_rule(model, expect):
    assert model_is(model, "allenai/MolmoE-1B-0924") is expect


def test_split_only_from_hub_sources():
    assert split_of("hub:lmms-lab/textvqa/validation") == "validation"
    assert split_of("hub:lmms-lab/DocVQA/DocVQA/test") == "test"
    assert split_of("bundled-synthetic:tasks/samples/textvqa.parquet") is None
    assert split_of("path:/data/textvqa.parquet") is None


def test_leaderboard_shows_published_only_for_same_model_and_split(tmp_path):
    molmoe = "molmoe:allenai/MolmoE-1B-0924"
    make_run(tmp_path / "a", task="textvqa", model=molmoe, scores=[1, 0, 1, 1], source="hub:lmms-lab/textvqa/validation")
    make_run(tmp_path / "b", task="textvqa", model="reference", knobs="16,8,high", scores=[1, 0, 0, 0],
             source="hub:lmms-lab/textvqa/validation")
    make_run(tmp_path / "c", task="vqav2", model=molmoe, scores=[1, 1, 0, 0], source="hub:lmms-lab/VQAv2/validation")
    runs = load_runs([tmp_path])
    assert {r.data_source for r in runs} >= {"hub:lmms-lab/textvqa/validation", "hub:lmms-lab/VQAv2/validation"}
    text = render(runs)
    section = text[text.index("## textvqa"):]
    assert "| model | configuration | score [95% CI] | published |" in section
    assert f"| {molmoe} | 14,6,high | 0.750 [" in section and "| 0.788 |" in section
    assert "| reference | 16,8,high |" in section and section.count("| 0.788 |") == 1
    assert "Published: 0.788 (78.8 VQA score) for allenai/MolmoE-1B-0924 on textvqa validation; source: Molmo paper" in section
    vqav2 = text[text.index("## vqav2"):]
    assert "published" not in vqav2.lower()  # VQAv2's published number is on test-dev, this run on validation
    assert "ublished" not in render(runs, published=[])


def test_bad_published_file_is_one_line(tmp_path):
    (tmp_path / "x.toml").write_text('[[score]]\nmodel = "m"\ntask = "t"\n')
    with pytest.raises(HarnessError, match="entry 1 lacks split, value, metric, source"):
        load_published(tmp_path)
    assert published_for("t", "hub:x/y", "m", []) is None
