"""Accuracy-latency Pareto tables from run directories (``harness pareto``).

Definitions (also printed in the markdown):

- Configuration A **dominates** B when A's score >= B's score and A's latency <= B's latency,
  with at least one of the two strictly better. Scores are maximised, latency is minimised.
- A configuration is **Pareto-optimal** when no other configuration dominates it. Ties: two
  configurations with exactly equal score and latency do not dominate each other, so both stay
  on the frontier (or both off it).
- For a dominated configuration, ``dominated_by`` names the Pareto-optimal configuration that
  dominates it with the highest score (then the lowest latency, then the first in config order).
- Rows without a score (unlabelled data) or without that latency (no estimator) get no flag.

Latency is a run's per-sample latency statistic (``p50`` by default, or ``mean``) of ``total``
(or ``prefill``/``decode``), computed twice: from measured latency and from the estimator's.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from harness.reports.comparable import check_comparable, check_unique_configs, group_by_task
from harness.reports.rundirs import LATENCY_PARTS, RunInfo

KINDS = ("measured", "estimated")
PARETO_STATS = ("p50", "mean")
FORMAT = "harness-pareto/1"


# -- the frontier -------------------------------------------------------------------------------
def frontier(points: Sequence[tuple[float, float] | None]) -> list[tuple[bool | None, int | None]]:
    """For each ``(score, latency)`` point (None = not comparable): ``(optimal, dominator)``.

    ``optimal`` is None for None points; ``dominator`` is the index of the optimal point that
    dominates a dominated one (highest score, then lowest latency, then lowest index)."""
    idx = [i for i, p in enumerate(points) if p is not None]

    def dominates(a, b) -> bool:
        (sa, la), (sb, lb) = points[a], points[b]
        return sa >= sb and la <= lb and (sa > sb or la < lb)

    optimal = {i: not any(dominates(j, i) for j in idx if j != i) for i in idx}
    out: list[tuple[bool | None, int | None]] = []
    for i, p in enumerate(points):
        if p is None:
            out.append((None, None))
        elif optimal[i]:
            out.append((True, None))
        else:
            doms = [j for j in idx if optimal[j] and dominates(j, i)]
            best = min(doms, key=lambda j: (-points[j][0], points[j][1], j))
            out.append((False, best))
    return out


# -- table rows ---------------------------------------------------------------------------------
@dataclass
class ParetoRow:
    run: RunInfo
    latency: dict[str, dict[str, dict[str, float | None]]]  # kind -> part -> {p50, mean}
    pareto: dict[str, bool | None] = field(default_factory=dict)  # kind -> flag
    dominated_by: dict[str, str | None] = field(default_factory=dict)  # kind -> config label

    @property
    def label(self) -> str:
        return self.run.label

    @property
    def score(self) -> float | None:
        return self.run.score

    def to_dict(self) -> dict:
        r = self.run
        return {
            "task": r.task,
            "metric": r.metric,
            "fingerprint": r.fingerprint,
            "config": r.label,
            "knobs": r.config.knobs.to_dict() if r.config.knobs else None,
            "policy": r.config.policy,
            "model": r.model,
            "run_dir": str(r.path),
            "n": r.n,
            "n_failed": r.n_failed,
            "score": r.score,
            "score_ci95": list(r.score_ci95) if r.score_ci95 else None,
            "latency_ms": self.latency,
            "pareto_measured": self.pareto.get("measured"),
            "dominated_by_measured": self.dominated_by.get("measured"),
            "pareto_estimated": self.pareto.get("estimated"),
            "dominated_by_estimated": self.dominated_by.get("estimated"),
        }


@dataclass
class ParetoTable:
    task: str
    metric: str
    model: str
    fingerprint: str
    data_source: str
    environment: str
    part: str
    stat: str
    rows: list[ParetoRow]

    def to_dict(self) -> dict:
        return {"task": self.task, "metric": self.metric, "model": self.model, "fingerprint": self.fingerprint,
                "data_source": self.data_source, "environment": self.environment,
                "rows": [r.to_dict() for r in self.rows]}


def rank_runs(runs: Sequence[RunInfo], part: str = "total", stat: str = "p50") -> list[ParetoRow]:
    """Pareto flags of ``runs`` (one comparable set) for measured and estimated latency."""
    rows = [ParetoRow(run=r, latency={k: {p: {s: r.lat(k, p, s) for s in PARETO_STATS} for p in LATENCY_PARTS}
                                      for k in KINDS}) for r in runs]
    for kind in KINDS:
        pts = []
        for row in rows:
            lat = row.run.lat(kind, part, stat)
            pts.append(None if row.score is None or lat is None else (row.score, lat))
        for row, (opt, dom) in zip(rows, frontier(pts)):
            row.pareto[kind] = opt
            row.dominated_by[kind] = rows[dom].label if dom is not None else None
    return rows


def build_tables(runs: Sequence[RunInfo], part: str = "total", stat: str = "p50") -> list[ParetoTable]:
    """One Pareto table per task. Runs of one task must share model, item set and device."""
    tables = []
    for task, group in group_by_task(runs).items():
        what = f"the Pareto table of task '{task}'"
        check_comparable(group, ("model", "fingerprint", "environment"), what)
        check_unique_configs(group, what)
        first = group[0]
        tables.append(ParetoTable(task=task, metric=first.metric, model=first.model, fingerprint=first.fingerprint,
                                  data_source=first.data_source, environment=first.environment_label,
                                  part=part, stat=stat, rows=rank_runs(group, part, stat)))
    return tables


# -- formatting ---------------------------------------------------------------------------------
def fmt_score(score: float | None, ci: tuple[float, float] | None = None) -> str:
    if score is None:
        return "n/a"
    text = f"{score:.3f}"
    if ci:
        text += f" [{ci[0]:.3f}, {ci[1]:.3f}]"
    return text


def fmt_ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def fmt_flag(row: ParetoRow, kind: str) -> str:
    flag = row.pareto.get(kind)
    if flag is None:
        return "n/a"
    return "yes" if flag else f"no ({row.dominated_by[kind]})"


DEFINITIONS = ("Pareto-optimal: no other configuration has a score at least as high and a latency at least as low "
               "with one of them strictly better (higher score, lower latency). Equal points do not dominate each other. "
               "`dominated by` names the optimal configuration dominating it with the highest score.")


def table_columns(table: ParetoTable) -> list[str]:
    p, s = table.part, table.stat
    return ["config", "score [95% CI]", "n",
            f"measured {s} ms (prefill / decode / {p})", "measured mean ms", f"estimated {s} ms", "estimated mean ms",
            "optimal (measured)", "optimal (estimated)"]


def _lat_triplet(row: ParetoRow, kind: str, stat: str) -> str:
    return " / ".join(fmt_ms(row.latency[kind][p][stat]) for p in LATENCY_PARTS)


def table_cells(table: ParetoTable, row: ParetoRow) -> list[str]:
    r = row.run
    return [r.label, fmt_score(r.score, r.score_ci95), str(r.n),
            _lat_triplet(row, "measured", table.stat), fmt_ms(row.latency["measured"][table.part]["mean"]),
            _lat_triplet(row, "estimated", table.stat), fmt_ms(row.latency["estimated"][table.part]["mean"]),
            fmt_flag(row, "measured"), fmt_flag(row, "estimated")]


def md_escape(text: str) -> str:
    return str(text).replace("|", "\\|")


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(md_escape(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(md_escape(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def to_markdown(tables: Sequence[ParetoTable]) -> str:
    out = ["# Accuracy-latency Pareto tables", "", DEFINITIONS, ""]
    for t in tables:
        out += [f"## {t.task} ({t.metric})", "",
                f"Model `{t.model}`, items {t.data_source or 'data'} `{t.fingerprint[:12]}`, {t.environment}; "
                f"frontier on {t.stat} {t.part} latency. Latency triplets are prefill / decode / total in ms.", "",
                md_table(table_columns(t), [table_cells(t, r) for r in t.rows]), ""]
    return "\n".join(out)


CSV_COLUMNS = (["task", "metric", "model", "config", "num_blocks", "top_k", "tier", "policy", "n", "n_failed",
                "score", "ci_lo", "ci_hi"]
               + [f"{k}_{p}_{s}_ms" for k in KINDS for p in LATENCY_PARTS for s in PARETO_STATS]
               + ["pareto_measured", "dominated_by_measured", "pareto_estimated", "dominated_by_estimated",
                  "device", "run_dir"])


def to_csv(tables: Sequence[ParetoTable]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for t in tables:
        for row in t.rows:
            r = row.run
            k = r.config.knobs
            vals = [t.task, t.metric, r.model, r.label, k.num_blocks if k else "", k.top_k if k else "",
                    (k.tier or "") if k else "", r.config.policy or "", r.n, r.n_failed,
                    "" if r.score is None else r.score,
                    r.score_ci95[0] if r.score_ci95 else "", r.score_ci95[1] if r.score_ci95 else ""]
            for kind in KINDS:
                for p in LATENCY_PARTS:
                    for s in PARETO_STATS:
                        v = row.latency[kind][p][s]
                        vals.append("" if v is None else v)
            for kind in KINDS:
                flag = row.pareto.get(kind)
                vals += ["" if flag is None else str(flag).lower(), row.dominated_by.get(kind) or ""]
            vals += [t.environment, str(r.path)]
            w.writerow(vals)
    return buf.getvalue()


def to_json(tables: Sequence[ParetoTable]) -> str:
    first = tables[0] if tables else None
    doc = {"format": FORMAT,
           "frontier_latency": {"part": first.part if first else "total", "stat": first.stat if first else "p50"},
           "definition": DEFINITIONS,
           "tasks": [t.to_dict() for t in tables]}
    return json.dumps(doc, indent=2) + "\n"


# -- plot ---------------------------------------------------------------------------------------
def plot(table: ParetoTable, path: str | Path) -> Path:
    """Accuracy against latency, one panel per latency kind that has data, frontier drawn and
    every point labelled by its configuration (see :func:`figure`)."""
    return save_figure(figure(table), path)


def save_figure(fig, path: str | Path) -> Path:
    """Write a matplotlib figure as a PNG (folders made) and free it: the one way reports save plots."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def figure(table: ParetoTable):
    """The plot's matplotlib figure. Labels of points in the right part of a panel are set to the
    left of their point, so no label runs past the panel's right edge."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = [k for k in KINDS if any(r.pareto.get(k) is not None for r in table.rows)] or ["measured"]
    big = len(table.rows) > 20
    fig, axes = plt.subplots(1, len(kinds), figsize=((9 if big else 6.5) * len(kinds), 6.5 if big else 5), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        pts = [(r, r.run.lat(kind, table.part, table.stat)) for r in table.rows]
        pts = [(r, x) for r, x in pts if x is not None and r.score is not None]
        x_lo, x_hi = (min(x for _, x in pts), max(x for _, x in pts)) if pts else (0.0, 0.0)
        for r, x in pts:
            opt = r.pareto.get(kind)
            ci = r.run.score_ci95
            yerr = [[r.score - ci[0]], [ci[1] - r.score]] if ci else None
            ax.errorbar([x], [r.score], yerr=yerr, fmt="o", ms=6 if opt else 5, capsize=2, lw=0.8,
                        color="tab:blue" if opt else "0.6", mfc="tab:blue" if opt else "white",
                        alpha=1.0 if opt else 0.8, zorder=3 if opt else 2)
            left = x_hi > x_lo and x > x_lo + 0.6 * (x_hi - x_lo)
            ax.annotate(r.label, (x, r.score), textcoords="offset points", xytext=(-4 if left else 4, 4),
                        ha="right" if left else "left", fontsize=7 if opt else 5.5, color="black" if opt else "0.45",
                        fontweight="bold" if opt else "normal", zorder=4 if opt else 2)
        front = sorted(((x, r.score) for r, x in pts if r.pareto.get(kind)), key=lambda t: (t[0], t[1]))
        if front:
            xs, ys = zip(*front)
            ax.step(xs, ys, where="post", color="tab:red", lw=1.2, label="Pareto frontier")
            ax.legend(loc="lower right", fontsize=8)
        ax.set_xlabel(f"{kind} {table.stat} {table.part} latency (ms)")
        ax.set_ylabel(f"score ({table.metric})")
        ax.set_title(f"{table.task}: {table.model} ({kind}, {table.environment})", fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.margins(x=0.08, y=0.06)
    fig.tight_layout()
    return fig


def write_outputs(tables: Sequence[ParetoTable], out_dir: str | Path, png: bool = True) -> list[Path]:
    """``pareto.md``, ``pareto.csv``, ``pareto.json`` and ``pareto-<task>.png`` in ``out_dir``."""
    from harness.jsonio import atomic_write_text

    out = Path(out_dir)
    written = []
    for name, text in (("pareto.md", to_markdown(tables)), ("pareto.csv", to_csv(tables)), ("pareto.json", to_json(tables))):
        atomic_write_text(out / name, text)
        written.append(out / name)
    if png:
        for t in tables:
            written.append(plot(t, out / f"pareto-{t.task}.png"))
    return written
