"""Run directories: ``run.json`` (the configuration), ``samples.jsonl`` (one line per finished
sample, appended and flushed as it finishes) and ``summary.json`` (written atomically at the end).

Resume: opening a directory that already holds a run with the *same* configuration returns the
finished lines, so the runner skips those ids; a half-written last line (the process was killed
mid-write) is cut off and that sample is redone. A directory holding a run with a *different*
configuration is refused with a one-line message naming what differs.

Nothing is created before there is something to keep: :meth:`RunRecord.open` only checks the
folder (writable, resumable), and the folder and ``run.json`` appear when the first sample line is
about to be written. A run that fails earlier (the model does not load, a bad estimator file)
leaves no folder behind. A write that fails (disk full, quota) cuts the half-written line off
again, removes a folder this run created if it holds no finished sample, and becomes a one-line
:class:`~harness.errors.HarnessError` saying that re-running resumes.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

from harness.errors import HarnessError
from harness.jsonio import LineAppender, atomic_write_json, dumps_line, read_json

RUN_FILE = "run.json"
SAMPLES_FILE = "samples.jsonl"
SUMMARY_FILE = "summary.json"
RECORD_FORMAT = "harness-run/1"


def check_writable(folder: str | Path) -> Path:
    """Prove that ``folder`` can be created or written without creating it: a file is created and
    removed in the nearest folder that exists (``folder`` itself, or an ancestor)."""
    p = Path(folder)
    if p.exists() and not p.is_dir():
        raise HarnessError(f"output path '{p}' exists and is not a directory; pass --output to a folder")
    probe = p
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        if not probe.is_dir():
            raise NotADirectoryError(20, "Not a directory")
        fd, tmp = tempfile.mkstemp(prefix=".harness-write-test.", dir=probe)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise HarnessError(f"output directory '{p}' is not writable ({exc.strerror or exc}); pass --output to a writable folder")
    return p


def disk_error(exc: OSError, path: Path, what: str, kept: int | None = None) -> HarnessError:
    """A failed write (disk full, quota, I/O error) as one line that says what was kept."""
    why = exc.strerror or str(exc)
    kept_txt = "" if kept is None else f" ({kept} finished sample(s) kept)"
    return HarnessError(f"cannot write {what} '{path}': {why}; free space (or pass --output elsewhere) and "
                        f"re-run the same command to resume{kept_txt}")


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
    """One task's run directory, opened for appending (created on the first write)."""

    def __init__(self, folder: Path, run_config: dict, finished: dict[str, dict], resumed_from: int,
                 exists: bool = True):
        self.folder = folder
        self.run_config = run_config
        self.finished = finished  # id -> line (in file order)
        self.resumed_from = resumed_from  # number of lines found at open
        self._out = LineAppender(folder / SAMPLES_FILE)
        self._exists = exists  # folder and run.json are on disk
        self._created: list[Path] | None = None  # set once this run wrote run.json: the folders it created

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
            return cls(folder, run_config, {}, 0, exists=False)
        finished = cls._read_finished(samples_path)
        from harness.parts import fold_parts

        fold_parts(folder, finished, samples_path)  # lines left by ranks of a sharded run that stopped
        return cls(folder, run_config, finished, len(finished))

    def _materialize(self) -> None:
        """Create the folder and ``run.json`` (before the first line is written)."""
        if self._exists:
            return
        missing = []
        p = self.folder
        while not p.exists() and p != p.parent:
            missing.append(p)
            p = p.parent
        try:
            self._created = missing
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.folder / RUN_FILE, {"format": RECORD_FORMAT, "run_config": self.run_config})
        except OSError as exc:
            self._remove_created()
            raise disk_error(exc, self.folder / RUN_FILE, "the run file")
        self._exists = True

    def _remove_created(self) -> None:
        """Undo what this run created (run.json, folders) when no finished sample is in it."""
        if self._created is None or self.finished:
            return
        for name in (SAMPLES_FILE, RUN_FILE):
            try:
                (self.folder / name).unlink()
            except OSError:
                pass
        for p in self._created:  # deepest first
            try:
                p.rmdir()
            except OSError:
                break
        self._created = None
        self._exists = self.folder.is_dir() and (self.folder / RUN_FILE).exists()

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
        """Append one finished sample and flush it to the OS before returning. A failed write
        leaves the file as it was before the call (:class:`harness.jsonio.LineAppender`)."""
        self._materialize()
        try:
            self._out.write(dumps_line(line) + "\n")
        except OSError as exc:
            self._remove_created()
            raise disk_error(exc, self.samples_path, "sample records", kept=len(self.finished))
        self.finished[str(line["id"])] = line

    def write_to(self, path: Path) -> None:
        """Append sample lines to ``path`` instead of ``samples.jsonl`` (a torchrun rank's part file)."""
        self.close()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._out = LineAppender(path)

    def extend(self, lines: Iterable[dict]) -> None:
        for line in lines:
            self.append(line)

    def rewrite_samples(self, lines: list[dict]) -> None:
        """Replace ``samples.jsonl`` atomically (used to fill in corpus-level per-sample scores)."""
        self.close()
        self._materialize()
        from harness.jsonio import atomic_write_text

        try:
            atomic_write_text(self.samples_path, "".join(dumps_line(x) + "\n" for x in lines))
        except OSError as exc:
            raise disk_error(exc, self.samples_path, "sample records", kept=len(self.finished))
        self.finished = {str(x["id"]): x for x in lines}

    def write_summary(self, summary: dict) -> None:
        self._materialize()
        try:
            atomic_write_json(self.summary_path, summary)
        except OSError as exc:
            raise disk_error(exc, self.summary_path, "the summary", kept=len(self.finished))

    def close(self) -> None:
        self._out.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
