"""Console presentation of runs: the progress bar (a :class:`harness.types.Reporter`) on stderr
and the results table that ``harness run`` and ``harness sweep`` print."""

from __future__ import annotations

from harness.errors import warn


def _stderr_console():
    from rich.console import Console

    return Console(stderr=True)


class RichReporter:
    """Progress bar on stderr: items, items/s, ETA and the configuration being run."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.progress = None
        self.task_id = None

    def start(self, task: str, total: int, done: int) -> None:
        if self.quiet:
            return
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn,
                                   TimeRemainingColumn)
        from rich.text import Text

        class Speed(ProgressColumn):
            def render(self, task):
                speed = task.finished_speed or task.speed
                return Text(f"{speed:.2f} it/s" if speed else "-- it/s")

        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), Speed(),
                                 TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[config]}"),
                                 console=_stderr_console(), transient=False)
        self.progress.start()
        self.task_id = self.progress.add_task(task, total=total, completed=done, config="")
        if done:
            self.progress.console.print(f"resuming: {done} of {total} samples already done")

    def advance(self, n: int, config: str) -> None:
        if self.progress is not None:
            self.progress.update(self.task_id, advance=n, config=config)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def warn(self, message: str) -> None:
        if self.progress is not None:
            self.progress.console.print(f"[yellow]warning:[/] {message}", markup=True, highlight=False)
        else:
            warn(message)


def _fmt(v, digits=1):
    return "-" if v is None else f"{v:.{digits}f}"


def summary_table(summaries: list[dict]):
    from rich.table import Table

    s0 = summaries[0]
    mode = s0["latency_mode"]
    unit = "ms per batch" if mode == "per-batch" else "ms per sample"
    sources = sorted({(s.get("data") or {}).get("source", "?") for s in summaries})
    synthetic = any((s.get("data") or {}).get("synthetic") for s in summaries)
    data_note = ("data: SYNTHETIC bundled samples, not the real benchmark" if synthetic
                 else f"data: {', '.join(sources)}")
    table = Table(title=f"model {s0['model']} on {s0['device_name']} ({s0['device']}, {s0['dtype']}); latency in {unit}",
                  caption=data_note, caption_justify="left", title_justify="left")
    batched = any(int(s.get("batch_size") or 1) > 1 for s in summaries)
    policy = any(s.get("config") is None for s in summaries)
    cols = ["task", "config", "n", "fail", "score", "95% CI", "prefill", "decode", "total", "est.", "MAPE"]
    if batched:  # each sample alone: the batch-1 estimate and its check against single measurements
        cols += ["alone est.", "alone MAPE"]
    if policy:  # what deciding and preparing cost per sample
        cols += ["policy ms", "host ms"]
    for col in cols:
        table.add_column(col, justify="left" if col in ("task", "config", "95% CI") else "right", no_wrap=True)
    if batched:
        table.caption = (table.caption or "") + ("\nalone est.: mean estimated_batch1 total (ms per sample at batch 1); "
                                                 "alone MAPE: its error against --check-batch1 single measurements")
    for s in summaries:
        m = s["latency_ms"]["measured"]
        e = s["latency_ms"]["estimated"] or {}
        ci = s.get("score_ci95")
        score = "-" if s.get("score") is None else f"{s['score']:.3f}"
        ci_txt = f"{ci[0]:.3f}-{ci[1]:.3f}" if ci and s.get("score") is not None else "-"
        mape = s["estimator_error"].get("mape_total")
        cfg = s.get("config") or (s.get("policy") or {}).get("name") or "-"
        row = [s["task"], cfg, str(s["n"]), str(s["n_failed"]), score, ci_txt, _fmt(m["prefill"]["mean"]),
               _fmt(m["decode"]["mean"]), _fmt(m["total"]["mean"]),
               _fmt((e.get("total") or {}).get("mean")), "-" if mape is None else f"{100 * mape:.1f}%"]
        if batched:
            alone = ((s["latency_ms"].get("estimated_batch1") or {}).get("total") or {}).get("mean")
            check = (s.get("batch1_check") or {}).get("mape_total")
            row += [_fmt(alone), "-" if check is None else f"{100 * check:.1f}% (n={s['batch1_check']['n']})"]
        if policy:
            c = s.get("controller_ms") or {}
            row += [_fmt((c.get("policy") or {}).get("mean"), 3), _fmt((c.get("host") or {}).get("mean"), 2)]
        table.add_row(*row)
    return table
