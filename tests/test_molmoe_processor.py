"""The ``molmoe:`` backend end to end with the checkpoint's real processor: tiers reach the
processor's ``max_crops``, the molmo prompt style gets Molmo's chat framing once, and a batch with
images of different crop counts equals each sample alone.

The real image processor imports torchvision: every test here skips with the reason where it does
not import (a CPU-only torch has no matching torchvision on the package index; see the README)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from harness import backends
from harness.types import GenRequest
from molmoe_real import molmoe_checkpoint, torchvision_reason  # noqa: F401  (fixture)

pytestmark = pytest.mark.skipif(torchvision_reason() is not None, reason=str(torchvision_reason()))
torch.set_num_threads(1)


def _image(w, h, seed=0):
    return Image.fromarray((np.random.default_rng(seed).random((h, w, 3)) * 255).astype("uint8"))


@pytest.fixture(scope="module")
def backend(molmoe_checkpoint):  # noqa: F811
    b = backends.load(f"molmoe:{molmoe_checkpoint}", trust_remote_code=True)
    b.eos_token_ids = []
    return b


def test_tiers_set_the_real_processors_max_crops(backend):
    req = GenRequest("What is this?", image=_image(1200, 900))
    # 1200x900 at max_crops 2 / 6 / 12: 3 / 7 / 13 crops (one global view), 384 / 704 / 1152 tokens
    assert [backend.count_tokens(req, t)[1] for t in ("low", "medium", "high")] == [384, 704, 1152]
    batch, _, n_vision = backend._prepare([req], "low")
    assert batch.extras["images"].shape[1] == 3 and n_vision == [384]


def test_molmo_style_is_framed_once_by_the_processor(backend):
    from harness.tasks import get_task
    from harness.types import Sample

    task = get_task("vqav2")
    prompt = task.prompt(Sample(id="1", task="vqav2", question="What color is the bus?", references=["red"]), "molmo")
    ids = backend._prepare([GenRequest(prompt)], None)[0].input_ids[0].tolist()
    text = backend.tokenizer.decode(ids, skip_special_tokens=True)
    assert text.strip() == "User: vqa2: What color is the bus? Assistant:"


@pytest.mark.slow  # the 1024-wide ViT over several crops: about 10 s on 2 cores
def test_image_batch_of_two_equals_each_alone(backend):
    backend.apply_knobs("14,6")
    reqs = [GenRequest("vqa2: what is this?", image=_image(1200, 900)), GenRequest("hi", image=_image(300, 200, 1))]
    assert backend._prepare(reqs[:1], "low")[0].extras["images"].shape[1] != \
        backend._prepare(reqs[1:], "low")[0].extras["images"].shape[1]  # different crop counts: padding crops
    batched = backend.generate_ids(reqs, 3, "low").tokens
    assert batched == [backend.generate_ids([r], 3, "low").tokens[0] for r in reqs]
    backend.apply_knobs("16,8")


def test_molmo_evaluation_config_reaches_36_crops(molmoe_checkpoint):  # noqa: F811
    b = backends.load(f"molmoe:{molmoe_checkpoint}", trust_remote_code=True, model_config="molmoe-1b-molmo-eval")
    req = GenRequest("What is this?", image=_image(1200, 900))
    # max_crops 6 / 12 / 36: a 1200x900 image tiles into 20 crops (+1 global view) under 36
    assert [b.count_tokens(req, t)[1] for t in ("low", "medium", "high")] == [704, 1152, 1728]
    assert b._prepare([req], "high")[0].extras["images"].shape[1] == 21
