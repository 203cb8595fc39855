"""The bundled reference model: loads through from_pretrained from the installed package,
reproduces committed predictions exactly (CPU, fp32), and its accuracy responds to the knobs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import harness
from harness.knobs import Knobs
from tools import reference_model as rm

PKG_DIR = Path(harness.__file__).resolve().parent / "zoo" / "reference"
GOLDEN = Path(__file__).resolve().parent / "data" / "zoo" / "predictions.json"


@pytest.fixture(scope="module")
def backend():
    """The harness backend on CPU, fp32, one thread (as the committed predictions were made)."""
    from harness.backends import load

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield load("reference", device="cpu", dtype=torch.float32)
    finally:
        torch.set_num_threads(threads)


def test_loads_with_from_pretrained_from_installed_package():
    from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

    assert (PKG_DIR / "model.safetensors").stat().st_size <= 15 * 1024 * 1024
    model = AutoModelForImageTextToText.from_pretrained(PKG_DIR, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(PKG_DIR)
    proc = AutoImageProcessor.from_pretrained(PKG_DIR)
    tc = model.config.text_config
    assert type(model).__name__ == "LlavaForConditionalGeneration" and tc.model_type == "olmoe"
    assert (tc.num_hidden_layers, tc.num_experts, tc.num_experts_per_tok) == (16, 64, 8)
    assert len(rm.language_layers(model)) == 16
    assert model.config.image_token_id == tok.convert_tokens_to_ids(rm.IMAGE)
    assert tok.eos_token_id == tc.eos_token_id and tok.bos_token_id is not None
    from harness.backends.imaging import CLIP_MEAN, CLIP_STD

    assert tuple(proc.image_mean) == pytest.approx(CLIP_MEAN) and tuple(proc.image_std) == pytest.approx(CLIP_STD)


def test_tokenizer_covers_any_text():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(PKG_DIR)
    for text in ("What colour is the sign?", " Zürich ∑ 42 ☃ \t tabs", "UNSEEN-WORD_xyz"):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids
        assert tok.decode(ids) == text


def test_knobs_applied_runs_only_kept_blocks_and_restores():
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(PKG_DIR, dtype=torch.float32)
    layers = rm.language_layers(model)
    with rm.knobs_applied(model, [0, 1, 2, 5], 3):
        kept = rm.language_layers(model)
        assert [l.self_attn.layer_idx for l in kept] == [0, 1, 2, 5]
        assert [l.mlp.gate.top_k for l in kept] == [8, 3, 3, 3]
    assert rm.language_layers(model) is layers and all(l.mlp.gate.top_k == 8 for l in layers)


def _golden_items():
    import hashlib

    data = json.loads(GOLDEN.read_text(encoding="utf-8"))
    sha = hashlib.sha256((PKG_DIR / "model.safetensors").read_bytes()).hexdigest()
    assert sha == data["model_sha256"], (
        "the shipped weights changed; regenerate the committed predictions with "
        "python -m tools.evaluate_reference --write-golden tests/data/zoo/predictions.json")
    return data["knobs"], data["items"]


def test_fixed_config_reproduces_committed_predictions(backend):
    from harness.tasks import get_task
    from harness.tasks.data import load_samples

    from harness.types import GenRequest

    knobs, items = _golden_items()
    backend.apply_knobs(Knobs.parse(knobs))
    by_task: dict[str, list] = {}
    for it in items:
        by_task.setdefault(it["task"], []).append(it)
    for name, expected in by_task.items():
        task = get_task(name)
        samples = {s.id: s for s in load_samples(task, "bundled").samples}
        chosen = [samples.get(e["id"]) for e in expected]
        assert all(c is not None and c.question == e["question"] for c, e in zip(chosen, expected)), (
            f"the bundled {name} samples changed; regenerate the committed predictions with "
            "python -m tools.evaluate_reference --write-golden tests/data/zoo/predictions.json")
        outs = backend.generate([GenRequest(task.prompt(s), s.image, s.id) for s in chosen], task.max_new_tokens, Knobs.parse(knobs).tier)
        assert [task.postprocess(o.text) for o in outs] == [e["prediction"] for e in expected], name


def test_accuracy_ordering_full_vs_smallest_config_on_bundled_scienceqa(backend):
    from harness.metrics import get_metric
    from harness.tasks import get_task
    from harness.tasks.data import load_samples

    from harness.types import GenRequest

    task = get_task("scienceqa")
    samples = [s for s in load_samples(task, "bundled").samples if s.error is None]
    scores = {}
    for text in ("16,8,high", "12,2,low"):
        knobs = Knobs.parse(text)
        backend.apply_knobs(knobs)
        outs = backend.generate([GenRequest(task.prompt(s), s.image, s.id) for s in samples], task.max_new_tokens, knobs.tier)
        preds = [task.postprocess(o.text) for o in outs]
        items = [task.metric_item(s, p) for s, p in zip(samples, preds)]
        scores[text] = get_metric(task.metric).score(items).aggregate["mc"]
    # the bars: >= 0.85 at the full config, at least 10 points lower at the smallest one
    assert scores["16,8,high"] >= 0.85, scores
    assert scores["16,8,high"] - scores["12,2,low"] >= 0.10 - 1e-9, scores
