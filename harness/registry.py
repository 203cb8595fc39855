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


def import_attr(spec: str):
    """Import ``package.module:attr`` (attr may be dotted) and return the object."""
    if ":" not in spec:
        raise HarnessError(f"'{spec}' is not of the form package.module:attr")
    mod_name, attr = spec.split(":", 1)
    try:
        obj = importlib.import_module(mod_name)
    except ImportError as exc:
        raise HarnessError(f"cannot import module '{mod_name}' from '{spec}': {exc}; check the name and PYTHONPATH")
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise HarnessError(f"module '{mod_name}' has no attribute '{attr}' (from '{spec}')")
        obj = getattr(obj, part)
    return obj


def import_path(folder: str | Path) -> list[str]:
    """Import every ``*.py`` file of a folder outside the package (``--include-path``).

    Returns the module names imported; decorators in them register their plugins.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise HarnessError(f"--include-path '{folder}' is not a directory; pass a folder of Python modules")
    names = []
    for path in sorted(folder.glob("*.py")):
        name = f"harness_include_{abs(hash(str(path.resolve())))}_{path.stem}"
        if name in sys.modules:
            names.append(name)
            continue
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # a user's broken plugin: one line, not a traceback
            del sys.modules[name]
            raise HarnessError(f"cannot import plugin file '{path}': {type(exc).__name__}: {exc}")
        names.append(name)
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
                raise HarnessError(f"entry point '{ep.name}' of group {self.group} failed to load: {type(exc).__name__}: {exc}")
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
        known = sorted(set(self._items) | set(self._aliases))
        hint = did_you_mean(key, known, cutoff=0.5)
        raise HarnessError(f"unknown {self.kind} '{name}'.{hint} Known: {', '.join(sorted(self._items))}")

    def __contains__(self, name: str) -> bool:
        try:
            self.get(name)
            return True
        except HarnessError:
            return False
