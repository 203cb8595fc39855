"""User estimators with the signature of docs/contracts.md plug in unchanged (--estimator module:attr)."""

from __future__ import annotations

import pytest
import torch

from harness.errors import HarnessError
from harness.latency.estimator import EstimatorInput, load_estimator, probe
from harness.latency.plugin import PluginError

ROW = EstimatorInput(top_k=4, num_active_blocks=12, tier_idx=2, vision_tokens=100, text_tokens=30, output_tokens=5)


class UserEstimator(torch.nn.Module):
    """Exactly the users' form: keyword tensors of shape [batch] -> dict of [batch] tensors."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(1.0))

    def forward(self, vision_tokens, text_tokens, tier_idx, top_k, num_active_blocks, token_position):
        for t in (vision_tokens, text_tokens, tier_idx, top_k, num_active_blocks, token_position):
            assert t.ndim == 1 and t.shape == vision_tokens.shape
        pre = self.scale * (1.0 + 0.1 * vision_tokens + 0.05 * text_tokens + 0.5 * num_active_blocks + top_k + tier_idx)
        dec = self.scale * (0.2 * num_active_blocks + 0.01 * token_position)
        return {"T_prefill_total": pre, "T_decode_per_token": dec}


class TierEmbedding(torch.nn.Module):
    """Needs integer inputs (an embedding on tier_idx)."""

    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(3, 1)
        torch.nn.init.constant_(self.emb.weight, 2.0)

    def forward(self, vision_tokens, text_tokens, tier_idx, top_k, num_active_blocks, token_position):
        base = self.emb(tier_idx).squeeze(-1)
        return {"T_prefill_total": base * 10, "T_decode_per_token": base}


def decode_total_fn(vision_tokens, text_tokens, tier_idx, top_k, num_active_blocks, token_position):
    return {"T_prefill_total": vision_tokens * 0 + 7.0, "T_decode_total": token_position * 2.0}


class Raises(torch.nn.Module):
    def forward(self, **kw):
        raise RuntimeError("model file is corrupt")


def wrong_keys(**kw):
    return {"prefill": kw["vision_tokens"]}


SPEC = __name__


def _expected():
    pre = 1.0 + 0.1 * 100 + 0.05 * 30 + 0.5 * 12 + 4 + 2
    dec = sum(0.2 * 12 + 0.01 * p for p in range(1, 6))
    return pre, dec


def test_module_class_plugs_in_unchanged():
    est = load_estimator(f"{SPEC}:UserEstimator", None, "cpu")
    (e,) = est.predict([ROW])
    pre, dec = _expected()
    assert e.prefill_ms == pytest.approx(pre, rel=1e-5)
    assert e.decode_ms == pytest.approx(dec, rel=1e-5)
    assert e.total_ms == pytest.approx(pre + dec, rel=1e-5)
    assert est.name == f"{SPEC}:UserEstimator"


def test_batch_of_rows_with_different_output_lengths():
    est = load_estimator(f"{SPEC}:UserEstimator", None, "cpu")
    rows = [ROW, EstimatorInput(1, 10, 0, 0, 8, 1), EstimatorInput(2, 11, 1, 50, 9, 0)]
    out = est.predict(rows)
    assert out[1].decode_ms == pytest.approx(0.2 * 10 + 0.01)
    assert out[2].decode_ms == 0.0
    assert out[2].prefill_ms == pytest.approx(1 + 5 + 0.45 + 5.5 + 2 + 1, rel=1e-5)


def test_checkpoint_is_loaded(tmp_path):
    m = UserEstimator()
    with torch.no_grad():
        m.scale.fill_(2.0)
    ck = tmp_path / "est.pt"
    torch.save(m.state_dict(), ck)
    (e,) = load_estimator(f"{SPEC}:UserEstimator@{ck}", None, "cpu").predict([ROW])
    assert e.prefill_ms == pytest.approx(2 * _expected()[0], rel=1e-5)


def test_integer_inputs_fallback():
    (e,) = load_estimator(f"{SPEC}:TierEmbedding", None, "cpu").predict([ROW])
    assert e.prefill_ms == pytest.approx(20.0) and e.decode_ms == pytest.approx(10.0)


def test_callable_with_decode_total():
    (e,) = load_estimator(f"{SPEC}:decode_total_fn", None, "cpu").predict([ROW])
    assert e.prefill_ms == 7.0 and e.decode_ms == pytest.approx(10.0)


def test_failing_plugins_report_why():
    assert "model file is corrupt" in probe(load_estimator(f"{SPEC}:Raises", None, "cpu"))
    why = probe(load_estimator(f"{SPEC}:wrong_keys", None, "cpu"))
    assert "T_prefill_total" in why and "prefill" in why
    with pytest.raises(PluginError):
        load_estimator(f"{SPEC}:wrong_keys", None, "cpu").predict([ROW])


def test_bad_specs_are_one_line_errors(tmp_path):
    with pytest.raises(HarnessError, match="cannot import module"):
        load_estimator("no_such_module_xyz:Est", None, "cpu")
    with pytest.raises(HarnessError, match="has no attribute"):
        load_estimator(f"{SPEC}:Nope", None, "cpu")
    with pytest.raises(HarnessError, match="checkpoint"):
        load_estimator(f"{SPEC}:UserEstimator@{tmp_path}/missing.pt", None, "cpu")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(HarnessError, match="cannot load checkpoint"):
        load_estimator(f"{SPEC}:UserEstimator@{bad}", None, "cpu")


def test_run_continues_without_estimates_when_plugin_fails(run_fake):
    est = load_estimator(f"{SPEC}:Raises", None, "cpu")
    summary, lines, _ = run_fake(estimator=est)
    assert summary["n"] == 12 and summary["n_failed"] == 0
    assert all(ln["estimated"] is None for ln in lines)
    assert any("model file is corrupt" in n and "without estimates" in n for n in summary["notes"])
    assert summary["latency_ms"]["estimated"] is None


def test_run_reports_estimator_error_on_its_own_samples(run_fake):
    est = load_estimator(f"{SPEC}:UserEstimator", None, "cpu")
    summary, lines, _ = run_fake(estimator=est)
    err = summary["estimator_error"]
    manual = sum(abs(ln["estimated"]["total_ms"] - ln["measured"]["total_ms"]) / ln["measured"]["total_ms"] for ln in lines) / 12
    assert err["mape_total"] == pytest.approx(manual)
    assert 0.0 <= err["within_10pct"] <= 1.0
    assert summary["estimator"] == f"{SPEC}:UserEstimator"
