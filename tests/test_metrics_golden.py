"""Conformance: every golden vector (tests/data/golden, a copy of ../shared/golden) to 1e-6."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

from harness.metrics import get_metric

GOLDEN = Path(__file__).parent / "data" / "golden"
TOL = 1e-6


def _load(name: str) -> list[dict]:
    with open(GOLDEN / name, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _ids(rows):
    return [r["id"] for r in rows]


VQA = _load("vqa_score.jsonl")
MC = _load("mc.jsonl")
EM = _load("em.jsonl")
ANLS = _load("anls.jsonl")
CIDER = _load("cider.jsonl")


def test_golden_files_are_complete():
    assert (len(VQA), len(MC), len(EM), len(ANLS), len(CIDER)) == (95, 83, 65, 90, 11)


@pytest.mark.parametrize("row", VQA, ids=_ids(VQA))
def test_vqa_score(row):
    got = get_metric("vqa_score").score([row]).per_item[0]["vqa_score"]
    assert got == pytest.approx(row["expected"], abs=TOL)


@pytest.mark.parametrize("row", VQA, ids=_ids(VQA))
def test_vqa_score_molmo_matches_documented_alt(row):
    alts = {a["impl"]: a["value"] for a in row["alt"]}
    want = alts.get("molmo_vqa_score", row["expected"])
    got = get_metric("vqa_score_molmo").score([row]).per_item[0]["vqa_score_molmo"]
    assert got == pytest.approx(want, abs=TOL)


@pytest.mark.parametrize("row", MC, ids=_ids(MC))
def test_mc(row):
    got = get_metric("mc").score([row]).per_item[0]
    assert got["pred_index"] == row["expected_pred_index"]
    assert got["mc"] == pytest.approx(row["expected"], abs=TOL)


@pytest.mark.parametrize("row", EM, ids=_ids(EM))
def test_em(row):
    got = get_metric("em").score([row]).per_item[0]
    assert got["em"] == pytest.approx(row["expected"], abs=TOL)
    if "decision" in row:  # "none counts as 0"
        assert got["extracted"] == 0
    else:
        assert got["extracted"] == row["expected_extracted_count"]


@pytest.mark.parametrize("row", ANLS, ids=_ids(ANLS))
def test_ansl_em(row):
    got = get_metric("ansl_em").score([row]).per_item[0]
    assert got["anls"] == pytest.approx(row["expected"], abs=TOL)
    assert got["em"] == pytest.approx(row["expected_em"], abs=TOL)


def test_cider_corpora():
    corpora = defaultdict(list)
    for row in CIDER:
        corpora[row["corpus"]].append(row)
    metric = get_metric("cider_score")
    for rows in corpora.values():
        assert len(rows) == rows[0]["corpus_size"]
        result = metric.score(rows)
        assert result.aggregate["cider_score"] == pytest.approx(rows[0]["corpus_expected"], abs=TOL)
        for row, got in zip(rows, result.per_item):
            assert got["cider_score"] == pytest.approx(row["expected"], abs=TOL), row["id"]


def test_cider_tokenizer_matches_golden_tokens():
    from harness.metrics.cider import ptb_tokenize

    rows = [r for r in CIDER if r["corpus"] == "sub10"]
    sentences = [r["prediction"] for r in rows] + [ref for r in rows for ref in r["references"]]
    want = [r["tokenized_prediction"] for r in rows] + [t for r in rows for t in r["tokenized_references"]]
    assert ptb_tokenize(sentences) == want


def test_aggregates_are_means_of_the_vectors():
    result = get_metric("vqa_score").score(VQA)
    mean = sum(r["expected"] for r in VQA) / len(VQA)
    assert result.aggregate["vqa_score"] == pytest.approx(mean, abs=TOL)
    result = get_metric("ansl_em").score(ANLS)
    assert result.aggregate["anls"] == pytest.approx(sum(r["expected"] for r in ANLS) / len(ANLS), abs=TOL)
    assert result.aggregate["em"] == pytest.approx(sum(r["expected_em"] for r in ANLS) / len(ANLS), abs=TOL)


def test_copies_match_shared_golden_when_present():
    shared = Path(__file__).resolve().parents[2] / "shared" / "golden"
    if not shared.is_dir():
        pytest.skip("../shared/golden is not next to this checkout (CI clone)")
    for name in ("vqa_score.jsonl", "mc.jsonl", "em.jsonl", "anls.jsonl", "cider.jsonl"):
        assert (shared / name).read_bytes() == (GOLDEN / name).read_bytes(), name
