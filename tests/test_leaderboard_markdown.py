"""Leaderboard: byte-identical output, only-changed lines on a new run, --check."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "data" / "rundirs"))
from rundir_factory import make_run  # noqa: E402

from harness.cli import main  # noqa: E402
from harness.reports.leaderboard import render  # noqa: E402
from harness.reports.rundirs import load_runs  # noqa: E402


def cli(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(list(map(str, args)))
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def populate(root):
    make_run(root / "vqav2", task="vqav2", knobs="16,8,high", scores=[1, 1, 1, 0], latency_ms=200, estimated_ms=190,
             created="2026-11-20T10:00:00+00:00")
    make_run(root / "vqav2", task="vqav2", knobs="12,2,high", scores=[1, 0, 0, 0], latency_ms=100, estimated_ms=95,
             created="2026-11-21T10:00:00+00:00")
    make_run(root / "docvqa", task="docvqa", metric="ansl_em", knobs="16,8,high", scores=[0.9, 0.5, 1.0],
             latency_ms=300, estimated_ms=280, created="2026-11-19T09:00:00+00:00")
    make_run(root / "other", task="vqav2", model="hf:tiny-moe", knobs="14,6,high", scores=[1, 1, 0, 0],
             latency_ms=90, created="2026-11-22T08:00:00+00:00")


def test_content(tmp_path):
    populate(tmp_path)
    text = render(load_runs([tmp_path]))
    assert "## Overview" in text and "## vqav2" in text and "## docvqa" in text
    assert text.index("## docvqa") < text.index("## vqav2")
    assert "| reference | 16,8,high | 0.750 [" in text
    assert "| 2026-11-21 | 0.1.0 |" in text
    assert "| model | configuration | device | docvqa | vqav2 |" in text
    assert "| hf:tiny-moe | 14,6,high | cpu float32 batch 1 | - | 0.500 |" in text
    # frontier across models of one task, fastest first
    assert "- cpu float32 batch 1: hf:tiny-moe 14,6,high (0.500, 90.0 ms) -> reference 16,8,high (0.750, 200.0 ms)" in text
    assert str(tmp_path) not in text  # no machine-dependent paths


def test_byte_identical_whatever_the_argument_order(tmp_path, capsys):
    populate(tmp_path)
    out1, out2 = tmp_path / "a.md", tmp_path / "b.md"
    dirs = sorted(str(p.parent) for p in tmp_path.rglob("summary.json"))
    assert cli(["leaderboard", *dirs, "-o", out1], capsys)[0] == 0
    assert cli(["leaderboard", *reversed(dirs), "-o", out2], capsys)[0] == 0
    assert out1.read_bytes() == out2.read_bytes()
    assert cli(["leaderboard", tmp_path, "-o", out2], capsys)[0] == 0
    assert out1.read_bytes() == out2.read_bytes()


def test_new_run_changes_only_its_lines(tmp_path):
    populate(tmp_path)
    before = render(load_runs([tmp_path])).splitlines()
    # a dominated new configuration: adds its rows, changes nothing else
    make_run(tmp_path / "vqav2", task="vqav2", knobs="14,6,high", scores=[1, 0, 0, 0], latency_ms=150,
             created="2026-11-23T10:00:00+00:00")
    after = render(load_runs([tmp_path])).splitlines()
    removed = [ln for ln in before if ln not in after]
    added = [ln for ln in after if ln not in before]
    assert removed == []
    assert len(added) == 2 and all("| reference | 14,6,high |" in ln for ln in added)
    assert [ln for ln in after if ln not in added] == before  # order of the rest unchanged


def test_newer_run_of_same_configuration_replaces_the_row(tmp_path):
    populate(tmp_path)
    before = render(load_runs([tmp_path]))
    make_run(tmp_path / "rerun", task="vqav2", knobs="12,2,high", scores=[1, 1, 0, 0], latency_ms=100,
             estimated_ms=95, created="2026-11-25T10:00:00+00:00")
    after = render(load_runs([tmp_path]))
    assert "2026-11-21" in before and "2026-11-21" not in after and "2026-11-25" in after
    assert after.count("| reference | 12,2,high |") == 2  # overview + task table, still one row each


def test_check(tmp_path, capsys):
    populate(tmp_path / "runs")
    out = tmp_path / "leaderboard" / "README.md"
    code, _, err = cli(["leaderboard", tmp_path / "runs", "-o", out, "--check"], capsys)
    assert code == 1 and "does not exist" in err
    assert cli(["leaderboard", tmp_path / "runs", "-o", out], capsys)[0] == 0
    code, stdout, _ = cli(["leaderboard", tmp_path / "runs", "-o", out, "--check"], capsys)
    assert code == 0 and "up to date" in stdout
    make_run(tmp_path / "runs" / "new", task="vqav2", knobs="13,4,high", scores=[1, 0, 0, 0], latency_ms=130)
    code, _, err = cli(["leaderboard", tmp_path / "runs", "-o", out, "--check"], capsys)
    assert code == 1 and "out of date" in err and "harness leaderboard" in err


def test_bad_input(tmp_path, capsys):
    code, _, err = cli(["leaderboard", tmp_path / "missing"], capsys)
    assert code == 2 and err.startswith("error:")
    run = make_run(tmp_path, knobs="14,6")
    (run / "summary.json").write_text("[1, 2]")
    code, _, err = cli(["leaderboard", tmp_path], capsys)
    assert code == 2 and "not a JSON object" in err


def test_portable_ignores_machine_and_time(tmp_path):
    make_run(tmp_path / "a", knobs="16,8,high", scores=[1, 1, 0], latency_ms=200, estimated_ms=150,
             created="2026-11-20T10:00:00+00:00")
    make_run(tmp_path / "a", knobs="12,2,high", scores=[1, 0, 0], latency_ms=100, estimated_ms=90,
             created="2026-11-20T10:00:00+00:00")
    # the same runs again on another machine, another day, with other measured latency
    make_run(tmp_path / "b", knobs="16,8,high", scores=[1, 1, 0], latency_ms=20, estimated_ms=150, device="cuda",
             device_name="NVIDIA H100 80GB HBM3", created="2026-11-25T10:00:00+00:00")
    make_run(tmp_path / "b", knobs="12,2,high", scores=[1, 0, 0], latency_ms=13, estimated_ms=90, device="cuda",
             created="2026-11-25T10:00:00+00:00")
    a = render(load_runs([tmp_path / "a"]), portable=True)
    b = render(load_runs([tmp_path / "b"]), portable=True)
    assert a == b
    both = render(load_runs([tmp_path]), portable=True)
    assert both == a  # one row per configuration: the newer run wins and shows the same numbers
    assert "2026-" not in a and "cpu" not in a and "200.0" not in a
    assert "- estimated: 12,2,high (0.333, 90.0 ms) -> 16,8,high (0.667, 150.0 ms)" in a
    assert render(load_runs([tmp_path / "a"])) != render(load_runs([tmp_path / "b"]))
