"""Loading MolmoE's own remote code (``trust_remote_code``) on the project's transformers 5.x,
without editing any of the checkpoint's files.

The published ``modeling_molmoe.py`` / ``preprocessing_molmo.py`` were written for transformers
4.4x. On 5.x they fail in four places; each is fixed here, in memory, at load time:

1. ``MolmoForCausalLM.__init__`` never calls ``post_init()``, so ``from_pretrained`` finds no
   ``all_tied_weights_keys``: :func:`compat_model_class` loads a subclass whose ``__init__``
   calls ``post_init()`` when the remote one did not;
2. 5.x calls ``tie_weights(missing_keys=..., recompute_mapping=...)``; the remote override takes
   no arguments (and ties nothing: its ``forward`` reads the embedding itself when
   ``weight_tying`` is set). The subclass accepts and drops them;
3. transformers' import scan refuses a remote module that mentions an uninstalled package
   anywhere, even in a function body of a branch never taken (the image processor imports
   ``tensorflow`` only under ``resize_method == "tensorflow"``). :func:`lenient_import_scan`
   limits the scan to module-level imports, the only ones executed when the module loads;
4. ``forward`` without ``use_cache`` reads ``config.use_cache``, which the 5.x config does not
   carry: the subclass defaults it to True, as config.json says. The remote ``generate``/``generate_from_batch``
   still fail (``cache_position``); the harness never calls them (its own decode loop calls
   ``forward``).

Errors are one line naming the real cause (:func:`load_error`): a missing or unimportable
dependency (``pip install -e '.[molmoe]'``), remote code that does not fit, missing weights.
"""

from __future__ import annotations

import ast
import contextlib
from pathlib import Path

from harness.errors import HarnessError

EXTRA = "pip install -e '.[molmoe]'"
DEPENDENCIES = ("einops", "torchvision")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def module_level_imports(filename: str | Path) -> set[str]:
    """Top-level package names imported when ``filename`` is imported: every ``import`` outside
    function bodies (functions import lazily, when called)."""
    try:
        tree = ast.parse(Path(filename).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return set()
    names: set[str] = set()

    def visit(node):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if isinstance(child, ast.Import):
                names.update(alias.name.split(".")[0] for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and not child.level and child.module:
                names.add(child.module.split(".")[0])
            visit(child)

    visit(tree)
    return names


@contextlib.contextmanager
def lenient_import_scan():
    """While active, transformers' check of a remote module's imports considers only the imports
    that run when the module loads (see :func:`module_level_imports`)."""
    from transformers import dynamic_module_utils as dmu

    original = dmu.get_imports

    def scan(filename):
        executed = module_level_imports(filename)
        return [name for name in original(filename) if name.split(".")[0] in executed]

    dmu.get_imports = scan
    try:
        yield
    finally:
        dmu.get_imports = original


def compat_model_class(cls: type) -> type:
    """A subclass of the remote ``MolmoForCausalLM`` that follows transformers 5's loading
    protocol (points 1, 2 and 4 of the module docstring); its name and module stay the remote ones."""
    if getattr(cls, "_harness_compat", False):
        return cls

    def __init__(self, config, *args, **kwargs):
        cls.__init__(self, config, *args, **kwargs)
        if not hasattr(self, "all_tied_weights_keys"):
            self.post_init()

    def tie_weights(self, *args, **kwargs):
        return cls.tie_weights(self)

    def forward(self, *args, use_cache=None, **kwargs):
        if use_cache is None:  # 4.x kept config.json's "use_cache": true on the config; 5.x drops it
            use_cache = bool(getattr(self.config, "use_cache", True))
        return cls.forward(self, *args, use_cache=use_cache, **kwargs)

    body = {"__init__": __init__, "tie_weights": tie_weights, "forward": forward, "_harness_compat": True,
            "__module__": cls.__module__, "__qualname__": cls.__qualname__, "__doc__": cls.__doc__}
    return type(cls.__name__, (cls,), body)


def check_dependencies(name: str) -> None:
    """The packages the remote code imports (einops; torchvision for the image processor) import here."""
    import importlib

    for module in DEPENDENCIES:
        try:
            importlib.import_module(module)
        except Exception as exc:
            raise load_error(exc, "", name, "processor") from None


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the harness draws its own progress
    hf_logging.set_verbosity_error()  # 5.x deprecation notices about the 4.x-style remote code, once per process


def load_model(path: str, name: str, dtype):
    """The checkpoint's own ``MolmoForCausalLM`` (through :func:`compat_model_class`). Runs the
    checkpoint's Python files: callers check the user's trust first."""
    from transformers import AutoConfig
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    _quiet_transformers()
    with lenient_import_scan():
        try:
            config = AutoConfig.from_pretrained(path, trust_remote_code=True)
            ref = (getattr(config, "auto_map", None) or {}).get("AutoModelForCausalLM")
            if not ref:
                raise HarnessError(f"{name}: '{path}' has no auto_map.AutoModelForCausalLM in config.json; is this a MolmoE checkpoint?")
            cls = compat_model_class(get_class_from_dynamic_module(ref, path))
            return cls.from_pretrained(path, config=config, dtype=dtype, trust_remote_code=True)
        except HarnessError:
            raise
        except Exception as exc:
            raise load_error(exc, path, name, "model") from None


def load_processor(path: str, name: str):
    """The checkpoint's own ``MolmoProcessor`` (needs einops and an importable torchvision)."""
    from transformers import AutoProcessor

    _quiet_transformers()
    with lenient_import_scan():
        try:
            return AutoProcessor.from_pretrained(path, trust_remote_code=True)
        except Exception as exc:
            raise load_error(exc, path, name, "processor") from None


# -- errors -------------------------------------------------------------------------------------
def _first_line(exc: BaseException, width: int = 200) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:width]


def missing_weights(path: str) -> bool:
    p = Path(path)
    return p.is_dir() and not any((p / f).is_file() for f in WEIGHT_FILES)


def load_error(exc: BaseException, path: str, name: str, what: str = "model") -> HarnessError:
    """The one-line error for a failed load of the remote model or processor, naming the cause."""
    msg = _first_line(exc)
    missing = getattr(exc, "name", None) if isinstance(exc, ModuleNotFoundError) else None
    if missing is None and "requires the following packages" in msg:
        missing = msg.split(":", 1)[-1].split(".")[0].strip()
    if missing:
        cpu = " (with a CPU-only torch, see the README's MolmoE section first)" if "torchvision" in missing else ""
        return HarnessError(f"{name}: the MolmoE remote code needs '{missing}', which is not installed; run {EXTRA}{cpu}")
    if "torchvision" in msg or "torchvision" in repr(getattr(exc, "__cause__", "")):
        return HarnessError(f"{name}: torchvision is installed but does not import next to this torch ({msg}); "
                            "install the torchvision build that matches your torch (see README: MolmoE on a CPU-only torch)")
    if what == "model" and isinstance(exc, OSError) and missing_weights(path):
        return HarnessError(f"{name}: '{path}' has the MolmoE config but no weights ({', '.join(WEIGHT_FILES[::2])}); "
                            "download the full checkpoint folder")
    return HarnessError(f"{name}: the remote {what} code in '{path}' does not fit this transformers "
                        f"({type(exc).__name__}: {msg}); the harness supports allenai/MolmoE-1B-0924's published files")
