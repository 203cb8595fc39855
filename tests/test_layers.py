"""Import arrows point down the pipeline only (the layer map of ARCHITECTURE.md): foundation ->
metrics/tasks -> latency -> decode/engine -> backends -> policies -> records -> runner ->
reports -> orchestration -> commands. A new module must be given a layer here and there."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"harness": "harness", "metrics": "harness.metrics", "tasks": "harness.tasks", "configs": "harness.configs"}

LAYERS = [
    ("foundation", {"errors", "suggest", "types", "knobs", "jsonio", "stats", "registry", "option_files", "configs",
                    "environment", "console", "limits", "hostload", "__version__", "zoo"}),
    ("metrics, tasks", {"metrics", "tasks"}),
    ("latency", {"latency"}),
    ("decode, engine", {"decode", "engine"}),
    ("backends", {"backends"}),
    ("policies", {"policies"}),
    ("records", {"records", "summary", "parts"}),
    ("runner", {"runner", "run_setup", "distributed", "sharding", "batch1_check", "host_overlap"}),
    ("reports", {"reports"}),
    ("orchestration", {"api", "sweep", "progress"}),
    ("commands", {"commands", "cli", "__main__", "harness"}),
]
RANK = {name: i for i, (_, names) in enumerate(LAYERS) for name in names}
# the allowed upward arrows, each for a stated reason
EXCEPTIONS = {
    ("policies", "reports"),  # budget/oracle policies read earlier sweeps through the one run-directory reader
}


def _module(path: Path) -> str:
    for folder, name in FOLDERS.items():
        try:
            rel = path.relative_to(ROOT / folder)
        except ValueError:
            continue
        parts = list(rel.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        return ".".join([name] + parts)
    raise AssertionError(path)


def _group(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "harness"


def _edges():
    for folder in FOLDERS:
        for path in (ROOT / folder).rglob("*.py"):
            src = _group(_module(path))
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    targets = [node.module] + ([f"{node.module}.{a.name}" for a in node.names] if node.module == "harness" else [])
                elif isinstance(node, ast.Import):
                    targets = [a.name for a in node.names]
                else:
                    continue
                for t in targets:
                    if t.startswith("harness.") or t == "harness":
                        yield path.relative_to(ROOT), src, _group(t) if t != "harness" else "harness"


def test_every_module_has_a_layer():
    missing = sorted({f"{src} ({path})" for path, src, _ in _edges() if src not in RANK})
    assert not missing, f"give these modules a layer in tests/test_layers.py and ARCHITECTURE.md: {missing}"


def test_imports_point_down_the_pipeline():
    bad = []
    for path, src, dst in _edges():
        if dst == "harness" and src != "harness":
            continue  # `from harness import __version__`-style imports of the package itself
        if src in RANK and dst in RANK and RANK[dst] > RANK[src] and (src, dst) not in EXCEPTIONS:
            bad.append(f"{path}: {src} ({LAYERS[RANK[src]][0]}) imports {dst} ({LAYERS[RANK[dst]][0]})")
    assert not bad, "upward imports:\n" + "\n".join(sorted(set(bad)))


def test_metrics_are_pure():
    """Metrics import neither torch nor anything above the foundation."""
    for path in (ROOT / "metrics").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "import torch" not in text, path
