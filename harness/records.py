"""Run directories: ``run.json`` (the configuration), ``samples.jsonl`` (one line per finished
sample, appended and flushed as it finishes) and ``summary.json`` (written atomically at the end).

Resume: opening a directory that already holds a run with the *same* configuration returns the
finished lines, so the runner skips those ids; a half-written last line (the process was killed
mid-write) is cut off and that sample is redone. A directory holding a run with a *different*
configuration is refused with a one-line message naming what differs.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

from harness.errors import HarnessError
from harness.jsonio import atomic_write_json, dumps_line, read_json

RUN_FILE = "run.json"
SAMPLES_FILE = "samples.jsonl"
SUMMARY_FILE = "summary.json"
RECORD_FORMAT = "harness-run/1"


def check_writable(folder: str | Path) -> Path:
    """Create ``folder`` if needed and prove a file can be written there (nothing is left behind)."""
    p = Path(folder)
    if p.exists() and not p.is_dir():
        raise HarnessError(f"output path '{p}' exists and is not a directory; pass --output to a folder")
    try:
        p.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".harness-write-test.", dir=p)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise HarnessError(f"output directory '{p}' is not writable ({exc.strerror or exc}); pass --output to a writable folder")
    return p


def config_differences(old: dict, new: dict) -> list[str]:
    """Human-readable ``key: old -> new`` for every differing key of two run configs."""
    diffs = []
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            diffs.append(f"{key}: {_short(old.get(key))} -> {_short(new.get(key))}")
    return diffs


def _short(v: Any) -> str:
    s = json.dumps(v, sort_keys=True, default=str)
    return s if len(s) <= 60 else s[:57] + "..."


class RunRecord:
    """One task's run directory, opened for appending."""

    def __init__(self, folder: Path, run_config: dict, finished: dict[str, dict], resumed_from: int):
        self.folder = folder
        self.run_config = run_config
        self.finished = finished  # id -> line (in file order)
        self.resumed_from = resumed_from  # number of lines found at open
        self._fh = None

    # -- opening ----------------------------------------------------------------------------------
    @classmethod
    def open(cls, folder: str | Path, run_config: dict) -> "RunRecord":
        folder = check_writable(folder)
        run_path = folder / RUN_FILE
        samples_path = folder / SAMPLES_FILE
        if run_path.exists():
            old = read_json(run_path, "run file")
            old_cfg = old.get("run_config") if isinstance(old, dict) else None
            if not isinstance(old_cfg, dict):
                raise HarnessError(f"'{run_path}' is not a harness run file; pass --output to another folder")
            new_cfg = json.loads(json.dumps(run_config, default=str))
            diffs = config_differences(old_cfg, new_cfg)
            if diffs:
                raise HarnessError(f"'{folder}' holds a run with a different configuration ({'; '.join(diffs[:3])}"
                                   f"{'; ...' if len(diffs) > 3 else ''}); pass another --output or delete that folder")
        elif samples_path.exists() and samples_path.stat().st_size > 0:
            raise HarnessError(f"'{folder}' holds {SAMPLES_FILE} but no {RUN_FILE}, so it cannot be resumed safely; pass another --output")
        else:
            from harness.jsonio import atomic_write_json as _w

            _w(run_path, {"format": RECORD_FORMAT, "run_config": run_config})
        finished = cls._read_finished(samples_path)
        return cls(folder, run_config, finished, len(finished))

    @staticmethod
    def _read_finished(path: Path) -> dict[str, dict]:
        """Finished lines by id; a half-written last line is cut off the file."""
        if not path.exists():
            return {}
        raw = path.read_bytes()
        keep = len(raw)
        if raw and not raw.endswith(b"\n"):
            keep = raw.rfind(b"\n") + 1  # 0 when the only line is partial
        lines = raw[:keep].split(b"\n")
        finished: dict[str, dict] = {}
        offset = 0
        bad_tail = None
        for lineno, line in enumerate(lines, start=1):
            start = offset
            offset += len(line) + 1
            if not line.strip():
                continue
            try:
                obj = json.loads(line.decode("utf-8"))
                if not isinstance(obj, dict) or "id" not in obj:
                    raise ValueError("no id")
            except (ValueError, UnicodeDecodeError):
                if offset >= keep:  # the last complete-looking line is garbage: redo it too
                    bad_tail = start
                    continue
                raise HarnessError(f"{path}:{lineno}: corrupted record line; delete the folder or pass another --output")
            finished[str(obj["id"])] = obj
        if bad_tail is not None:
            keep = bad_tail
        if keep != len(raw):
            with open(path, "r+b") as fh:
                fh.truncate(keep)
        return finished

    # -- writing ----------------------------------------------------------------------------------
    @property
    def samples_path(self) -> Path:
        return self.folder / SAMPLES_FILE

    @property
    def summary_path(self) -> Path:
        return self.folder / SUMMARY_FILE

    def append(self, line: dict) -> None:
        """Append one finished sample and flush it to the OS before returning."""
        if self._fh is None:
            self._fh = open(self.samples_path, "a", encoding="utf-8")
        self._fh.write(dumps_line(line) + "\n")
        self._fh.flush()
        self.finished[str(line["id"])] = line

    def extend(self, lines: Iterable[dict]) -> None:
        for line in lines:
            self.append(line)

    def rewrite_samples(self, lines: list[dict]) -> None:
        """Replace ``samples.jsonl`` atomically (used to fill in corpus-level per-sample scores)."""
        self.close()
        from harness.jsonio import atomic_write_text

        atomic_write_text(self.samples_path, "".join(dumps_line(x) + "\n" for x in lines))
        self.finished = {str(x["id"]): x for x in lines}

    def write_summary(self, summary: dict) -> None:
        atomic_write_json(self.summary_path, summary)

    def close(self) -> None:
        if self._fh is not None:
            try:
                self._fh.flush()
                os.fsync(self._fh.fileno())
            except OSError:
                pass
            self._fh.close()
            self._fh = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
