"""The installed layout: every folder of the installed tree that holds files (Python packages and
folders of data files alike, which setuptools otherwise warns about at install time) is listed in
setup.cfg under the harness namespace, and nothing generic (metrics, tasks, configs, tools, tests)
lands at the top of site-packages."""

import configparser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAPPED = {"harness": "harness", "metrics": "harness.metrics", "tasks": "harness.tasks", "configs": "harness.configs"}


def _setup_cfg():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    packages = {p.strip() for p in cfg["options"]["packages"].split() if p.strip()}
    package_dir = {}
    for line in cfg["options"]["package_dir"].strip().splitlines():
        name, _, folder = line.partition("=")
        package_dir[name.strip()] = folder.strip()
    return packages, package_dir


def test_every_package_folder_is_installed_under_the_harness_namespace():
    packages, package_dir = _setup_cfg()
    found = set()
    for top, name in MAPPED.items():
        for folder in [ROOT / top, *(ROOT / top).rglob("*")]:
            rel = folder.relative_to(ROOT / top).parts
            if folder.is_dir() and "__pycache__" not in rel and any(f.is_file() for f in folder.iterdir()):
                found.add(".".join((name,) + rel))
    assert found == packages, f"setup.cfg packages differ: missing {sorted(found - packages)}, extra {sorted(packages - found)}"
    assert {v for v in package_dir.values()} == set(MAPPED)
    assert all(p == "harness" or p.startswith("harness.") for p in packages)


def test_developer_tools_are_not_installed():
    packages, _ = _setup_cfg()
    assert not any(p.split(".")[-1] in {"tools", "tests", "fixtures", "zoo_training"} for p in packages)
    assert not (ROOT / "harness" / "backends" / "tiny.py").exists()
    assert not (ROOT / "harness" / "zoo" / "train_reference.py").exists()
