"""The declared stack: every third-party import of the installed packages is declared in
setup.cfg, nothing declared goes unused, the declared lower bounds are the ones the code needs,
and constraints.txt pins the whole resolved stack exactly, within those bounds, for CI and the
README's test command."""

from __future__ import annotations

import ast
import configparser
import importlib.metadata as md
import re
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("harness", "tasks", "metrics", "configs")  # the folders setup.cfg installs
OPTIONAL = {"pynvml": "GPU driver version when NVIDIA's bindings happen to be installed"}
NOT_IMPORTED = {"tokenizers": "transformers reads the models' tokenizer.json through it; the lower bound is ours"}


def _cfg() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return cfg


def _requirements(key: str = "install_requires", section: str = "options") -> dict[str, Requirement]:
    lines = [ln.strip() for ln in _cfg()[section][key].splitlines() if ln.strip()]
    return {canonicalize_name(r.name): r for r in map(Requirement, lines)}


def _third_party_imports() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top != "harness":
                        found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_import_is_declared_and_every_declaration_used():
    declared = _requirements()
    dists = md.packages_distributions()
    used: set[str] = set()
    for module, files in sorted(_third_party_imports().items()):
        if module in OPTIONAL:
            continue
        assert module in dists, f"{module} (imported in {sorted(files)}) is not installed"
        names = {canonicalize_name(d) for d in dists[module]}
        assert names & set(declared), f"{module} (imported in {sorted(files)}) comes from {names}, not declared in setup.cfg"
        used |= names & set(declared)
    unused = set(declared) - used - set(NOT_IMPORTED)
    assert not unused, f"declared in setup.cfg but never imported: {sorted(unused)}"


def test_declared_lower_bounds_cover_what_the_code_calls():
    declared = _requirements()
    # PIL.ImageFont.load_default(size=...) is Pillow 10.1+; scipy.stats.bootstrap(rng=...) is 1.15+
    for name, needed in (("pillow", "10.1"), ("scipy", "1.15")):
        spec = declared[name].specifier
        assert not spec.contains("10.0" if name == "pillow" else "1.14"), f"{name} allows versions below {needed}"
        assert spec.contains(needed)


def test_constraints_pin_the_resolved_stack_within_setup_cfg():
    text = (ROOT / "constraints.txt").read_text()
    pins = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([A-Za-z0-9_.\-]+)", line)
        assert m, f"constraints.txt line {line!r} is not an exact name==version pin"
        pins[canonicalize_name(m.group(1))] = Version(m.group(2))
    assert "moe-harness" not in pins  # the project itself is not pinned
    wanted = dict(_requirements())
    wanted.update(_requirements("test", "options.extras_require"))
    seen, todo = set(), list(wanted)
    while todo:  # the closure of install_requires and the test extra
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        assert name in pins, f"{name} is needed but not pinned in constraints.txt; run tools/refresh_constraints.sh"
        if name in wanted:
            assert wanted[name].specifier.contains(pins[name], prereleases=True), \
                f"constraints.txt pins {name}=={pins[name]} outside setup.cfg's {wanted[name].specifier}"
        try:
            reqs = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        for raw in reqs:
            req = Requirement(raw)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(req.name))


@pytest.mark.parametrize("where", [".ci/run", "README.md"])
def test_ci_and_readme_install_with_the_constraints(where):
    text = (ROOT / where).read_text()
    installs = [ln for ln in text.splitlines() if re.search(r"pip install .*\.\[test\]", ln)]
    assert installs and all("-c constraints.txt" in ln for ln in installs)
