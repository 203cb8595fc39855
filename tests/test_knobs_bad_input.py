"""Bad knobs, importance files and architectures: one-line HarnessErrors before any weights load."""

from __future__ import annotations

import json

import pytest

from harness import backends
from fixtures import tiny
from harness.errors import HarnessError
from harness.knobs import Knobs


@pytest.fixture(scope="module")
def config_only_dir(tmp_path_factory):
    """An OLMoE-shaped model directory with 16 blocks and top-8 but NO weights: anything that
    tried to load weights would fail with a different error."""
    from transformers import OlmoeConfig

    d = tmp_path_factory.mktemp("cfgonly")
    OlmoeConfig(hidden_size=32, intermediate_size=16, num_hidden_layers=16, num_attention_heads=4,
                num_experts=64, num_experts_per_tok=8, vocab_size=300).save_pretrained(d)
    return d


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and msg
    return msg


@pytest.mark.parametrize("text,needle", [("17,6", "12..16"), ("11,6", "12..16"), ("14,9", "1..8"), ("14,0", ">= 1")])
def test_out_of_range_knobs_rejected_from_config_only(config_only_dir, text, needle):
    info = backends.describe(f"hf:{config_only_dir}")
    assert (info.n_blocks, info.default_top_k, info.min_blocks) == (16, 8, 12)
    with pytest.raises(HarnessError) as exc:
        info.validate(Knobs.parse(text))
    assert needle in _one_line(exc)


@pytest.mark.parametrize("text", ["14", "a,b", "14,6,high,x", "", "num_blocks=14"])
def test_malformed_knobs(text):
    with pytest.raises(HarnessError) as exc:
        Knobs.parse(text)
    assert "--knobs" in _one_line(exc)


@pytest.mark.parametrize("content,needle", [
    ("{not json", "not valid JSON"),
    (json.dumps({"0": 1.0, "1": 0.5}), "no score for block"),
    ('{"0": 1.0, "1": NaN}', "finite"),
    (json.dumps({"0": 1, "x": 2}), "not a block index"),
])
def test_bad_importance_file_rejected_before_weights(config_only_dir, tmp_path, content, needle):
    p = tmp_path / "imp.json"
    p.write_text(content)
    with pytest.raises(HarnessError) as exc:
        backends.load(f"hf:{config_only_dir}", importance=str(p))
    assert needle in _one_line(exc)


def test_unsupported_architecture_lists_families(tmp_path):
    from transformers import LlamaConfig

    LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2).save_pretrained(tmp_path)
    with pytest.raises(HarnessError) as exc:
        backends.describe(f"hf:{tmp_path}")
    msg = _one_line(exc)
    assert "'llama'" in msg and "olmoe" in msg and "mixtral" in msg and "qwen3_moe" in msg


@pytest.mark.parametrize("spec,needle", [("foo:bar", "unknown model family"), ("gpt2", "unknown model"),
                                          ("random:nope", "random:molmoe-1b"), ("hf:/does/not/exist", "cannot read a model config")])
def test_bad_specs(spec, needle):
    with pytest.raises(HarnessError) as exc:
        backends.describe(spec)
    assert needle in _one_line(exc)


def test_bad_experts_impl_and_dtype(config_only_dir):
    with pytest.raises(HarnessError):
        backends.load(f"hf:{config_only_dir}", experts_impl="fast")
    with pytest.raises(HarnessError):
        backends.load(f"hf:{config_only_dir}", dtype="int3")


def test_qwen3_vl_moe_described_but_refused(tmp_path):
    from transformers import Qwen3VLMoeConfig

    cfg = Qwen3VLMoeConfig()
    cfg.text_config.num_hidden_layers = 4
    cfg.save_pretrained(tmp_path)
    info = backends.describe(f"hf:{tmp_path}")
    assert info.n_blocks == 4 and info.family == "qwen3_vl_moe"
    with pytest.raises(HarnessError) as exc:
        backends.load(f"hf:{tmp_path}")
    assert "deepstack" in _one_line(exc)


def test_qwen3_vl_skip_check_refuses_deepstack_blocks():
    from harness.backends.layouts import QWEN3_VL_MOE_TEXT
    from types import SimpleNamespace

    cfg = SimpleNamespace(vision_config=SimpleNamespace(deepstack_visual_indexes=[8, 16, 24]))
    QWEN3_VL_MOE_TEXT.skip_check(cfg, (0, 1, 2, 5, 7))  # deepstack blocks kept: fine
    with pytest.raises(HarnessError):
        QWEN3_VL_MOE_TEXT.skip_check(cfg, (0, 2, 3, 4))


def test_hf_directory_round_trip(tmp_path):
    tiny.save_model_dir("olmoe", tmp_path)
    b = backends.load(f"hf:{tmp_path}", experts_impl="batched_mm")
    assert b.info.n_blocks == 6 and b.experts_impl == "batched_mm"
    b.apply_knobs("4,2")
    assert b.active_blocks == (0, 1, 2, 3)
    with pytest.raises(HarnessError):
        b.apply_knobs("7,2")
