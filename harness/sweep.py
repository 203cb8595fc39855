"""Knob grids for ``harness sweep``: parsing, and the plan of run directories.

A grid is either a TOML file (by path, or by name from ``configs/grids/<name>.toml``) in the
knob-space format of :mod:`harness.policies.knob_space`, plus an optional ``tasks`` list::

    description = "..."
    tasks = ["vqav2", "scienceqa"]      # optional: used when --task is not given
    [grid]                              # cross product
    num_blocks = "12..16"               # a list of integers, or "A..B" (inclusive)
    top_k = [2, 4, 6, 8]
    tier = ["low", "medium", "high"]    # optional: left out = the model's default tier
    configs = ["14,6,low"]              # optional explicit configurations, added to the grid

or an inline text: ``"num_blocks=12..16 top_k=2,4,6,8 tier=low,high"`` (space-separated
``knob=values``; values are comma lists or ``A..B`` ranges).

Each (task, configuration) runs into ``<output>/<task>/<knobs slug>/`` (e.g.
``runs/sweep/vqav2/b14-k6-high``), so the output folder of a sweep is resumable as a whole and
can be passed straight to ``harness pareto`` / ``leaderboard`` / ``gate``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError
from harness.configs import CONFIG_DIR
from harness.knobs import Knobs
from harness.policies.knob_space import expand_values, find_toml, parse_knob_space, read_toml, validate_space

GRID_DIR = CONFIG_DIR / "grids"
_GRID_KNOBS = ("num_blocks", "top_k", "tier")
GRID_FORMAT = 'use "num_blocks=12..16 top_k=2,4,6,8 tier=low,high", a TOML file, or a name from configs/grids'


@dataclass
class Grid:
    name: str  # file stem, or "inline"
    source: str  # for messages
    configs: list[Knobs]  # in grid order, duplicates dropped; tier None = the model's default
    tasks: list[str]  # from the file's ``tasks`` (may be empty)
    description: str = ""


def available() -> list[str]:
    return sorted(p.stem for p in GRID_DIR.glob("*.toml"))


def parse_inline(text: str) -> dict:
    """``"num_blocks=12..16 top_k=2,4 tier=low,high"`` -> a knob-space document."""
    grid: dict[str, list] = {}
    tokens = text.replace(";", " ").split()
    if not tokens:
        raise HarnessError(f"the sweep is empty: --grid has no knob values; {GRID_FORMAT}")
    for tok in tokens:
        key, sep, value = tok.partition("=")
        key = {"blocks": "num_blocks", "b": "num_blocks", "k": "top_k", "topk": "top_k", "tiers": "tier"}.get(key.strip(), key.strip())
        if not sep or key not in _GRID_KNOBS:
            raise HarnessError(f"--grid token '{tok}' is not knob=values with knob one of {', '.join(_GRID_KNOBS)}; {GRID_FORMAT}")
        if key in grid:
            raise HarnessError(f"--grid gives {key} twice; list every value once, e.g. {key}=2,4,6")
        grid[key] = expand_values(value, key, "--grid:")
    return {"grid": grid}


def grid_path(spec: str) -> Path:
    return find_toml(spec, GRID_DIR, "grid", also=", an inline grid,", unknown_tail=f"; or {GRID_FORMAT}")


def load_grid(spec: str) -> Grid:
    """A grid from ``--grid``: inline text (contains ``=``), a TOML path, or a bundled name."""
    spec = str(spec).strip()
    if not spec:
        raise HarnessError(f"the sweep is empty: --grid is blank; {GRID_FORMAT}")
    if "=" in spec:
        doc, name, source = parse_inline(spec), "inline", f"'{spec}'"
    else:
        path = grid_path(spec)
        name, source = path.stem, f"'{path}'"
        doc = read_toml(path, "grid")
    tasks = doc.pop("tasks", [])
    if isinstance(tasks, str):
        tasks = [t.strip() for t in tasks.split(",") if t.strip()]
    if not isinstance(tasks, list) or not all(isinstance(t, str) for t in tasks):
        raise HarnessError(f"grid {source}: tasks must be a list of task names")
    grid = doc.get("grid")
    if isinstance(grid, dict):
        doc["grid"] = {k: (expand_values(v, k, f"grid {source}:") if k in _GRID_KNOBS else v) for k, v in grid.items()}
        for k in ("num_blocks", "top_k"):
            if k in doc["grid"] and not doc["grid"][k]:
                raise HarnessError(f"the sweep is empty: grid {source} gives no {k} values")
        if "tier" in doc["grid"] and not doc["grid"]["tier"]:
            raise HarnessError(f"the sweep is empty: grid {source} gives no tier values (leave tier out for the model's default)")
    if not doc.get("grid") and not doc.get("configs"):
        raise HarnessError(f"the sweep is empty: grid {source} has no [grid] table and no configs list; {GRID_FORMAT}")
    try:
        configs = parse_knob_space(doc, f"grid {source}" if name != "inline" else "--grid")
    except HarnessError as exc:
        msg = str(exc).replace("knob space grid", "grid").replace("knob space --grid", "--grid")
        raise HarnessError(msg)
    return Grid(name=name, source=source, configs=configs, tasks=list(tasks), description=str(doc.get("description", "")))


def validate_configs(configs: list[Knobs], info, source: str) -> list[Knobs]:
    """Check every configuration against the model (before weights load); fill default tiers."""
    return validate_space(configs, info, f"grid {source}" if not source.startswith("grid") else source)


@dataclass(frozen=True)
class PlannedRun:
    task: str
    knobs: Knobs
    folder: Path


def plan(task_names: list[str], configs: list[Knobs], output: str | Path) -> list[PlannedRun]:
    """One run directory per (task, configuration): ``<output>/<task>/<slug>``."""
    if not task_names or not configs:
        raise HarnessError("the sweep is empty: it needs at least one task and one configuration")
    root = Path(output)
    return [PlannedRun(t, k, root / t / k.slug) for t in task_names for k in configs]


def run_status(folder: Path, run_config: dict, n_expected: int) -> tuple[bool, int]:
    """``(finished, samples done)`` of a planned run directory, read-only (a dry run writes nothing).

    A folder holding a run with another configuration is a one-line error, as in ``harness run``."""
    import json

    from harness.jsonio import read_json
    from harness.records import RUN_FILE, SAMPLES_FILE, SUMMARY_FILE, config_differences

    run_path = folder / RUN_FILE
    if not run_path.is_file():
        return False, 0
    old = read_json(run_path, "run file")
    old_cfg = old.get("run_config") if isinstance(old, dict) else None
    if not isinstance(old_cfg, dict):
        raise HarnessError(f"'{run_path}' is not a harness run file; pass another --output or delete that folder")
    diffs = config_differences(old_cfg, json.loads(json.dumps(run_config, default=str)))
    if diffs:
        raise HarnessError(f"'{folder}' holds a run with a different configuration ({'; '.join(diffs[:3])}"
                           f"{'; ...' if len(diffs) > 3 else ''}); pass another --output or delete that folder")
    ids = set()
    samples = folder / SAMPLES_FILE
    if samples.is_file():
        for line in samples.read_bytes().split(b"\n"):
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict) and "id" in obj:
                ids.add(str(obj["id"]))
    return len(ids) >= n_expected and (folder / SUMMARY_FILE).is_file(), len(ids)
