"""``hf:`` vision-language models use the checkpoint's own image processor and chat template, and
a text-only model is refused for image tasks instead of dropping the images.

The checkpoint is a tiny LLaVA (CLIP tower + OLMoE) built here with the reference model's tokenizer
(``<image>`` = id 4), a chat template, and an image processor whose normalisation and resize
filter differ from the harness's own, so the tests can tell which one ran."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from harness import api, backends
from harness.backends import REFERENCE_DIR
from harness.backends.imaging import preprocess_batch
from harness.errors import HarnessError
from harness.types import GenRequest

torch.set_num_threads(1)
CHAT = ("{% for m in messages %}{% if m['role'] == 'user' %}USER: {% for c in m['content'] %}"
        "{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %} ASSISTANT:{% endif %}")
PROCESSOR = {"image_processor_type": "CLIPImageProcessor", "do_resize": True, "size": {"height": 32, "width": 32},
             "resample": 2, "do_center_crop": False, "do_rescale": True, "rescale_factor": 1 / 255,
             "do_normalize": True, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "do_convert_rgb": True}


def _text_config(**kw):
    from transformers import OlmoeConfig

    return OlmoeConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                       intermediate_size=16, num_experts=8, num_experts_per_tok=4, vocab_size=770,
                       max_position_embeddings=512, pad_token_id=2, bos_token_id=1, eos_token_id=3, **kw)


def _tokenizer_files(folder, chat: bool):
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(REFERENCE_DIR / f, folder / f)
    if chat:
        (folder / "chat_template.jinja").write_text(CHAT)


@pytest.fixture(scope="module")
def llava_dir(tmp_path_factory):
    from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration

    folder = tmp_path_factory.mktemp("llava") / "tiny-llava"
    vc = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                          image_size=32, patch_size=8)
    cfg = LlavaConfig(vision_config=vc, text_config=_text_config(), image_token_id=4,
                      vision_feature_select_strategy="full", vision_feature_layer=-1)
    torch.manual_seed(0)
    LlavaForConditionalGeneration(cfg).save_pretrained(folder)
    _tokenizer_files(folder, chat=True)
    (folder / "preprocessor_config.json").write_text(json.dumps(PROCESSOR))
    return folder


def _image(w=50, h=40, seed=0):
    return Image.fromarray((np.random.default_rng(seed).random((h, w, 3)) * 255).astype("uint8"))


@pytest.fixture(scope="module")
def llava(llava_dir):
    return backends.load(f"hf:{llava_dir}")


def test_pixels_come_from_the_checkpoints_image_processor(llava):
    from transformers import CLIPImageProcessorPil

    img = _image()
    own = CLIPImageProcessorPil(**{k: v for k, v in PROCESSOR.items() if k != "image_processor_type"})
    for tier, side in (("low", 16), ("high", 32)):
        got = llava._prepare([GenRequest("what?", image=img)], tier)[0].extras["pixel_values"]
        want = own(images=[img], size={"height": side, "width": side}, return_tensors="pt")["pixel_values"]
        assert got.shape == (1, 3, side, side)
        torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
        assert (got - preprocess_batch([img], side)).abs().max() > 0.1  # not the harness's own CLIP preprocessing


def test_prompt_goes_through_the_chat_template(llava):
    req = GenRequest("What is in the image?", image=_image())
    ids = llava._prepare([req], "high")[0].input_ids[0].tolist()
    n_vision = llava.info.vision_tokens["high"]
    assert ids.count(4) == n_vision and llava.count_tokens(req, "high")[1] == n_vision
    text = llava.tokenizer.decode([t for t in ids if t != 4])
    assert "USER:" in text and "What is in the image? ASSISTANT:" in text
    no_image = llava._prepare([GenRequest("Hello?")], "high")[0].input_ids[0].tolist()
    assert 4 not in no_image and "USER: Hello? ASSISTANT:" in llava.tokenizer.decode(no_image)
    out = llava.generate([req], 3, "high")[0]
    assert out.vision_tokens == n_vision and out.output_tokens >= 1


def test_a_prompt_template_in_the_harness_config_wins(llava_dir, tmp_path):
    cfg = tmp_path / "plain.toml"
    cfg.write_text('prompt_template = "Q: {prompt} A:"\n[tiers.high]\nimage_size = 32\n')
    b = backends.load(f"hf:{llava_dir}", model_config=str(cfg))
    assert b.chat is None
    ids = b._prepare([GenRequest("hi")], "high")[0].input_ids[0].tolist()
    assert "USER:" not in b.tokenizer.decode(ids) and "Q: hi A:" in b.tokenizer.decode(ids)


def test_text_only_model_refuses_image_tasks_before_loading(tmp_path):
    folder = tmp_path / "tiny-olmoe"
    folder.mkdir()
    (folder / "config.json").write_text(_text_config().to_json_string())  # config only: nothing else may be read
    with pytest.raises(HarnessError, match="text-only model .*scienceqa.* has images") as err:
        api.prepare(task="scienceqa", model=f"hf:{folder}", limit=2)
    assert "\n" not in str(err.value)


def test_text_only_backend_never_drops_an_image():
    from fixtures import tiny

    b = tiny.backend("olmoe")
    with pytest.raises(HarnessError, match="text-only model"):
        b.generate([GenRequest("what?", image=_image())], 2)
    assert b.generate([GenRequest("what?")], 2)[0].vision_tokens == 0
