"""A source checkout says what it needs: it runs without `pip install -e .` (the top-level
metrics/, tasks/ and configs/ map into ``harness`` as setup.cfg maps them), and a missing dependency
is one line, not a traceback. Devices whose latency cannot be measured are refused by name."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.errors import HarnessError

ROOT = Path(__file__).resolve().parents[1]
# drop the editable install's finders so that only the copied checkout can provide `harness`
NO_INSTALL = ("import sys; sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in "
              "getattr(f, '__name__', type(f).__name__).lower()]; ")


def _checkout(tmp_path: Path) -> Path:
    dst = tmp_path / "clone"
    ignore = shutil.ignore_patterns("__pycache__", "*.safetensors")
    for name in ("harness", "metrics", "tasks", "configs"):
        shutil.copytree(ROOT / name, dst / name, ignore=ignore)
    shutil.copy(ROOT / "setup.cfg", dst / "setup.cfg")
    return dst


def _run(clone: Path, code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", NO_INSTALL + code], cwd=clone, capture_output=True, text=True,
                          timeout=300)


def test_uninstalled_checkout_runs_python_m_harness(tmp_path):
    clone = _checkout(tmp_path)
    res = _run(clone, "import runpy; sys.argv = ['harness', 'tasks']; runpy.run_module('harness', run_name='__main__')")
    assert res.returncode == 0, res.stderr
    assert "scienceqa" in res.stdout
    res = _run(clone, "import harness.configs, harness.metrics, harness.tasks; print(harness.configs.__file__)")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().startswith(str(clone / "configs"))


def test_missing_dependency_is_one_line(tmp_path):
    clone = _checkout(tmp_path)
    # `click` made unimportable, as in a clone whose dependencies were never installed
    res = _run(clone, "sys.modules['click'] = None; import runpy; sys.argv = ['harness', 'tasks']; "
                      "runpy.run_module('harness', run_name='__main__')")
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "click" in lines[0] and "pip install -e ." in lines[0], res.stderr


@pytest.mark.parametrize("device", ["mps", "mps:0"])
def test_mps_refused_by_name(device):
    from harness.run_setup import resolve_device

    with pytest.raises(HarnessError, match="MPS") as err:
        resolve_device(device)
    assert "--device cpu or cuda" in str(err.value)


def test_mps_refused_before_weights_on_the_cli(tmp_path):
    res = subprocess.run([sys.executable, "-m", "harness", "run", "--task", "scienceqa", "--knobs", "14,6", "--device",
                          "mps", "--output", str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 2
    assert res.stderr.strip().startswith("error:") and "Traceback" not in res.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("samples.jsonl"))
