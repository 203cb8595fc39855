"""``harness tasks``: the registered tasks, their metric, real dataset, data sources and the number
of bundled (SYNTHETIC) samples."""

from __future__ import annotations

import json

import click


def task_rows() -> list[dict]:
    """One dict per registered task (built-ins, entry points and --include-path modules)."""
    from harness.tasks import get_task, registry
    from harness.tasks.data import bundled_info

    rows = []
    for name in registry.names():
        task = get_task(name)  # instantiates Task classes registered through entry points
        spec = task.dataset
        bundled = bundled_info(task)
        n_bundled = bundled[0] if bundled else None
        sources = ["hub", "path"] + (["bundled"] if n_bundled is not None else [])
        rows.append(
            {
                "task": name,
                "aliases": registry.aliases_of(name),
                "metric": task.metric,
                "hub_id": spec.hub_id,
                "config": spec.config,
                "split": spec.split,
                "labeled": spec.labeled,  # the hub split: scored only when it has public labels
                "notes": spec.notes,
                "styles": list(task.styles),
                "max_new_tokens": task.max_new_tokens,
                "sources": sources,
                "bundled_samples": n_bundled,
                "bundled_synthetic": n_bundled is not None,
                "bundled_labeled": bundled[1] if bundled else None,
            }
        )
    return rows


@click.command("tasks", help="List tasks, datasets, data sources and bundled sample counts.")
@click.option("--include-path", "include_paths", multiple=True, type=click.Path(), help="Folder of extra task modules to import (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def command(include_paths, as_json):
    from harness.tasks import include_path

    for folder in include_paths:
        include_path(folder)
    rows = task_rows()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from harness.console import print_table
    from rich.table import Table
    from rich.text import Text

    table = Table(
        title="Tasks",
        expand=True,
        caption="bundled = SYNTHETIC samples made by tools/synthetic.py (shapes, signs, short documents), "
        "not the real benchmark, labeled and scored. An unlabeled hub split is run but not scored. Every task reads --data hub, --data PATH "
        "(parquet, JSON lines, save_to_disk folder) and, where it ships them, --data bundled.",
    )
    table.add_column("task (aliases)", no_wrap=True)
    table.add_column("metric", no_wrap=True)
    table.add_column("hub dataset (config) / split", overflow="fold", ratio=3)
    table.add_column("sources", no_wrap=True)
    table.add_column("bundled", no_wrap=True)
    for r in rows:
        name = Text(r["task"], style="bold")
        for alias in r["aliases"]:
            name.append(f"\n{alias}", style="dim")
        dataset = Text(r["hub_id"] + (f" ({r['config']})" if r["config"] else "") + f" / {r['split']}")
        if not r["labeled"]:
            dataset.append(" (unlabeled on the hub: not scored)", style="yellow")
        bundled = Text("-")
        if r["bundled_synthetic"]:
            bundled = Text(f"{r['bundled_samples']} synthetic", style="magenta")
            bundled.append(", scored" if r["bundled_labeled"] else ", not scored", style="dim" if r["bundled_labeled"] else "yellow")
        table.add_row(name, Text(r["metric"]), dataset, Text("\n".join(r["sources"])), bundled)
    print_table(table)
