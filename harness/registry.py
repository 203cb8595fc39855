"""Plugin registries shared by metrics, tasks, policies, backends and estimators.

A :class:`Registry` resolves a name in this order:

1. objects registered with the ``@registry.register("name", aliases=...)`` decorator;
2. built-in plugins, imported lazily on first use (``builtins={"name": "package.module"}``:
   importing the module runs its decorator);
3. installed packages exposing the registry's entry point group (e.g. ``harness.tasks``);
4. a ``package.module:attr`` string.

Unknown names raise :class:`~harness.errors.HarnessError` with a did-you-mean suggestion.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Callable, Generic, Iterable, TypeVar

from harness.errors import HarnessError
from harness.suggest import did_you_mean

T = TypeVar("T")


def describe_exception(exc: BaseException) -> str:
    """``Type: first line of the message`` (``file:line:`` first for a syntax error)."""
    if isinstance(exc, SyntaxError):
        where = f"{exc.filename}:{exc.lineno}: " if exc.filename else ""
        return f"{where}{type(exc).__name__}: {exc.msg}"
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def import_attr(spec: str):
    """Import ``package.module:attr`` (attr may be dotted) and return the object. The module may
    also be a file (``path/to/file.py:attr``) or the file name of a module that ``--include-path``
    imported (``file:attr`` for ``DIR/file.py``)."""
    if ":" not in spec:
        raise HarnessError(f"'{spec}' is not of the form package.module:attr")
    mod_name, attr = spec.split(":", 1)
    if mod_name.endswith(".py") or "/" in mod_name:
        path = Path(mod_name)
        if not path.is_file():
            raise HarnessError(f"'{mod_name}' (from '{spec}') is not a Python file; pass path/to/file.py:attr or package.module:attr")
        obj = _import_file(path)
    elif mod_name in _INCLUDED:
        obj = _INCLUDED[mod_name]
    else:
        obj = _import_module(mod_name, spec)
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise HarnessError(f"module '{mod_name}' has no attribute '{attr}' (from '{spec}')")
        obj = getattr(obj, part)
    return obj


def _import_module(mod_name: str, spec: str):
    try:
        return importlib.import_module(mod_name)
    except ModuleNotFoundError as exc:
        if exc.name and mod_name.startswith(exc.name):
            hint = " or the --include-path folder holding it" if "." not in mod_name else ""
            raise HarnessError(f"cannot import module '{mod_name}' from '{spec}': {exc}; check the name and PYTHONPATH{hint}")
        raise HarnessError(f"module '{mod_name}' (from '{spec}') failed to import: {describe_exception(exc)}; fix the module")
    except BaseException as exc:  # a user's broken plugin: one line, not a traceback
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        raise HarnessError(f"module '{mod_name}' (from '{spec}') failed to import: {describe_exception(exc)}; fix the module")


# file stem -> module, for the files --include-path imported (so ``file:attr`` finds them)
_INCLUDED: dict[str, object] = {}


def _import_file(path: Path):
    """Import one Python file outside the package under a private module name (once)."""
    name = f"harness_include_{abs(hash(str(path.resolve())))}_{path.stem}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # a user's broken plugin: one line, not a traceback
        del sys.modules[name]
        raise HarnessError(f"cannot import plugin file '{path}': {describe_exception(exc)}; fix the file")
    return module


def import_path(folder: str | Path) -> list[str]:
    """Import every ``*.py`` file of a folder outside the package (``--include-path``).

    Returns the module names imported; decorators in them register their plugins, and
    ``file:attr`` names an object of ``DIR/file.py`` (a plain class needs no decorator).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise HarnessError(f"--include-path '{folder}' is not a directory; pass a folder of Python modules")
    names = []
    for path in sorted(folder.glob("*.py")):
        module = _import_file(path)
        _INCLUDED.setdefault(path.stem, module)
        names.append(module.__name__)
    return names


class Registry(Generic[T]):
    """A name -> plugin map with lazy built-ins, entry points and ``module:attr`` lookup."""

    def __init__(self, kind: str, group: str, builtins: dict[str, str] | None = None):
        self.kind = kind  # e.g. "task", used in messages
        self.group = group  # entry point group, e.g. "harness.tasks"
        self._builtins = dict(builtins or {})
        self._items: dict[str, T] = {}
        self._aliases: dict[str, str] = {}
        self._entry_points_loaded = False

    # -- registration -------------------------------------------------------------------------
    def register(self, name: str, aliases: Iterable[str] = (), *, overwrite: bool = False) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            self.add(name, obj, aliases=aliases, overwrite=overwrite)
            return obj

        return deco

    def add(self, name: str, obj: T, aliases: Iterable[str] = (), *, overwrite: bool = False) -> None:
        key = self._norm(name)
        if key in self._items and self._items[key] is not obj and not overwrite:
            raise HarnessError(f"{self.kind} '{name}' is registered twice; rename one of them")
        self._items[key] = obj
        for alias in aliases:
            self._aliases[self._norm(alias)] = key

    # -- lookup -------------------------------------------------------------------------------
    @staticmethod
    def _norm(name: str) -> str:
        return name.strip().lower()

    def _load_builtin(self, key: str) -> None:
        module = self._builtins.get(key)
        if module and key not in self._items:
            importlib.import_module(module)

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for ep in entry_points(group=self.group):
            key = self._norm(ep.name)
            if key in self._items:
                continue
            try:
                obj = ep.load()
            except Exception as exc:
                raise HarnessError(f"entry point '{ep.name}' of group {self.group} failed to load: {describe_exception(exc)}")
            # a module whose import registered it, or the object itself
            if key not in self._items and not isinstance(obj, type(importlib)):
                self.add(ep.name, obj)

    def load_all(self) -> None:
        for key in list(self._builtins):
            self._load_builtin(key)
        self._load_entry_points()

    def names(self) -> list[str]:
        self.load_all()
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        self.load_all()
        return sorted(self._items.items())

    def aliases_of(self, name: str) -> list[str]:
        key = self._norm(name)
        return sorted(a for a, k in self._aliases.items() if k == key)

    def canonical(self, name: str) -> str:
        key = self._norm(name)
        return self._aliases.get(key, key)

    def get(self, name: str) -> T:
        if ":" in name and not name.startswith(("hf:", "molmoe:", "random:")):
            return import_attr(name)
        key = self._norm(name)
        for attempt in range(3):
            key = self._aliases.get(key, key)
            if key in self._items:
                return self._items[key]
            if attempt == 0:
                self._load_builtin(key)
            elif attempt == 1:
                self._load_entry_points()
        self.load_all()
        key = self._aliases.get(key, key)
        if key in self._items:
            return self._items[key]
        hint = did_you_mean(key, set(self._items) | set(self._aliases), cutoff=0.5)
        raise HarnessError(f"unknown {self.kind} '{name}'.{hint} Known: {', '.join(sorted(self._items))}")

    def __contains__(self, name: str) -> bool:
        try:
            self.get(name)
            return True
        except HarnessError:
            return False
