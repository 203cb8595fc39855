"""Runs record a fingerprint of the model weights; a retrained model is not comparable to the old
one in a Pareto table and cannot be resumed into an old run directory."""

import json

from harness.backends import model_fingerprint


def test_fingerprint_tracks_config_and_weights(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "olmoe"}))
    (d / "model.safetensors").write_bytes(b"\x00" * 4096)
    (d / "README.md").write_text("notes do not count")
    fp = model_fingerprint(f"hf:{d}")
    assert fp and len(fp) == 16 and model_fingerprint(f"hf:{d}") == fp
    (d / "README.md").write_text("changed notes")
    assert model_fingerprint(f"hf:{d}") == fp
    (d / "model.safetensors").write_bytes(b"\x00" * 4095 + b"\x01")
    fp2 = model_fingerprint(f"hf:{d}")
    assert fp2 != fp
    (d / "config.json").write_text(json.dumps({"model_type": "olmoe", "x": 1}))
    assert model_fingerprint(f"hf:{d}") not in (fp, fp2)


def test_no_local_weights_no_fingerprint():
    assert model_fingerprint("random:molmoe-1b") is None
    assert model_fingerprint("hf:some-org/some-model") is None
    assert model_fingerprint("not a spec") is None
    assert model_fingerprint("reference")  # the bundled model is a local directory
