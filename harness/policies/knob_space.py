"""Knob spaces: the candidate configurations a policy chooses from (``--knob-space``).

A knob space is a TOML file, by name from ``configs/knob_spaces/<name>.toml`` or by path::

    description = "..."
    [grid]                      # the cross product of these lists
    num_blocks = [12, 13, 14, 15, 16]  # or "12..16"
    top_k = [2, 4, 6, 8]
    tier = ["low", "medium", "high"]   # optional; left out = the model's default tier
    # and/or an explicit list (added to the grid):
    configs = ["14,6,low", "16,8,high"]

``harness sweep`` grid files use the same format (their ``tasks`` key is ignored here), so a
sweep's grid can be passed as the knob space of the policy evaluated on it.

With no ``--knob-space`` the space is the model's own grid: ``min_blocks..n_blocks`` x top_k
``2, 4, ..., max_top_k`` x every tier. Every configuration is validated against the model
before it loads; a bad one is a one-line error naming the file and the allowed range.
"""

from __future__ import annotations

import itertools
import tomllib
from pathlib import Path

from harness.errors import HarnessError
from harness.configs import CONFIG_DIR
from harness.knobs import Knobs, parse_tier

KNOB_SPACE_DIR = CONFIG_DIR / "knob_spaces"
_KEYS = {"description", "grid", "configs", "tasks"}  # tasks: harness sweep grid files (ignored here)
_GRID_KEYS = {"num_blocks", "top_k", "tier"}


def available() -> list[str]:
    """Names of the bundled knob spaces."""
    return sorted(p.stem for p in KNOB_SPACE_DIR.glob("*.toml"))


def find_toml(spec: str, directory: Path, what: str, *, also: str = "", unknown_tail: str = "") -> Path:
    """A TOML file by path, or by name from ``directory`` (the bundled ones). ``what`` names it in
    messages ("knob space", "grid"); ``also`` lists other accepted forms for a missing file,
    ``unknown_tail`` ends the message for an unknown name."""
    names = sorted(p.stem for p in directory.glob("*.toml"))
    p = Path(spec)
    if p.suffix == ".toml" or p.exists():
        if not p.is_file():
            raise HarnessError(f"{what} file '{spec}' does not exist; pass a TOML file{also} or one of: {', '.join(names)}")
        return p
    named = directory / f"{spec}.toml"
    if not named.is_file():
        from harness.suggest import did_you_mean

        hint = did_you_mean(spec, names)
        raise HarnessError(f"unknown {what} '{spec}'.{hint} Known: {', '.join(names)}{unknown_tail}")
    return named


def read_toml(path: Path, what: str) -> dict:
    """A parsed TOML document; unreadable or invalid files are one-line errors naming ``what``."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise HarnessError(f"{what} '{path}' is not valid TOML ({exc}); fix the file")
    except (OSError, UnicodeDecodeError) as exc:
        raise HarnessError(f"cannot read {what} '{path}': {exc}")


def knob_space_path(spec: str) -> Path:
    return find_toml(spec, KNOB_SPACE_DIR, "knob space", unknown_tail=" (or a path to a .toml file)")


def parse_knob_space(data: dict, source: str) -> list[Knobs]:
    """The configurations of a parsed knob-space TOML document (generic checks only)."""
    unknown = set(data) - _KEYS
    if unknown:
        raise HarnessError(f"knob space {source}: unknown key(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(_KEYS))}")
    out: list[Knobs] = []
    grid = data.get("grid")
    if grid is not None:
        if not isinstance(grid, dict):
            raise HarnessError(f"knob space {source}: [grid] must be a table of lists")
        bad = set(grid) - _GRID_KEYS
        if bad:
            raise HarnessError(f"knob space {source}: unknown [grid] key(s) {', '.join(sorted(bad))}; allowed: num_blocks, top_k, tier")
        grid = {k: (expand_values(v, k, f"knob space {source}: [grid]") if isinstance(v, (str, list)) else v) for k, v in grid.items()}
        for key in ("num_blocks", "top_k"):
            vals = grid.get(key)
            if not isinstance(vals, list) or not vals or not all(isinstance(v, int) and not isinstance(v, bool) for v in vals):
                raise HarnessError(f"knob space {source}: [grid] {key} must be a non-empty list of integers or \"A..B\"")
        tiers = grid.get("tier", [None])
        if not isinstance(tiers, list) or not tiers:
            raise HarnessError(f"knob space {source}: [grid] tier must be a non-empty list of tier names")
        tiers = [None if t is None else parse_tier(t) for t in tiers]
        for nb, tk, t in itertools.product(grid["num_blocks"], grid["top_k"], tiers):
            k = Knobs(nb, tk, t)
            k.check_generic()
            out.append(k)
    configs = data.get("configs", [])
    if not isinstance(configs, list):
        raise HarnessError(f"knob space {source}: configs must be a list of strings like \"14,6,low\"")
    for c in configs:
        try:
            out.append(Knobs.parse(str(c)))
        except HarnessError as exc:
            raise HarnessError(f"knob space {source}: {exc}")
    if not out:
        raise HarnessError(f"knob space {source} is empty; give a [grid] table or a configs list")
    return list(dict.fromkeys(out))  # drop duplicates, keep order


def expand_values(value, key: str, where: str) -> list:
    """One knob's values: ``"12..16"`` -> [12, ..., 16]; ``"2,4"`` -> [2, 4]; lists pass through
    with their range/comma strings expanded; ``tier`` values stay strings. ``where`` prefixes errors."""
    if isinstance(value, list):
        out = []
        for v in value:
            out += expand_values(v, key, where) if isinstance(v, str) and (".." in v or "," in v) else [v]
        return out
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    if not isinstance(value, str):
        raise HarnessError(f"{where} {key} = {value!r} is not a list, a number or a range like \"12..16\"")
    out = []
    for part in (p.strip() for p in value.split(",")):
        if not part:
            continue
        if ".." in part:
            lo, _, hi = part.partition("..")
            try:
                a, b = int(lo), int(hi)
            except ValueError:
                raise HarnessError(f"{where} {key} range '{part}' must be two integers like 12..16")
            if b < a:
                raise HarnessError(f"{where} {key} range '{part}' is empty (an empty range: end before start); write it as {b}..{a}")
            out += list(range(a, b + 1))
        elif key == "tier":
            out.append(part)
        else:
            try:
                out.append(int(part))
            except ValueError:
                raise HarnessError(f"{where} {key} value '{part}' is not an integer or a range like \"12..16\"")
    return out


def default_knob_space(model_info) -> list[Knobs]:
    """The model's own grid: ``min_blocks..n_blocks`` x top_k ``2,4,..,max_top_k`` x its tiers."""
    lo = model_info.min_blocks if getattr(model_info, "min_blocks", None) is not None else max(1, model_info.n_blocks - 4)
    top_ks = list(range(2, model_info.max_top_k + 1, 2)) or [1]
    tiers = list(getattr(model_info, "tiers", None) or [None])
    return [Knobs(nb, tk, t) for nb, tk, t in itertools.product(range(lo, model_info.n_blocks + 1), top_ks, tiers)]


def load_knob_space(spec: str | None, model_info=None) -> list[Knobs]:
    """``--knob-space`` -> validated configurations (tier filled with the model's default).

    ``spec``: None (the model's grid), a bundled name, or a TOML path."""
    if spec is None:
        if model_info is None:
            raise HarnessError("no knob space: pass --knob-space NAME|FILE.toml")
        space = default_knob_space(model_info)
        source = f"default grid of {getattr(model_info, 'name', 'the model')}"
    else:
        path = knob_space_path(str(spec))
        data = read_toml(path, "knob space")
        source = f"'{path}'"
        space = parse_knob_space(data, source)
    if model_info is None:
        return space
    return validate_space(space, model_info, source)


def validate_space(space: list[Knobs], model_info, source: str = "knob space") -> list[Knobs]:
    default_tier = getattr(model_info, "default_tier", None)
    out = []
    for k in space:
        try:
            k.validate(model_info.n_blocks, model_info.max_top_k, getattr(model_info, "min_blocks", None),
                       getattr(model_info, "tiers", None) or None, model=getattr(model_info, "name", "the model"))
        except HarnessError as exc:
            raise HarnessError(f"knob space {source}: config {k}: {exc}")
        out.append(k.with_tier(default_tier) if k.tier is None and default_tier else k)
    return list(dict.fromkeys(out))
