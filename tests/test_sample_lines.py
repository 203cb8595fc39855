"""Sample lines a reviewer can audit: the input the model saw (template, special tokens, image
placeholders written once with their count) and the targets; compact; old run directories still read."""

from __future__ import annotations

import json

import pytest

from fixtures.fakes import fake_data
from harness.backends.bytetok import ByteTokenizer
from harness.backends.prompt import as_seen


def test_as_seen_collapses_special_runs_only():
    tok = ByteTokenizer()
    image = 300  # not a byte: a special token for the byte tokenizer
    ids = [tok.bos_token_id] + [image] * 144 + tok.encode("Q: aaaa?")
    text = as_seen(tok, ids)
    assert text == "<1><300>×144Q: aaaa?"  # the four 'a's are text and stay as they are
    assert as_seen(tok, [image] * 3 + tok.encode("x")) == "<300><300><300>x"  # a short run is written out


def test_fake_backend_lines_carry_task_prompt_and_targets(run_fake):
    _, lines, _ = run_fake(data=fake_data(4))
    for ln in lines:
        assert ln["prompt_source"] == "task" and ln["prompt"]  # the fake backend reports no model input
        assert ln["references"]


@pytest.fixture(scope="module")
def reference_runs(tmp_path_factory):
    import harness

    out = tmp_path_factory.mktemp("audit")
    runs = {}
    for task, style in (("scienceqa", None), ("textvqa", "molmo")):
        res = harness.evaluate(task=task, knobs="12,4,low", model="reference", data="bundled", limit=3, device="cpu",
                               style=style, output=str(out / task), estimator="none", quiet=True)
        runs[task] = res
    return runs


def test_reference_lines_show_the_model_input_and_targets(reference_runs):
    sqa = reference_runs["scienceqa"]
    for ln in sqa.samples[0]:
        assert ln["prompt_source"] == "model_input"
        if ln["vision_tokens"]:
            assert f"×{ln['vision_tokens']}" in ln["prompt"]  # the low tier's placeholders, once with their count
        assert isinstance(ln["choices"], list) and isinstance(ln["answer"], int)
        assert ln["choices"][ln["answer"]]
        assert "<image>" * 4 not in ln["prompt"]
    tv = reference_runs["textvqa"]
    for ln in tv.samples[0]:
        assert ln["prompt_source"] == "model_input"
        assert "text_vqa: " in ln["prompt"]  # Molmo's style prefix is what was sent
        assert ln["references"] and "choices" not in ln
    raw = (tv.run_dir / "samples.jsonl").read_text().splitlines()
    assert all(len(r) < 4000 for r in raw)  # compact: no image bytes, the prompt once


def test_old_lines_without_audit_fields_still_read(reference_runs, tmp_path):
    import shutil

    from harness.reports.rundirs import load_run

    src = reference_runs["scienceqa"].run_dir
    old = tmp_path / "old"
    shutil.copytree(src, old)
    lines = [json.loads(x) for x in (old / "samples.jsonl").read_text().splitlines()]
    for ln in lines:
        for key in ("prompt", "prompt_source", "references", "choices", "answer"):
            ln.pop(key, None)
    (old / "samples.jsonl").write_text("".join(json.dumps(ln) + "\n" for ln in lines))
    run = load_run(old)
    assert len(run.sample_records()) == 3
    scores, failed = run.sample_scores()
    assert len(scores) == 3 and not failed
