"""``--config FILE.toml``: any option of a command from a TOML file; command-line flags win.

Keys are option names with ``-`` or ``_`` (``batch-size`` / ``batch_size``; ``task`` for
``--task``). A file may hold the keys at the top level or under a table named after the command
(``[run]``, ``[profile]``), so one file can serve several commands. Unknown keys are named in a
one-line error. Values go through click's own type conversion, exactly like flags.
"""

from __future__ import annotations

from pathlib import Path

import click

from harness.errors import HarnessError


def load_toml(path: str | Path) -> dict:
    import tomllib

    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise HarnessError(f"--config file '{path}' does not exist; pass an existing TOML file")
    except OSError as exc:
        raise HarnessError(f"cannot read --config file '{path}': {exc.strerror or exc}")
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise HarnessError(f"--config file '{path}' is not UTF-8 text")
    except tomllib.TOMLDecodeError as exc:
        raise HarnessError(f"--config file '{path}' is not valid TOML ({exc}); fix the syntax")


def _keys_for(param: click.Parameter) -> set[str]:
    keys = {param.name}
    for opt in getattr(param, "opts", []) + getattr(param, "secondary_opts", []):
        if opt.startswith("--"):
            keys.add(opt[2:])
    return keys | {k.replace("-", "_") for k in keys} | {k.replace("_", "-") for k in keys}


def config_values(path: str | Path, command: click.Command, command_name: str, skip: str = "config") -> dict:
    """Map a TOML file onto ``command``'s parameters: ``{param.name: value}``."""
    data = load_toml(path)
    section = data.get(command_name)
    if isinstance(section, dict):
        data = {**{k: v for k, v in data.items() if not isinstance(v, dict)}, **section}
    lookup: dict[str, click.Parameter] = {}
    for param in command.params:
        if param.name == skip or not isinstance(param, click.Option):
            continue
        for key in _keys_for(param):
            lookup[key] = param
    values: dict = {}
    unknown = []
    for key, value in data.items():
        param = lookup.get(key)
        if param is None:
            if isinstance(value, dict):  # a table for another command
                continue
            unknown.append(key)
            continue
        if param.multiple and not isinstance(value, list):
            value = [value]
        if isinstance(value, list) and not param.multiple and param.nargs == 1:
            value = ",".join(str(v) for v in value)
        values[param.name] = _checked(path, key, param, value)
    if unknown:
        from harness.suggest import closest

        known = sorted({opt[2:] for param in set(lookup.values()) for opt in param.opts if opt.startswith("--")})
        hints = [f"'{close}' for '{k}'" for k in sorted(unknown)
                 for close in [closest(k.replace("_", "-"), known)] if close]
        hint = f" (did you mean {', '.join(hints)}?)" if hints else ""
        raise HarnessError(f"--config '{path}': unknown key(s) {', '.join(sorted(unknown))}{hint}; known keys: {', '.join(known)}")
    return values


def _checked(path, key: str, param: click.Parameter, value):
    """Refuse what click's converters would silently coerce but the same flag refuses: a float or a
    boolean for an integer option (``int(2.5)`` is 2, ``int(True)`` is 1)."""
    if isinstance(param.type, (click.types.IntParamType,)) and not param.is_flag:
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, bool) or isinstance(v, float):
                raise HarnessError(f"--config '{path}': {key} = {str(v).lower() if isinstance(v, bool) else v} "
                                   f"is not an integer; write a whole number (as --{param.name.replace('_', '-')} needs)")
    return value


def config_option(command_name: str):
    """A ``--config FILE.toml`` click option that fills the command's defaults (flags still win)."""

    def callback(ctx: click.Context, param: click.Parameter, value):
        if not value:
            return value
        values = config_values(value, ctx.command, command_name, skip=param.name)
        ctx.default_map = {**(ctx.default_map or {}), **values}
        return value

    return click.option("--config", "config_file", type=click.Path(dir_okay=False), is_eager=True, expose_value=False,
                        callback=callback, help="TOML file with any of these options (command-line flags win).")
