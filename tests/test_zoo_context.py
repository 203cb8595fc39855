"""The bundled reference model's context holds real prompts (issue 29, point 7).

Its 512 positions refused 20 of the 167 real ScienceQA test rows (``../shared/realdata``: hints of
up to 774 text tokens with this tokenizer, plus 144 vision tokens at tier high and 16 new tokens).
The positions are RoPE, so the context is a limit in ``config.json``, not weights: raising it
changes no output (the committed predictions of ``tests/test_zoo_reference.py`` still hold)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import harness
from harness.knobs import Knobs
from harness.limits import context_error, untokenizable_error
from harness.policies.base import PolicyInput
from harness.types import GenRequest
from tools import reference_model as rm

REPO = Path(__file__).resolve().parents[1]
PKG_DIR = Path(harness.__file__).resolve().parent / "zoo" / "reference"
REAL_SQA = "scienceqa-test-img-167.parquet"
# the shared folder beside the checkout first, then the committed copy of the same file
REAL_SQA_CANDIDATES = (REPO.parent / "shared" / "realdata" / REAL_SQA, REPO / "tests" / "data" / "tasks" / REAL_SQA)


@pytest.fixture(scope="module")
def backend():
    from harness.backends import load

    return load("reference", device="cpu", dtype=torch.float32)


def real_scienceqa() -> Path:
    for path in REAL_SQA_CANDIDATES:
        if path.is_file():
            return path
    pytest.skip(f"no real ScienceQA rows ({REAL_SQA} in ../shared/realdata or tests/data/tasks)")


def test_context_is_the_same_number_everywhere():
    """config.json, the tokenizer's model_max_length, the training tools' Shape and what the
    harness reads all agree, so retraining reproduces the shipped context."""
    from harness.backends import describe

    cfg = json.loads((PKG_DIR / "config.json").read_text())
    tok_cfg = json.loads((PKG_DIR / "tokenizer_config.json").read_text())
    positions = rm.Shape().max_positions
    assert cfg["text_config"]["max_position_embeddings"] == positions
    assert tok_cfg["model_max_length"] == positions
    assert describe("reference").max_positions == positions
    assert cfg["text_config"]["rope_parameters"]["rope_type"] == "default"  # the limit alone changes no output
    assert positions >= 1024


def test_continuing_training_from_older_weights_gets_the_shapes_context():
    from transformers import AutoTokenizer, LlavaForConditionalGeneration

    from tools.train_reference import set_context

    tok = AutoTokenizer.from_pretrained(PKG_DIR)
    model = LlavaForConditionalGeneration.from_pretrained(PKG_DIR, dtype=torch.float32)
    model.config.text_config.max_position_embeddings, tok.model_max_length = 512, 512  # as saved before
    set_context(model, tok, rm.Shape().max_positions)
    assert model.config.text_config.max_position_embeddings == tok.model_max_length == rm.Shape().max_positions


def test_every_real_scienceqa_row_fits_the_context_at_every_tier(backend):
    """All 167 real rows pass the run's context check (harness.limits, as the runner applies it)
    at every tier and prompt style, with the task's max new tokens."""
    from harness.tasks import get_task
    from harness.tasks.data import load_samples

    task = get_task("scienceqa")
    samples = load_samples(task, str(real_scienceqa())).samples
    assert len(samples) == 167 and not [s.id for s in samples if s.error]
    info = backend.info
    refused, longest = [], 0
    for style in task.styles:
        max_new = max(int(task.max_new_tokens), int(task.max_new_tokens_for(style)))
        for s in samples:
            prompt = task.prompt(s, style)
            assert untokenizable_error(prompt, info) is None
            request = GenRequest(prompt=prompt, image=s.image, sample_id=str(s.id))
            counts = {tier: backend.count_tokens(request, tier) for tier in info.tiers}
            text = counts[info.tiers[0]][0]
            pinput = PolicyInput(sample_id=str(s.id), task=s.task, question=s.question, image_size=s.image_size,
                                 text_tokens=text, vision_tokens_by_tier={t: v for t, (_, v) in counts.items()},
                                 latency_budget_ms=None)
            longest = max(longest, text)
            for tier in info.tiers:
                err = context_error(pinput, Knobs(info.n_blocks, info.default_top_k, tier), max_new, info)
                if err is not None:
                    refused.append((style, s.id, tier, err))
    assert not refused, f"{len(refused)} refused, e.g. {refused[:3]}"
    assert longest > 512  # the rows that 512 positions refused are in the set
