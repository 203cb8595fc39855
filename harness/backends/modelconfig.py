"""Per-model harness settings from a TOML file under ``configs/models/``: tiers (image side or
MolmoE ``max_crops``), default tier and prompt template.

Lookup for a spec: ``<model dir>/harness.toml`` if the model is a local directory, else
``configs/models/<name>.toml`` (``name`` = ``reference``, ``molmoe-1b``, ``random-molmoe-1b`` or the
last component of an ``hf:`` id/path, lower-cased), else defaults derived from the model config.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import HarnessError
from harness.configs import CONFIG_DIR as CONFIG_ROOT
from harness.knobs import TIERS

CONFIG_DIR = CONFIG_ROOT / "models"


@dataclass(frozen=True)
class TierSpec:
    name: str
    image_size: int | None = None  # square side in pixels (hf VLMs)
    max_crops: int | None = None  # MolmoE preprocessor crops


@dataclass
class ModelSettings:
    tiers: dict[str, TierSpec] = field(default_factory=dict)
    default_tier: str | None = None
    prompt_template: str = "{prompt}"
    source: str = "defaults"
    extra: dict = field(default_factory=dict)

    def tier(self, name: str | None) -> TierSpec | None:
        if not self.tiers:
            return None
        name = name or self.default_tier
        if name not in self.tiers:
            raise HarnessError(f"tier '{name}' is not defined for this model ({self.source}); use one of {', '.join(self.tiers)}")
        return self.tiers[name]


def find_config(name: str, model_dir: Path | None = None) -> Path | None:
    if model_dir is not None and (model_dir / "harness.toml").is_file():
        return model_dir / "harness.toml"
    p = CONFIG_DIR / f"{name.lower()}.toml"
    return p if p.is_file() else None


def resolve_model_config(value: str | Path) -> Path:
    """``--model-config``: a TOML file, or the name of one in ``configs/models/`` (without ``.toml``)."""
    p = Path(value).expanduser()
    if p.is_file():
        return p
    named = CONFIG_DIR / f"{str(value).lower().removesuffix('.toml')}.toml"
    if named.is_file():
        return named
    known = ", ".join(sorted(f.stem for f in CONFIG_DIR.glob("*.toml")))
    raise HarnessError(f"--model-config '{value}' is neither a TOML file nor a name in configs/models ({known})")


def load_settings(path: Path | None) -> ModelSettings:
    if path is None:
        return ModelSettings()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise HarnessError(f"model config '{path}' is unreadable or not TOML ({exc}); fix the file")
    tiers: dict[str, TierSpec] = {}
    for name, spec in (data.get("tiers") or {}).items():
        if name not in TIERS:
            raise HarnessError(f"model config '{path}': unknown tier '{name}'; tiers are {', '.join(TIERS)}")
        if not isinstance(spec, dict) or not ({"image_size", "max_crops"} & set(spec)):
            raise HarnessError(f"model config '{path}': tier '{name}' needs image_size or max_crops")
        tiers[name] = TierSpec(name, spec.get("image_size"), spec.get("max_crops"))
    tiers = {t: tiers[t] for t in TIERS if t in tiers}
    default = data.get("default_tier") or (list(tiers)[-1] if tiers else None)
    if tiers and default not in tiers:
        raise HarnessError(f"model config '{path}': default_tier '{default}' is not one of its tiers ({', '.join(tiers)})")
    template = data.get("prompt_template", "{prompt}")
    if "{prompt}" not in template:
        raise HarnessError(f"model config '{path}': prompt_template must contain '{{prompt}}'")
    extra = {k: v for k, v in data.items() if k not in ("tiers", "default_tier", "prompt_template")}
    return ModelSettings(tiers, default, template, str(path), extra)
