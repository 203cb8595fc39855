"""``--model-config``: other harness settings (tiers, prompt template) for a model, named in the
model of every record so that such runs never mix with the default settings' runs."""

import pytest

from harness import api, backends
from harness.errors import HarnessError


def _toml(tmp_path, high=96):
    p = tmp_path / "wide.toml"
    p.write_text(f'default_tier = "high"\n[tiers.low]\nimage_size = 32\n[tiers.medium]\nimage_size = 64\n'
                 f'[tiers.high]\nimage_size = {high}\n')
    return p


def test_named_config_sets_molmo_evaluation_crops(tmp_path):
    (tmp_path / "config.json").write_text('{"n_layers": 16, "moe_top_k": 8}')
    default = backends.describe(f"molmoe:{tmp_path}")
    info = backends.describe(f"molmoe:{tmp_path}", "molmoe-1b-molmo-eval")
    assert info.name == f"molmoe:{tmp_path} [molmoe-1b-molmo-eval]" and default.name == f"molmoe:{tmp_path}"
    settings = backends._settings(backends.parse_spec(f"molmoe:{tmp_path}"), "molmoe-1b-molmo-eval")
    assert {t: s.max_crops for t, s in settings.tiers.items()} == {"low": 6, "medium": 12, "high": 36}


def test_unknown_config_is_one_line():
    with pytest.raises(HarnessError, match="--model-config 'nope' is neither a TOML file nor a name in configs/models.*molmoe-1b-molmo-eval"):
        backends.describe("reference", "nope")


def test_run_records_the_config_and_refuses_to_mix(tmp_path):
    cfg = _toml(tmp_path)
    out = tmp_path / "run"
    res = api.evaluate("scienceqa", "14,6", limit=2, model_config=str(cfg), output=out, estimator="none")
    assert res.summary["model"] == "reference [wide]"
    lines = res.samples[0]
    assert {line["vision_tokens"] for line in lines if line.get("vision_tokens")} == {36}  # (96 / 16)^2
    with pytest.raises(HarnessError):
        api.evaluate("scienceqa", "14,6", limit=2, output=out, estimator="none")  # default settings: not resumed into
    cfg.write_text(cfg.read_text().replace("96", "112"))
    with pytest.raises(HarnessError):
        api.evaluate("scienceqa", "14,6", limit=2, model_config=str(cfg), output=out, estimator="none")  # edited file
