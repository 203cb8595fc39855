"""The shared plugin registry: decorator, lazy built-ins, module:attr, include-path, did-you-mean."""

import sys
import textwrap

import pytest

from harness.errors import HarnessError
from harness.registry import Registry, import_attr, import_path


def test_decorator_and_aliases():
    reg = Registry("widget", "harness.test-widgets")

    @reg.register("alpha", aliases=["a1"])
    class Alpha:
        pass

    assert reg.get("alpha") is Alpha
    assert reg.get("A1") is Alpha
    assert reg.canonical("a1") == "alpha"
    assert reg.names() == ["alpha"]


def test_unknown_name_suggests_close_match():
    reg = Registry("widget", "harness.test-widgets")
    reg.add("scienceqa", object())
    with pytest.raises(HarnessError, match="Did you mean 'scienceqa'"):
        reg.get("sciencqa")


def test_duplicate_registration_is_an_error():
    reg = Registry("widget", "harness.test-widgets")
    reg.add("x", 1)
    with pytest.raises(HarnessError, match="registered twice"):
        reg.add("x", 2)


def test_lazy_builtin_is_imported_on_first_use(tmp_path, monkeypatch):
    pkg = tmp_path / "lazy_widgets_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "beta.py").write_text(textwrap.dedent("""
        from tests_registry_shared import REG
        @REG.register("beta")
        def beta():
            return 42
    """))
    shared = tmp_path / "tests_registry_shared.py"
    shared.write_text("from harness.registry import Registry\nREG = Registry('widget', 'harness.test-widgets', builtins={'beta': 'lazy_widgets_pkg.beta'})\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import tests_registry_shared

    assert "lazy_widgets_pkg.beta" not in sys.modules
    assert tests_registry_shared.REG.get("beta")() == 42
    assert "lazy_widgets_pkg.beta" in sys.modules


def test_module_attr_lookup():
    assert import_attr("harness.knobs:Knobs").__name__ == "Knobs"
    reg = Registry("widget", "harness.test-widgets")
    assert reg.get("harness.knobs:select_blocks").__name__ == "select_blocks"
    with pytest.raises(HarnessError, match="has no attribute"):
        import_attr("harness.knobs:Nope")
    with pytest.raises(HarnessError, match="cannot import module"):
        import_attr("no_such_module_xyz:thing")


def test_import_path_registers_plugins(tmp_path):
    reg_mod = tmp_path / "plug.py"
    reg_mod.write_text("import harness.registry as r\nr._TEST_FLAG = 'loaded'\n")
    names = import_path(tmp_path)
    import harness.registry as r

    assert names and r._TEST_FLAG == "loaded"
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.py").write_text("raise RuntimeError('boom')\n")
    with pytest.raises(HarnessError, match="RuntimeError: boom"):
        import_path(bad)
    with pytest.raises(HarnessError, match="not a directory"):
        import_path(tmp_path / "missing")
