"""Rank-local part files of a run directory sharded over several processes.

While a ``harness run`` is spread over torchrun ranks, rank K appends each finished sample line to
``<run>/parts/rank-K.jsonl`` (flushed per line, as ``samples.jsonl`` is in a one-process run). The
resume state is the union of ``samples.jsonl`` and every part file, keyed by sample id, so it does
not depend on how many ranks wrote it: :func:`fold_parts` moves the lines of all part files into
``samples.jsonl`` (appending ids not there yet, then deleting the parts) when a run directory is
opened and when rank 0 merges a finished unit. The fold is safe to kill at any point: lines are
appended (and synced) before the part files go, a half-written line is cut off on the next open,
and a line found twice counts once.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from harness.jsonio import dumps_line

PARTS_DIR = "parts"


def part_path(folder: str | Path, rank: int) -> Path:
    return Path(folder) / PARTS_DIR / f"rank-{int(rank)}.jsonl"


def part_files(folder: str | Path) -> list[Path]:
    d = Path(folder) / PARTS_DIR
    if not d.is_dir():
        return []
    return sorted(d.glob("rank-*.jsonl"), key=lambda p: (len(p.name), p.name))


def read_lines(path: Path) -> list[dict]:
    """The complete JSON lines of a part file; a torn or garbled line (a killed writer) is skipped:
    that sample was not finished and is run again."""
    out = []
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return out
    for line in raw.split(b"\n"):
        if not line.strip():
            continue
        try:
            obj = json.loads(line.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            continue
        if isinstance(obj, dict) and "id" in obj:
            out.append(obj)
    return out


def fold_parts(folder: str | Path, finished: dict[str, dict], samples_path: Path) -> dict[str, int]:
    """Append the part files' lines whose ids are not in ``finished`` to ``samples_path`` (updating
    ``finished``), then delete the part files. Returns the number of lines found per part file name."""
    files = part_files(folder)
    if not files:
        return {}
    found: dict[str, int] = {}
    new: list[dict] = []
    for path in files:
        lines = read_lines(path)
        found[path.name] = len(lines)
        for obj in lines:
            key = str(obj["id"])
            if key not in finished:
                finished[key] = obj
                new.append(obj)
    if new:
        with open(samples_path, "a", encoding="utf-8") as fh:
            fh.write("".join(dumps_line(x) + "\n" for x in new))
            fh.flush()
            os.fsync(fh.fileno())
    for path in files:
        path.unlink(missing_ok=True)
    try:
        (Path(folder) / PARTS_DIR).rmdir()
    except OSError:  # another file in there: leave the folder
        pass
    return found
