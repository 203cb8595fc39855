"""JSON / JSONL input and output with one-line errors and writes that never leave half a file."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from harness.errors import HarnessError


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, object)`` for each non-blank line; bad input raises HarnessError
    naming the file and line."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise HarnessError(f"cannot read '{path}': {exc.strerror or exc}; check the path")
    if not raw.strip():
        raise HarnessError(f"'{path}' is empty; expected one JSON object per line")
    for lineno, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise HarnessError(f"{path}:{lineno}: not valid UTF-8 (byte {exc.start}); re-encode the file as UTF-8")
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise HarnessError(f"{path}:{lineno}: malformed JSON ({exc.msg}, column {exc.colno}); each line must be one JSON object")
        if not isinstance(obj, dict):
            raise HarnessError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
        yield lineno, obj


def read_json(path: str | Path, what: str = "file") -> Any:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise HarnessError(f"{what} '{path}' does not exist")
    except (OSError, UnicodeDecodeError) as exc:
        raise HarnessError(f"cannot read {what} '{path}': {exc}")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise HarnessError(f"{what} '{path}' is not valid JSON ({exc.msg} at line {exc.lineno}); regenerate it")


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write via a temporary file in the same folder and rename: readers never see half a file."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file normal permissions
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_default) + "\n")


def dumps_line(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, default=_default)


def _default(o):
    if hasattr(o, "to_dict"):
        return o.to_dict()
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
    except ImportError:  # pragma: no cover
        pass
    return str(o)


def write_flush(fh, text: str) -> None:
    """Write and flush to the OS: the one place appended record lines hit the disk."""
    fh.write(text)
    fh.flush()


class LineAppender:
    """Appends lines to a file (JSON lines of a run or a profile), each flushed to the OS as it is
    written. A write that fails (disk full, quota) cuts the file back to where it was before that
    write, closes it and raises: no half line is ever left behind."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._fh = None

    def write(self, text: str) -> None:
        start = None
        try:
            if self._fh is None:
                self._fh = open(self.path, "a", encoding="utf-8")
            start = self._fh.tell()
            write_flush(self._fh, text)
        except OSError:
            self._abandon(start)
            raise

    def _abandon(self, start: int | None) -> None:
        if self._fh is not None:
            try:
                self._fh.close()  # may flush more of the failed line: cut below
            except OSError:
                pass
            self._fh = None
        if start is not None:
            try:
                os.truncate(self.path, start)
            except OSError:
                pass

    def close(self, sync: bool = True) -> None:
        if self._fh is not None:
            try:
                self._fh.flush()
                if sync:
                    os.fsync(self._fh.fileno())
            except OSError:
                pass
            self._fh.close()
            self._fh = None
