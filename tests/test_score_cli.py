"""`harness score` and `harness metrics`: output contract and every bad-input case."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.cli import main

GOLDEN = Path(__file__).parent / "data" / "golden"


def run(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def write_lines(path: Path, lines) -> Path:
    path.write_text("".join((l if isinstance(l, str) else json.dumps(l)) + "\n" for l in lines), encoding="utf-8")
    return path


GOOD = [
    {"id": "a", "prediction": "yes", "references": ["yes"] * 10},
    {"id": 7, "prediction": "two", "references": ["2", "2", "2", "no", "no", "no", "no", "no", "no", "no"]},
]


def test_score_to_stdout(tmp_path, capsys):
    src = write_lines(tmp_path / "in.jsonl", GOOD)
    code, out, err = run(["score", "--metric", "vqa_score", str(src)], capsys)
    assert code == 0, err
    lines = [json.loads(l) for l in out.splitlines()]
    assert lines[0] == {"id": "a", "vqa_score": 1.0}
    assert lines[1]["id"] == 7 and lines[1]["vqa_score"] == pytest.approx(0.9)
    assert lines[-1] == {"metric": "vqa_score", "n": 2, "scores": {"vqa_score": pytest.approx(0.95)}}
    assert len(lines) == 3


def test_score_to_output_file(tmp_path, capsys):
    src = write_lines(tmp_path / "in.jsonl", GOOD)
    dest = tmp_path / "sub" / "out.jsonl"
    code, out, _ = run(["score", "--metric", "vqa_score", str(src), "--output", str(dest)], capsys)
    assert code == 0
    assert [json.loads(l) for l in out.splitlines()] == [{"metric": "vqa_score", "n": 2, "scores": {"vqa_score": pytest.approx(0.95)}}]
    rows = [json.loads(l) for l in dest.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["a", 7]


@pytest.mark.parametrize(
    "metric, golden, key, want",
    [
        ("vqa_score", "vqa_score.jsonl", "vqa_score", "expected"),
        ("mc", "mc.jsonl", "mc", "expected"),
        ("em", "em.jsonl", "em", "expected"),
        ("ansl_em", "anls.jsonl", "anls", "expected"),
        ("ansl_em", "anls.jsonl", "em", "expected_em"),
    ],
)
def test_score_reproduces_golden(metric, golden, key, want, tmp_path, capsys):
    dest = tmp_path / "out.jsonl"
    code, out, _ = run(["score", "--metric", metric, str(GOLDEN / golden), "--output", str(dest)], capsys)
    assert code == 0
    rows = [json.loads(l) for l in (GOLDEN / golden).read_text(encoding="utf-8").splitlines()]
    got = [json.loads(l) for l in dest.read_text(encoding="utf-8").splitlines()]
    assert [g["id"] for g in got] == [r["id"] for r in rows]
    for g, r in zip(got, rows):
        assert g[key] == pytest.approx(r[want], abs=1e-6), r["id"]
    if metric == "mc":
        assert [g["pred_index"] for g in got] == [r["expected_pred_index"] for r in rows]
    agg = json.loads(out.splitlines()[-1])
    assert agg["n"] == len(rows) and agg["metric"] == metric
    assert agg["scores"][key] == pytest.approx(sum(r[want] for r in rows) / len(rows), abs=1e-9)


def test_score_cider_corpus(tmp_path, capsys):
    rows = [r for r in map(json.loads, (GOLDEN / "cider.jsonl").read_text().splitlines()) if r["corpus"] == "sub10"]
    src = write_lines(tmp_path / "caps.jsonl", rows)
    code, out, _ = run(["score", "--metric", "cider_score", str(src)], capsys)
    assert code == 0
    lines = [json.loads(l) for l in out.splitlines()]
    assert lines[-1]["scores"]["cider_score"] == pytest.approx(rows[0]["corpus_expected"], abs=1e-6)
    for line, row in zip(lines[:-1], rows):
        assert line["cider_score"] == pytest.approx(row["expected"], abs=1e-6)


BAD_CASES = [
    ("malformed", [GOOD[0], '{"id": 2, "prediction": "x"'], "vqa_score", ":2: malformed JSON"),
    ("not_object", [GOOD[0], "[1, 2]"], "vqa_score", ":2: expected a JSON object"),
    ("missing_prediction", [{"id": 1, "references": ["a"]}], "vqa_score", ":1: missing field 'prediction'"),
    ("missing_references", [GOOD[0], GOOD[1], {"id": 1, "prediction": "a"}], "ansl_em", ":3: missing field 'references'"),
    ("missing_id", [{"prediction": "a", "references": ["a"]}], "em", ":1: missing field 'id'"),
    ("id_type", [{"id": None, "prediction": "a", "references": ["a"]}], "em", ":1: field 'id' must be a string or number, got null"),
    ("prediction_type", [{"id": 1, "prediction": None, "references": ["a"]}], "em", ":1: field 'prediction' must be a string, got null"),
    ("references_type", [{"id": 1, "prediction": "a", "references": "a"}], "ansl_em", ":1: field 'references' must be a list"),
    ("references_items", [{"id": 1, "prediction": "a", "references": ["a", 3]}], "ansl_em", ":1: field 'references' must be a list"),
    ("references_empty", [{"id": 1, "prediction": "a", "references": []}], "vqa_score", ":1: field 'references' is empty"),
    ("vqa_dict_without_answer", [{"id": 1, "prediction": "a", "references": [{"ans": "a"}]}], "vqa_score", ":1: a reference answer dict"),
    ("mc_no_choices", [{"id": 1, "prediction": "A", "answer": 0}], "mc", ":1: missing field 'choices'"),
    ("mc_answer_type", [{"id": 1, "prediction": "A", "choices": ["x", "y"], "answer": "A"}], "mc", ":1: field 'answer' must be the 0-based index"),
    ("mc_answer_range", [{"id": 1, "prediction": "A", "choices": ["x", "y"], "answer": 2}], "mc", ":1: field 'answer' is 2, outside 0..1"),
    ("mc_bool_answer", [{"id": 1, "prediction": "A", "choices": ["x", "y"], "answer": True}], "mc", ":1: field 'answer' must be"),
    ("cider_no_image", [{"id": 1, "prediction": "a", "references": ["a"]}], "cider_score", ":1: missing field 'image_id'"),
]


@pytest.mark.parametrize("name, lines, metric, fragment", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_input_one_line_error_and_no_output(name, lines, metric, fragment, tmp_path, capsys):
    src = write_lines(tmp_path / "in.jsonl", lines)
    dest = tmp_path / "out.jsonl"
    code, out, err = run(["score", "--metric", metric, str(src), "--output", str(dest)], capsys)
    assert code == 2
    assert out == ""
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert str(src) + fragment in err, err
    assert "Traceback" not in err
    assert not dest.exists()


def test_bad_input_keeps_existing_output(tmp_path, capsys):
    src = write_lines(tmp_path / "in.jsonl", [GOOD[0], "{oops"])
    dest = tmp_path / "out.jsonl"
    dest.write_text("previous\n")
    code, _, err = run(["score", "--metric", "vqa_score", str(src), "--output", str(dest)], capsys)
    assert code == 2 and ":2:" in err
    assert dest.read_text() == "previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "out.jsonl"]  # no temp file left


def test_non_utf8(tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_bytes(json.dumps(GOOD[0]).encode() + b"\n" + b'{"id": 2, "prediction": "caf\xe9", "references": ["a"]}\n')
    code, out, err = run(["score", "--metric", "vqa_score", str(src)], capsys)
    assert code == 2 and out == ""
    assert f"{src}:2: not valid UTF-8" in err


def test_empty_file(tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text("\n  \n")
    code, out, err = run(["score", "--metric", "vqa_score", str(src)], capsys)
    assert code == 2 and out == ""
    assert str(src) in err and "empty" in err


def test_missing_file(tmp_path, capsys):
    code, _, err = run(["score", "--metric", "vqa_score", str(tmp_path / "nope.jsonl")], capsys)
    assert code == 2 and "nope.jsonl" in err and err.count("\n") == 1


def test_unknown_metric_did_you_mean(tmp_path, capsys):
    src = write_lines(tmp_path / "in.jsonl", GOOD)
    code, out, err = run(["score", "--metric", "ansl_emm", str(src), "--output", str(tmp_path / "o.jsonl")], capsys)
    assert code == 2 and out == ""
    assert "unknown metric 'ansl_emm'" in err and "Did you mean 'ansl_em'?" in err
    assert not (tmp_path / "o.jsonl").exists()


def test_unwritable_output(tmp_path, capsys):
    src = write_lines(tmp_path / "in.jsonl", GOOD)
    (tmp_path / "adir").mkdir()
    code, _, err = run(["score", "--metric", "vqa_score", str(src), "--output", str(tmp_path / "adir")], capsys)
    assert code == 2 and "--output" in err and err.count("\n") == 1


def test_lone_surrogates_do_not_crash(tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text('{"id": "\\ud800", "prediction": "\\udfff x", "references": ["x"]}\n', encoding="utf-8")
    code, out, err = run(["score", "--metric", "em", str(src)], capsys)
    assert code == 0, err
    assert json.loads(out.splitlines()[0])["id"] == "\ud800"


def test_metrics_table(capsys):
    code, out, _ = run(["metrics"], capsys)
    assert code == 0
    for name in ("vqa_score", "vqa_score_molmo", "mc", "em", "ansl_em", "cider_score", "anls, em"):
        assert name in out


def test_metrics_explain(capsys):
    code, out, _ = run(["metrics", "--explain", "vqa_score"], capsys)
    assert code == 0
    assert "leave-one-out" in out and "Molmo" in out and "applied ALWAYS" in out
    code, out, _ = run(["metrics", "--explain", "anls"], capsys)  # alias
    assert code == 0 and out.startswith("ansl_em") and "exactly 0.5" in out


def test_metrics_explain_unknown(capsys):
    code, _, err = run(["metrics", "--explain", "cidr_score"], capsys)
    assert code == 2 and "Did you mean 'cider_score'?" in err
