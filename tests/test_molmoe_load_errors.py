"""Loading MolmoE's remote code: the user's explicit trust, the import-scan fix, and one-line
errors naming the real cause (missing dependency, missing weights, remote code that does not fit)."""

from __future__ import annotations

import json

import pytest
import torch

from harness import backends
from harness.backends import molmoe_remote as mr
from harness.errors import HarnessError
from molmoe_real import REMOTE, require_remote, torchvision_reason, write_checkpoint


def _evil_folder(tmp_path):
    """A folder whose config points at its own Python file, which leaves a marker when imported."""
    marker = tmp_path / "ran"
    (tmp_path / "config.json").write_text(json.dumps({
        "auto_map": {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.Evil"},
        "model_type": "molmo", "n_layers": 16, "moe_top_k": 8}))
    (tmp_path / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    return marker


def test_molmoe_refuses_remote_code_without_explicit_trust(tmp_path):
    marker = _evil_folder(tmp_path)
    info = backends.describe(f"molmoe:{tmp_path}")  # reads config.json only: allowed
    assert info.n_blocks == 16
    with pytest.raises(HarnessError) as err:
        backends.load(f"molmoe:{tmp_path}")
    msg = str(err.value)
    assert "--trust-remote-code" in msg and "trust_remote_code" in msg and "Python files" in msg and "\n" not in msg
    assert not marker.exists()


def test_import_scan_ignores_imports_inside_functions():
    require_remote()
    from transformers import dynamic_module_utils as dmu

    path = REMOTE / "image_preprocessing_molmo.py"
    assert "tensorflow" in dmu.get_imports(path)  # what makes transformers ask for tensorflow
    assert {"einops", "torchvision", "numpy", "torch"} <= mr.module_level_imports(path)
    assert "tensorflow" not in mr.module_level_imports(path)
    original = dmu.get_imports
    with mr.lenient_import_scan():
        scanned = dmu.get_imports(path)
        assert "tensorflow" not in scanned and "torchvision" in scanned
        try:
            dmu.check_imports(path)
        except ImportError as exc:  # only what the module really imports may be reported missing
            assert "tensorflow" not in str(exc)
    assert dmu.get_imports is original


def test_missing_weights_named(tmp_path):
    require_remote()
    folder = write_checkpoint(tmp_path / "no-weights", weights=False)
    with pytest.raises(HarnessError, match="no weights") as err:
        mr.load_model(str(folder), "m", torch.float32)
    assert "\n" not in str(err.value)


def test_remote_code_that_does_not_fit_is_named(tmp_path):
    require_remote()
    folder = write_checkpoint(tmp_path / "odd", weights=False)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["auto_map"]["AutoModelForCausalLM"] = "modeling_molmoe.NoSuchModel"
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(HarnessError, match="does not fit this transformers"):
        mr.load_model(str(folder), "m", torch.float32)


def test_processor_without_torchvision_names_the_extra(tmp_path):
    require_remote()
    if torchvision_reason() is None:
        pytest.skip("torchvision imports here")
    folder = write_checkpoint(tmp_path / "p", weights=False)
    with pytest.raises(HarnessError) as err:
        mr.load_processor(str(folder), "m")
    assert "torchvision" in str(err.value) and "pip install -e '.[molmoe]'" in str(err.value)


@pytest.mark.parametrize("exc, expect", [
    (ModuleNotFoundError("No module named 'einops'", name="einops"), "needs 'einops'"),
    (ImportError("This modeling file requires the following packages that were not found in your environment: "
                 "torchvision. Run `pip install torchvision`"), "needs 'torchvision'"),
    (RuntimeError("operator torchvision::nms does not exist"), "torchvision is installed but does not import"),
    (TypeError("tie_weights() got an unexpected keyword argument 'x'"), "does not fit this transformers"),
])
def test_load_error_names_the_cause(tmp_path, exc, expect):
    (tmp_path / "model.safetensors").write_bytes(b"")
    msg = str(mr.load_error(exc, str(tmp_path), "m"))
    assert expect in msg and "\n" not in msg
    if "needs" in expect:
        assert mr.EXTRA in msg


def _cli(argv, capsys) -> str:
    """Run the harness CLI; it must exit 2. Returns stderr."""
    from harness.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["run", "--task", "scienceqa", "--knobs", "14,6"],
    ["sweep", "--grid", "ci", "--task", "scienceqa"],
    ["profile"],
])
def test_cli_needs_trust_remote_code_and_writes_nothing(tmp_path, capsys, argv):
    _evil_folder(tmp_path)
    out = tmp_path / "out"
    err = _cli(argv + ["--model", f"molmoe:{tmp_path}", "--output", str(out)], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--trust-remote-code" in lines[0]
    assert not out.exists() and not (tmp_path / "ran").exists()


def test_config_key_trust_remote_code_reaches_the_dependency_check(tmp_path, capsys):
    require_remote()
    if torchvision_reason() is None:
        pytest.skip("torchvision imports here: the dependency check passes")
    folder = write_checkpoint(tmp_path / "ckpt", weights=False)
    cfg = tmp_path / "run.toml"
    cfg.write_text("trust_remote_code = true\n")
    out = tmp_path / "out"
    err = _cli(["run", "--task", "scienceqa", "--model", f"molmoe:{folder}", "--config", str(cfg), "--output", str(out)], capsys)
    assert "--trust-remote-code" not in err and len(err.strip().splitlines()) == 1
    assert "torchvision" in err and "pip install -e '.[molmoe]'" in err and not out.exists()
