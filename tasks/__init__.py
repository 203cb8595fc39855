"""Benchmarks as plugins: one small module per task, registered with :func:`register`.

``registry`` resolves a task name (or alias) to a :class:`~tasks.base.Task` instance: built-in
tasks are imported lazily, installed packages add theirs through the ``harness.tasks`` entry
point group, ``--include-path DIR`` imports a folder of task modules
(:func:`harness.registry.import_path`), and ``package.module:attr`` names a task directly.
"""

from __future__ import annotations

from harness.errors import HarnessError
from harness.registry import Registry, import_path

# name or alias -> module that registers it (aliases are listed so a lazy lookup finds them)
_BUILTINS = {
    "scienceqa": "harness.tasks.scienceqa",
    "scienceqa-img": "harness.tasks.scienceqa",
    "textvqa": "harness.tasks.textvqa",
    "textvqa-val": "harness.tasks.textvqa",
    "okvqa": "harness.tasks.okvqa",
    "ok-vqa": "harness.tasks.okvqa",
    "vqav2": "harness.tasks.vqav2",
    "coco-vqa": "harness.tasks.vqav2",
    "tallyqa": "harness.tasks.tallyqa",
    "tally-qa": "harness.tasks.tallyqa",
    "stvqa": "harness.tasks.stvqa",
    "st-vqa": "harness.tasks.stvqa",
    "docvqa": "harness.tasks.docvqa",
    "docvqa-val": "harness.tasks.docvqa",
    "coco-caption": "harness.tasks.coco_caption",
    "coco-cap": "harness.tasks.coco_caption",
}

BUILTIN_TASKS = ("scienceqa", "textvqa", "okvqa", "vqav2", "tallyqa", "stvqa", "docvqa", "coco-caption")

registry: Registry = Registry("task", "harness.tasks", builtins=_BUILTINS)


def register(cls):
    """Class decorator: instantiate a :class:`~tasks.base.Task` subclass and register it under
    its ``name`` and ``aliases``."""
    registry.add(cls.name, cls(), aliases=cls.aliases)
    return cls


def get_task(name: str):
    """The :class:`~tasks.base.Task` for a name, alias or ``package.module:attr`` string."""
    from harness.tasks.base import Task

    obj = registry.get(name)
    if isinstance(obj, type) and issubclass(obj, Task):
        obj = obj()
    if not isinstance(obj, Task):
        raise HarnessError(f"task '{name}' resolves to {type(obj).__name__}, not a tasks.base.Task; register a Task subclass")
    return obj


def include_path(folder) -> list[str]:
    """``--include-path DIR``: import every task module in ``folder`` (their decorators register)."""
    return import_path(folder)


def split_names(values) -> list[str]:
    """``("a,b", "c")`` -> ``["a", "b", "c"]`` (order kept, duplicates dropped)."""
    if isinstance(values, str):
        values = [values]
    names: list[str] = []
    for v in values or ():
        for part in str(v).split(","):
            part = part.strip()
            if part and part not in names:
                names.append(part)
    return names


def resolve_tasks(tasks) -> list:
    """Task names (``all`` = the built-ins), Task objects, or a mix -> Task objects."""
    items = [tasks] if isinstance(tasks, str) or not isinstance(tasks, (list, tuple)) else list(tasks)
    names = [t for t in items if isinstance(t, str)]
    objs = [t for t in items if not isinstance(t, str) and t is not None]
    names = split_names(names)
    if not names and not objs:
        raise HarnessError("no task given; pass --task NAME (repeatable, comma list, or 'all'); see `harness tasks`")
    if any(n.lower() == "all" for n in names):
        names = list(BUILTIN_TASKS) or registry.names()
    out, seen = [], set()
    for t in [get_task(n) for n in names] + objs:
        if t.name not in seen:
            seen.add(t.name)
            out.append(t)
    return out


__all__ = ["registry", "register", "get_task", "include_path", "BUILTIN_TASKS", "resolve_tasks", "split_names"]
