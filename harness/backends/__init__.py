"""Model backends: ``describe(spec)`` (configs only, no weights) and ``load(spec, ...)``.

Specs:
- ``reference``: the bundled model directory ``harness/zoo/reference`` (an ``hf:`` LLaVA+OLMoE);
- ``hf:<id-or-path>``: transformers-native OLMoE, Qwen3-MoE, Mixtral, LLaVA with one of those;
- ``molmoe:<id-or-path>``: allenai/MolmoE-1B-0924 through ``trust_remote_code``;
- ``random:molmoe-1b``: the MolmoE-1B shape with random weights, for latency profiling.

Knobs are validated with ``describe(spec).validate(knobs)`` before any weights load.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch

from harness.backends.base import EXPERTS_IMPLS, Backend, ModelInfo
from harness.backends.modelconfig import ModelSettings, find_config, load_settings, resolve_model_config
from harness.errors import HarnessError
from harness.knobs import load_importance, parse_importance

REFERENCE_DIR = Path(__file__).resolve().parents[1] / "zoo" / "reference"
SPEC_FORMS = "reference, hf:<id-or-path>, molmoe:<id-or-path>, random:molmoe-1b"
RANDOM_MODELS = ("molmoe-1b",)

__all__ = ["Backend", "ModelInfo", "describe", "load", "check_trust", "parse_spec", "model_fingerprint", "EXPERTS_IMPLS", "SPEC_FORMS"]

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_EDGE = 1 << 20  # bytes hashed at each end of a weight file


@dataclass(frozen=True)
class Spec:
    kind: str  # "hf" | "molmoe" | "random"
    target: str  # path / hub id / random model name
    name: str  # shown in records
    config_name: str  # configs/models/<config_name>.toml


def parse_spec(spec: str) -> Spec:
    spec = str(spec).strip()
    if spec == "reference":
        return Spec("hf", str(REFERENCE_DIR), "reference", "reference")
    kind, sep, target = spec.partition(":")
    if not sep or not target:
        from harness.suggest import did_you_mean

        hint = did_you_mean(spec, ("reference", *(f"random:{m}" for m in RANDOM_MODELS)))
        raise HarnessError(f"unknown model '{spec}'.{hint} Use one of: {SPEC_FORMS}")
    kind = kind.lower()
    if kind == "hf":
        return Spec("hf", target, spec, Path(target.rstrip("/")).name.lower())
    if kind == "molmoe":
        return Spec("molmoe", target, spec, "molmoe-1b")
    if kind == "random":
        if target not in RANDOM_MODELS:
            raise HarnessError(f"unknown random model '{target}'; available: {', '.join('random:' + m for m in RANDOM_MODELS)}")
        return Spec("random", target, spec, f"random-{target}")
    raise HarnessError(f"unknown model family '{kind}' in '{spec}'; supported: {SPEC_FORMS}")


def _settings(s: Spec, model_config=None) -> ModelSettings:
    if model_config is not None:
        return load_settings(resolve_model_config(model_config))
    model_dir = Path(s.target) if s.kind != "random" and Path(s.target).is_dir() else None
    return load_settings(find_config(s.config_name, model_dir))


def model_config_label(model_config) -> str:
    """How runs with a ``--model-config`` name their model: ``SPEC [label]``."""
    return resolve_model_config(model_config).stem


def _missing_reference(s: Spec) -> None:
    if s.name == "reference" and not (REFERENCE_DIR / "config.json").is_file():
        raise HarnessError(f"the bundled reference model is missing ({REFERENCE_DIR} has no config.json); reinstall the package or use hf:<path>")


def model_fingerprint(spec: str) -> str | None:
    """A short hash identifying the weights behind ``spec``, recorded in every run so that runs of
    a retrained model are never resumed into, or tabulated beside, runs of the old one.

    Local model directories hash ``config.json`` plus, for every weight file, its name, size and
    its first and last MiB (fast even for multi-GB checkpoints). Hub ids and random models have
    no local weights to hash: None."""
    import hashlib

    try:
        s = parse_spec(spec)
    except HarnessError:  # a name that is not a spec (plugins, test doubles): nothing to hash
        return None
    folder = Path(s.target)
    if s.kind == "random" or not folder.is_dir():
        return None
    h = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        if path.name == "config.json":
            h.update(b"config.json" + path.read_bytes())
        elif path.suffix in _WEIGHT_SUFFIXES and path.is_file():
            size = path.stat().st_size
            h.update(f"{path.name}:{size}".encode())
            with open(path, "rb") as fh:
                h.update(fh.read(_EDGE))
                if size > 2 * _EDGE:
                    fh.seek(size - _EDGE)
                    h.update(fh.read(_EDGE))
    return h.hexdigest()[:16]


def runs_remote_code(spec: str) -> bool:
    """Whether loading ``spec`` runs the checkpoint's own Python files (``molmoe:``), so that its
    commands need ``--trust-remote-code``."""
    try:
        return parse_spec(spec).kind == "molmoe"
    except HarnessError:
        return False


def check_trust(spec: str, trust_remote_code: bool) -> None:
    """Checks before anything is written or loaded: ``molmoe:`` specs run the checkpoint's own
    Python files (refused unless the user allowed it) and need the ``molmoe`` extra's packages."""
    if runs_remote_code(spec):
        s = parse_spec(spec)
        from harness.backends.molmoe import TRUST_MESSAGE
        from harness.backends.molmoe_remote import check_dependencies

        if not trust_remote_code:
            raise HarnessError(TRUST_MESSAGE.format(spec=s.name))
        check_dependencies(s.name)


def describe(spec: str, model_config=None) -> ModelInfo:
    """Model facts from config files only (no weights): block count, top_k range, tiers.
    ``model_config`` replaces the model's harness settings (tiers, prompt template); the model is
    then named ``SPEC [label]`` in every record, so its runs never mix with the default settings'."""
    info = _describe(spec, model_config)
    if model_config is not None:
        info.name = f"{info.name} [{model_config_label(model_config)}]"
    return info


def _describe(spec: str, model_config=None) -> ModelInfo:
    s = parse_spec(spec)
    settings = _settings(s, model_config)
    if s.kind == "hf":
        from harness.backends import hf

        _missing_reference(s)
        config = hf.load_config(s.target, s.name)
        if not settings.tiers:
            settings = hf.default_settings(config)
        return hf.info_from_config(config, s.name, settings)
    if s.kind == "molmoe":
        from harness.backends import molmoe

        return molmoe.describe(s.target, s.name, settings)
    from harness.backends import random_molmoe

    return random_molmoe.describe(s.name, settings)


def resolve_importance(importance, n_blocks: int) -> dict[int, float] | None:
    if importance is None:
        return None
    if isinstance(importance, (str, Path)):
        return load_importance(importance, n_blocks)
    if isinstance(importance, Mapping) or isinstance(importance, list):
        return parse_importance(importance, n_blocks)
    raise HarnessError(f"importance must be a JSON file path or a mapping, got {type(importance).__name__}")


def _dtype(dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if str(dtype) not in table:
        raise HarnessError(f"unknown dtype '{dtype}'; use float32, bfloat16 or float16")
    return table[str(dtype)]


def load(spec: str, device: str = "cpu", dtype="float32", importance=None, experts_impl: str = "grouped_mm",
         engine: str = "auto", trust_remote_code: bool = False, model_config=None) -> Backend:
    """Load a backend. Everything checkable from configs (family, importance file) is checked first.
    ``molmoe:`` runs the checkpoint's own Python files and needs ``trust_remote_code=True``."""
    if experts_impl not in EXPERTS_IMPLS:
        raise HarnessError(f"unknown experts implementation '{experts_impl}'; use one of {', '.join(EXPERTS_IMPLS)}")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise HarnessError(f"device '{device}' requested but CUDA is not available; use --device cpu")
    check_trust(spec, trust_remote_code)
    s = parse_spec(spec)
    from harness.engine import check as check_engine

    check_engine(engine)
    info = describe(spec, model_config)
    imp = resolve_importance(importance, info.n_blocks)
    settings = _settings(s, model_config)
    dt = _dtype(dtype)
    if s.kind == "hf":
        from harness.backends import hf

        if not settings.tiers:
            settings = hf.default_settings(hf.load_config(s.target, s.name))
        return hf.load_hf(s.target, info, settings, device, dt, imp, experts_impl, engine)
    if s.kind == "molmoe":
        from harness.backends import molmoe

        return molmoe.load(s.target, info, settings, device, dt, imp, experts_impl, engine, trust_remote_code)
    from harness.backends import random_molmoe

    return random_molmoe.load(info, settings, device, dt, imp, experts_impl, engine)
