"""``harness`` command line: a click group whose subcommands live one per module in
``harness/commands/`` and are imported only when invoked (start-up stays fast).

Every :class:`~harness.errors.HarnessError` becomes a one-line ``error: ...`` on stderr and exit
code 2, never a traceback.
"""

from __future__ import annotations

import errno
import importlib
import sys

import click

from harness import __version__
from harness.errors import HarnessError

# subcommand name -> (module, one-line help). Each module defines ``command`` (a click.Command).
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("harness.commands.run", "Evaluate a model on tasks at fixed or policy-chosen knobs."),
    "score": ("harness.commands.score", "Score a predictions JSONL file with a metric (no model)."),
    "metrics": ("harness.commands.metrics", "List metrics, their sub-scores and definitions."),
    "tasks": ("harness.commands.tasks", "List tasks, datasets, data sources and bundled sample counts."),
    "models": ("harness.commands.models", "List model backends and their knob ranges and tiers."),
    "profile": ("harness.commands.profile", "Profile latency over a knob grid and fit the estimator."),
    "sweep": ("harness.commands.sweep", "Run a knob grid over tasks with one model load."),
    "pareto": ("harness.commands.pareto", "Accuracy-latency Pareto tables and plot from run dirs."),
    "leaderboard": ("harness.commands.leaderboard", "Deterministic leaderboard markdown from run dirs."),
    "gate": ("harness.commands.gate", "CI regression gate: compare runs with a committed baseline."),
    "compare": ("harness.commands.compare", "Judge a controller: policy runs against a sweep's frontier and the oracle."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module = importlib.import_module(COMMANDS[name][0])
        return module.command

    def format_commands(self, ctx, formatter):
        rows = [(name, COMMANDS[name][1]) for name in sorted(COMMANDS)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def resolve_command(self, ctx, args):
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError:
            from harness.suggest import did_you_mean

            name = args[0] if args else ""
            hint = did_you_mean(name, COMMANDS)
            raise click.UsageError(f"No such command '{name}'.{hint}")


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="harness")
def cli():
    """Evaluate adaptive inference of Mixture-of-Experts vision-language models:
    accuracy next to measured and estimated latency."""


RESUMABLE = ("run", "sweep", "profile")  # commands whose re-run picks up where an interrupted one stopped


def _aborted(argv) -> None:
    """Ctrl-C: ``aborted`` on a line of its own (progress bars are stopped before this point)."""
    args = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in args if not a.startswith("-")), "")
    hint = ("; finished work is saved: re-run the same command to resume" if command in RESUMABLE else "")
    click.echo(f"aborted{hint}", err=True)
    sys.exit(130)


def main(argv=None):
    try:
        rc = cli.main(args=argv, prog_name="harness", standalone_mode=False)
    except HarnessError as exc:
        from harness import distributed

        if distributed.should_report(exc):  # under torchrun: rank 0, or another rank's own failure
            click.echo(f"error: {distributed.error_prefix(exc)}{exc}", err=True)
        sys.exit(exc.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        _aborted(argv)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except BrokenPipeError:
        sys.exit(0)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = f" '{exc.filename}'" if exc.filename else ""
        click.echo(f"error: cannot write{where}: {exc.strerror or exc}; free space and re-run the same command "
                   "(run, sweep and profile resume)", err=True)
        sys.exit(2)
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
