"""A new user's first hour: bad inputs and faults the README promises a one-line error for (exit 2,
no traceback, nothing half-written), and runs that fail as a whole."""

from __future__ import annotations

import json

import pytest


@pytest.mark.parametrize("line", ["batch_size = 2.5", "batch-size = true", "limit = 3.0"])
def test_config_refuses_what_the_flag_refuses(harness_cli, capsys, tmp_path, line):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'task = "scienceqa"\nknobs = "6,2"\n{line}\n')
    assert harness_cli("run", "--config", cfg, "-o", tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert "is not an integer" in err and line.split(" =")[0] in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()
    # and the same value as a flag is refused too
    assert harness_cli("run", "--task", "scienceqa", "--batch-size", "2.5") == 2
