"""Reading run directories (docs/contracts.md, "Run directories") for reports: Pareto tables, the leaderboard, the gate.

One place knows the run-record layout on the reading side:

- :func:`find_run_dirs` turns command-line paths (run dirs, or folders holding run dirs at any
  depth, e.g. a sweep's output) into a sorted list of run directories;
- :func:`load_run` reads and validates one ``summary.json`` into a typed :class:`RunInfo`;
  :meth:`RunInfo.sample_scores` reads ``samples.jsonl`` for per-sample main scores;
- :func:`check_comparable` refuses runs that must not share one table (different tasks, models,
  item sets, devices), naming what differs and which runs hold which value.

The item fingerprint (``data.fingerprint``: a hash of the ids, questions and references of the
evaluated items) decides whether two runs scored the same items.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from harness.environment import identity_key
from harness.errors import HarnessError
from harness.jsonio import iter_jsonl, read_json
from harness.knobs import TIER_INDEX, Knobs

SUMMARY = "summary.json"
SAMPLES = "samples.jsonl"
LATENCY_PARTS = ("prefill", "decode", "total")
LATENCY_STATS = ("mean", "p50", "p90", "p99")
_REQUIRED = ("task", "metric", "model", "data", "n", "score", "latency_ms", "device", "created")


# -- typed view of summary.json -----------------------------------------------------------------
@dataclass(frozen=True)
class Config:
    """What a run evaluated: fixed knobs, or a policy (with its arguments)."""

    knobs: Knobs | None = None
    policy: str | None = None  # canonical label, e.g. "budget(latency_budget_ms=120)"

    @property
    def label(self) -> str:
        if self.knobs is not None:
            return str(self.knobs)
        return f"policy:{self.policy}"

    @property
    def slug(self) -> str:
        if self.knobs is not None:
            return self.knobs.slug
        return "policy-" + "".join(c if c.isalnum() or c in "-_." else "-" for c in str(self.policy)).strip("-")

    def sort_key(self) -> tuple:
        """Fixed configurations first (by blocks, top_k, tier order), then policies by name."""
        if self.knobs is not None:
            k = self.knobs
            return (0, k.num_blocks, k.top_k, TIER_INDEX.get(k.tier, -1) if k.tier else -1, "")
        return (1, 0, 0, 0, str(self.policy))

    def to_dict(self) -> dict:
        return {"knobs": self.knobs.to_dict() if self.knobs else None, "policy": self.policy, "label": self.label}


@dataclass
class RunInfo:
    """One run directory, read from its ``summary.json``."""

    path: Path
    task: str
    metric: str
    model: str
    fingerprint: str
    data_source: str
    synthetic: bool
    config: Config
    n: int
    n_failed: int
    score: float | None
    score_ci95: tuple[float, float] | None
    scores: dict[str, float]
    latency: dict[str, dict[str, dict[str, float | None]] | None]  # measured/estimated -> part -> stat
    device: str
    device_name: str | None
    dtype: str | None
    batch_size: int | None
    harness_version: str | None
    created: str
    score_name: str | None
    summary: dict = field(repr=False, default_factory=dict)

    # -- convenience ----------------------------------------------------------------------------
    @property
    def label(self) -> str:
        return self.config.label

    @property
    def date(self) -> str:
        """The run's creation date, ``YYYY-MM-DD`` (from ``created``)."""
        return self.created[:10]

    def lat(self, kind: str, part: str = "total", stat: str = "p50") -> float | None:
        """A latency figure in ms: ``kind`` measured|estimated, ``part`` prefill|decode|total,
        ``stat`` mean|p50|p90|p99; None when the run has none (no estimator, all failed)."""
        block = self.latency.get(kind) or {}
        value = (block.get(part) or {}).get(stat)
        if value is None:
            return None
        value = float(value)
        return None if math.isnan(value) else value

    @property
    def device_key(self) -> str:
        """Which device timed the run: ``identity_key`` of the recorded device identity (CPU model
        and core count, GPU model); runs from before identities were recorded: device and name."""
        ident = self.summary.get("device_identity")
        return identity_key(ident) if isinstance(ident, dict) else f"{self.device}:{self.device_name or ''}"

    @property
    def environment(self) -> tuple:
        """What measured latency depends on besides the configuration."""
        return (self.device_key, self.dtype, self.batch_size)

    @property
    def environment_label(self) -> str:
        """``cpu (AMD EPYC 7R13, 2 cores) float32 batch 1``, ``cuda (NVIDIA H100 80GB HBM3) bfloat16
        batch 1``; older runs: the device and the name they recorded."""
        ident = self.summary.get("device_identity")
        name = ident.get("name") if isinstance(ident, dict) else self.device_name
        if isinstance(ident, dict) and ident.get("cores"):
            name = f"{name}, {ident['cores']} cores"
        parts = [self.device if not name or name == self.device else f"{self.device} ({name})"]
        parts += [str(self.dtype)] if self.dtype else []
        return " ".join(parts + ([f"batch {self.batch_size}"] if self.batch_size is not None else []))

    # -- per-sample records ---------------------------------------------------------------------
    def sample_records(self) -> list[dict]:
        path = self.path / SAMPLES
        if not path.is_file():
            raise HarnessError(f"run dir '{self.path}' has no {SAMPLES}; re-run `harness run` into it to complete it")
        seen: dict[str, dict] = {}
        for lineno, rec in iter_jsonl(path):
            if "id" not in rec:
                raise HarnessError(f"{path}:{lineno}: sample record has no 'id'; the run dir is corrupt, re-run it")
            seen[str(rec["id"])] = rec  # a resumed run may repeat an id: the last record wins
        return list(seen.values())

    def main_score_name(self, records: Sequence[dict] | None = None) -> str:
        """The sub-score that ``score`` summarises (the metric's first sub-score)."""
        if self.score_name:
            return self.score_name
        name = _metric_main_subscore(self.metric)
        if name:
            return name
        if self.metric in self.scores:
            return self.metric
        if len(self.scores) == 1:
            return next(iter(self.scores))
        for key, value in sorted(self.scores.items()):
            if self.score is not None and value is not None and abs(float(value) - self.score) < 1e-12:
                return key
        raise HarnessError(f"run dir '{self.path}': cannot tell which sub-score of metric '{self.metric}' is the main one; "
                           "add 'score_name' to summary.json or install the metric")

    def sample_scores(self) -> tuple[dict[str, float], list[str]]:
        """Per-sample main scores by id, and the ids of failed samples (scored 0: a failure is a
        wrong answer). Unlabelled samples (no scores, no error) are left out."""
        records = self.sample_records()
        name = None
        out: dict[str, float] = {}
        failed: list[str] = []
        for rec in records:
            sid = str(rec["id"])
            if rec.get("error"):
                out[sid] = 0.0
                failed.append(sid)
                continue
            value = rec.get("score")  # the main sub-score, as the runner writes it
            if value is None and rec.get("scores"):
                name = name or self.main_score_name(records)
                value = rec["scores"].get(name)
            if value is None:
                continue
            out[sid] = float(value)
        return out, sorted(failed)


def _metric_main_subscore(metric: str) -> str | None:
    try:
        from harness.metrics import get_metric  # the metrics package (optional at read time)
    except ImportError:
        return None
    try:
        return get_metric(metric).subscores[0]
    except Exception:  # an unknown or plugin metric that is not installed here
        return None


# -- loading ------------------------------------------------------------------------------------
def is_run_dir(path: Path) -> bool:
    return (path / SUMMARY).is_file()


def find_run_dirs(paths: Iterable[str | Path], what: str = "run directories") -> list[Path]:
    """Run dirs named on the command line, or found below folders (e.g. a sweep's output).

    A missing path, or a folder holding no run directory, is a one-line error. The result is
    sorted and free of duplicates."""
    found: set[Path] = set()
    paths = list(paths)
    if not paths:
        raise HarnessError(f"no {what} given; pass run directories or folders containing them")
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise HarnessError(f"'{raw}' does not exist; pass run directories written by `harness run` or `harness sweep`")
        if p.is_file():
            if p.name == SUMMARY:
                found.add(p.parent)
                continue
            raise HarnessError(f"'{raw}' is a file; pass a run directory (holding {SUMMARY}) or a folder of them")
        if is_run_dir(p):
            found.add(p)
            continue
        below = sorted(s.parent for s in p.rglob(SUMMARY))
        if not below:
            hint = " (it has samples.jsonl: the run did not finish; re-run it to write the summary)" if (p / SAMPLES).is_file() else ""
            raise HarnessError(f"'{raw}' holds no run directory (no {SUMMARY} in it or below){hint}")
        found.update(below)
    return sorted(found, key=lambda q: str(q))


def find_unfinished(paths: Iterable[str | Path]) -> list[Path]:
    """Folders below ``paths`` that hold a started run (``run.json`` or ``samples.jsonl``) but no
    ``summary.json``: reports skip them, commands say so."""
    out: set[Path] = set()
    for raw in paths:
        p = Path(raw)
        if not p.is_dir():
            continue
        for marker in ("run.json", SAMPLES):
            for f in ([p / marker] if (p / marker).is_file() else []) + sorted(p.rglob(marker)):
                if not (f.parent / SUMMARY).is_file():
                    out.add(f.parent)
    return sorted(out, key=str)


def _num(value: Any, key: str, path: Path, *, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise HarnessError(f"'{path}': '{key}' is {value!r}, not a number; the summary is corrupt, re-run `harness run` into its folder")
    return float(value)


def _model_name(model: Any) -> str:
    if isinstance(model, str):
        return model
    if isinstance(model, dict):
        for key in ("spec", "name", "id"):
            if model.get(key):
                return str(model[key])
    raise TypeError


def _policy_label(policy: Any) -> str:
    if isinstance(policy, str):
        return policy
    if isinstance(policy, dict):
        name = policy.get("name") or policy.get("spec")
        args = policy.get("args") or {}
        if not name:
            raise TypeError
        args = {k: v for k, v in args.items() if v is not None} if isinstance(args, dict) else {}
        if args:
            inner = ",".join(f"{k}={args[k]}" for k in sorted(args))
            return f"{name}({inner})"
        return str(name)
    raise TypeError


def _latency(block: Any, key: str, path: Path) -> dict | None:
    if block is None:
        return None
    if not isinstance(block, dict):
        raise HarnessError(f"'{path}': latency_ms.{key} must be an object of prefill/decode/total; the summary is corrupt")
    out: dict[str, dict[str, float | None]] = {}
    for part in LATENCY_PARTS:
        stats = block.get(part)
        if stats is None:
            out[part] = {}
            continue
        if not isinstance(stats, dict):
            raise HarnessError(f"'{path}': latency_ms.{key}.{part} must be an object {{mean, p50, p90, p99}}; the summary is corrupt")
        out[part] = {s: _num(stats.get(s), f"latency_ms.{key}.{part}.{s}", path, allow_none=True) for s in LATENCY_STATS}
    return out


def load_run(path: str | Path) -> RunInfo:
    """Read and check one run directory's ``summary.json``."""
    path = Path(path)
    spath = path / SUMMARY
    if not path.is_dir():
        raise HarnessError(f"run dir '{path}' does not exist")
    s = read_json(spath, what="run summary")
    if not isinstance(s, dict):
        raise HarnessError(f"'{spath}' is not a JSON object; the summary is corrupt, re-run `harness run` into its folder")
    missing = [k for k in _REQUIRED if k not in s]
    if "knobs" not in s and "policy" not in s:
        missing.append("knobs or policy")
    if missing:
        raise HarnessError(f"'{spath}' lacks {', '.join(missing)}; it was not written by this harness's `harness run` or is corrupt")
    data = s["data"]
    if not isinstance(data, dict) or not data.get("fingerprint"):
        raise HarnessError(f"'{spath}': data.fingerprint is missing; runs cannot be compared without the item fingerprint, re-run them")
    try:
        model = _model_name(s["model"])
    except TypeError:
        raise HarnessError(f"'{spath}': 'model' is {s['model']!r}, expected a name; the summary is corrupt")
    knobs = policy = None
    if s.get("knobs"):
        raw = s["knobs"]
        try:
            knobs = Knobs.from_dict(raw) if isinstance(raw, dict) else Knobs.parse(str(raw))
        except (KeyError, TypeError, ValueError, HarnessError) as exc:
            raise HarnessError(f"'{spath}': knobs {raw!r} are malformed ({exc}); the summary is corrupt")
    elif s.get("policy"):
        try:
            policy = _policy_label(s["policy"])
        except TypeError:
            raise HarnessError(f"'{spath}': policy {s['policy']!r} is malformed; expected a name or {{name, args}}")
    else:
        raise HarnessError(f"'{spath}': neither knobs nor policy is set; the summary is corrupt")
    ci = s.get("score_ci95")
    if ci is not None:
        if not (isinstance(ci, (list, tuple)) and len(ci) == 2):
            raise HarnessError(f"'{spath}': score_ci95 must be [lo, hi], got {ci!r}")
        lo, hi = (_num(v, "score_ci95", spath, allow_none=True) for v in ci)
        ci = None if lo is None or hi is None or math.isnan(lo) or math.isnan(hi) else (lo, hi)
    lat = s["latency_ms"]
    if not isinstance(lat, dict):
        raise HarnessError(f"'{spath}': latency_ms must be an object with measured and estimated; the summary is corrupt")
    scores = s.get("scores") or {}
    if not isinstance(scores, dict):
        raise HarnessError(f"'{spath}': scores must be an object of sub-score -> number")
    score = _num(s["score"], "score", spath, allow_none=True)
    if score is not None and math.isnan(score):
        score = None
    batch = s.get("batch_size")
    return RunInfo(
        path=path,
        task=str(s["task"]),
        metric=str(s["metric"]),
        model=model,
        fingerprint=str(data["fingerprint"]),
        data_source=str(data.get("source", "")),
        synthetic=bool(data.get("synthetic", False)),
        config=Config(knobs=knobs, policy=policy),
        n=int(_num(s["n"], "n", spath)),
        n_failed=int(_num(s.get("n_failed", 0), "n_failed", spath)),
        score=score,
        score_ci95=ci,
        scores={str(k): (None if v is None else float(v)) for k, v in scores.items() if isinstance(v, (int, float)) or v is None},
        latency={"measured": _latency(lat.get("measured"), "measured", spath),
                 "estimated": _latency(lat.get("estimated"), "estimated", spath)},
        device=str(s["device"]),
        device_name=None if not s.get("device_name") else str(s["device_name"]),
        dtype=None if s.get("dtype") is None else str(s["dtype"]),
        batch_size=None if batch is None else int(_num(batch, "batch_size", spath)),
        harness_version=None if s.get("harness_version") is None else str(s["harness_version"]),
        created=str(s["created"]),
        score_name=s.get("score_name") or s.get("main_score"),
        summary=s,
    )


def load_runs(paths: Iterable[str | Path], what: str = "run directories", warn=None) -> list[RunInfo]:
    """:func:`find_run_dirs` then :func:`load_run` on each, sorted by (task, config, path)."""
    paths = list(paths)
    runs = [load_run(p) for p in find_run_dirs(paths, what)]
    if warn is not None:
        left = find_unfinished(paths)
        if left:
            more = f" +{len(left) - 3} more" if len(left) > 3 else ""
            warn(f"skipped {len(left)} unfinished run dir(s) without {SUMMARY}: {', '.join(map(str, left[:3]))}{more} "
                 "(re-run them to finish)")
    runs.sort(key=lambda r: (r.task, r.model, r.config.sort_key(), str(r.path)))
    return runs
