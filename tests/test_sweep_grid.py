"""Sweep: grid parsing, one model load, one run dir per configuration, resume, bad input."""

from pathlib import Path

import pytest

from fixtures.fakes import FakeBackend, FakeInfo  # tests/ is on sys.path (conftest)

from harness.cli import main
from harness.errors import HarnessError
from harness.knobs import Knobs
from harness.sweep import load_grid, parse_inline, plan


def cli(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(list(map(str, args)))
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def test_inline_grid():
    g = load_grid("num_blocks=12..14 top_k=2,4 tier=low,high")
    assert len(g.configs) == 12
    assert g.configs[0] == Knobs(12, 2, "low") and g.configs[-1] == Knobs(14, 4, "high")
    assert load_grid("num_blocks=16 top_k=8").configs == [Knobs(16, 8, None)]


def test_bundled_grids():
    full = load_grid("reference-full")
    assert len(full.configs) == 60 and len(set(full.configs)) == 60
    assert {k.tier for k in full.configs} == {"low", "medium", "high"}
    assert sorted({k.num_blocks for k in full.configs}) == [12, 13, 14, 15, 16]
    ci = load_grid("ci")
    assert ci.configs == [Knobs(16, 8, "high"), Knobs(12, 2, "low")] and ci.tasks == ["all"]


def test_grid_file_with_range_strings(tmp_path):
    p = tmp_path / "g.toml"
    p.write_text('tasks = ["vqav2"]\n[grid]\nnum_blocks = "7..8"\ntop_k = [2, 4]\n')
    g = load_grid(str(p))
    assert g.tasks == ["vqav2"] and g.configs == [Knobs(7, 2), Knobs(7, 4), Knobs(8, 2), Knobs(8, 4)]


@pytest.mark.parametrize("spec,needle", [
    ("", "sweep is empty"),
    ("num_blocks= top_k=2", "sweep is empty"),
    ("num_blocks=14..12 top_k=2", "is empty"),
    ("blocks=x top_k=2", "not an integer"),
    ("speed=3", "not knob=values"),
    ("num_blocks=12 top_k=2 tier=huge", "unknown tier"),
    ("nosuchgrid", "unknown grid"),
])
def test_bad_grids(spec, needle):
    with pytest.raises(HarnessError, match=needle):
        load_grid(spec)


def test_empty_grid_file(tmp_path):
    p = tmp_path / "empty.toml"
    p.write_text('description = "nothing"\n')
    with pytest.raises(HarnessError, match="sweep is empty"):
        load_grid(str(p))
    p.write_text("[grid]\nnum_blocks = []\ntop_k = [2]\n")
    with pytest.raises(HarnessError, match="sweep is empty"):
        load_grid(str(p))


def test_plan_paths():
    runs = plan(["vqav2", "docvqa"], [Knobs(14, 6, "high")], "out")
    assert [r.folder for r in runs] == [Path("out/vqav2/b14-k6-high"), Path("out/docvqa/b14-k6-high")]
    assert parse_inline("b=12 k=2")["grid"] == {"num_blocks": [12], "top_k": [2]}


@pytest.fixture
def fake_model(monkeypatch):
    """The sweep command on the fake backend: counts model loads."""
    from harness import backends

    loads = []

    def load(spec, device="cpu", dtype="float32", **kw):
        loads.append(spec)
        return FakeBackend(device=device, dtype=dtype)

    monkeypatch.setattr(backends, "describe", lambda spec: FakeInfo())
    monkeypatch.setattr(backends, "load", load)
    return loads


def sweep_args(out, *extra):
    return ["sweep", "--grid", "num_blocks=7..8 top_k=2,4 tier=low", "--task", "scienceqa,vqav2", "--limit", "3",
            "--estimator", "none", "--device", "cpu", "--output", out, "--quiet", *extra]


def test_sweep_runs_each_config_once_and_resumes(tmp_path, capsys, fake_model):
    out = tmp_path / "sweep"
    code, _, err = cli(sweep_args(out), capsys)
    assert code == 0, err
    assert fake_model == ["reference"]  # one model load for 2 tasks x 4 configs
    dirs = sorted(p.parent.relative_to(out).as_posix() for p in out.rglob("summary.json"))
    assert dirs == [f"{t}/b{b}-k{k}-low" for t in ("scienceqa", "vqav2") for b in (7, 8) for k in (2, 4)]
    from harness.reports.rundirs import load_runs

    runs = load_runs([out])
    assert {r.label for r in runs} == {"7,2,low", "7,4,low", "8,2,low", "8,4,low"}
    assert all(r.n == 3 for r in runs)
    before = {p: p.read_bytes() for p in out.rglob("summary.json")}
    # everything done: nothing runs, the model is not loaded again
    code, _, _ = cli(sweep_args(out), capsys)
    assert code == 0 and fake_model == ["reference"]
    assert {p: p.read_bytes() for p in out.rglob("summary.json")} == before
    # a half-done configuration is resumed: drop the summary and the last sample line of one run
    victim = out / "vqav2" / "b8-k4-low"
    (victim / "summary.json").unlink()
    lines = (victim / "samples.jsonl").read_text().splitlines(keepends=True)
    (victim / "samples.jsonl").write_text("".join(lines[:-1]))
    code, _, _ = cli(sweep_args(out, "--dry-run"), capsys)
    assert code == 0
    code, _, _ = cli(sweep_args(out), capsys)
    assert code == 0 and fake_model == ["reference", "reference"]
    assert len((victim / "samples.jsonl").read_text().splitlines()) == 3
    # the sweep folder feeds the reports directly
    code, stdout, _ = cli(["pareto", out, "-o", tmp_path / "pareto", "--no-plot"], capsys)
    assert code == 0 and (tmp_path / "pareto" / "pareto.json").is_file()


def test_sweep_dry_run_loads_nothing(tmp_path, capsys, fake_model):
    code, out, _ = cli(sweep_args(tmp_path / "s", "--dry-run"), capsys)
    assert code == 0 and fake_model == []
    assert "8 run(s)" in out and "b7-k2-low" in out


def test_sweep_bad_input(tmp_path, capsys, fake_model):
    code, _, err = cli(["sweep", "--grid", "num_blocks=7..9 top_k=2", "--task", "vqav2", "--output", tmp_path], capsys)
    assert code == 2 and "num_blocks=9 is out of range" in err and fake_model == []
    code, _, err = cli(["sweep", "--grid", "", "--task", "vqav2", "--output", tmp_path], capsys)
    assert code == 2 and "sweep is empty" in err and err.count("\n") == 1
    code, _, err = cli(["sweep", "--grid", "num_blocks=8 top_k=2", "--output", tmp_path], capsys)
    assert code == 2 and "no task given" in err


def test_sweep_options_from_config_file(tmp_path, capsys, fake_model):
    cfg = tmp_path / "sweep.toml"
    cfg.write_text(f'[sweep]\ngrid = "num_blocks=8 top_k=2,4"\ntask = ["vqav2"]\nlimit = 2\nestimator = "none"\n'
                   f'device = "cpu"\noutput = "{tmp_path / "from-config"}"\n')
    code, out, err = cli(["sweep", "--config", cfg, "--dry-run", "--limit", "3"], capsys)
    assert code == 0, err
    assert "1 task(s) x 2 configuration(s)" in out and "0/3" in out  # the flag wins over the file
    cfg.write_text('[sweep]\ngird = "num_blocks=8"\n')
    code, _, err = cli(["sweep", "--config", cfg], capsys)
    assert code == 2 and "unknown key(s) gird" in err


def test_dry_run_writes_nothing_and_other_config_is_refused(tmp_path, capsys, fake_model):
    out = tmp_path / "s"
    assert cli(sweep_args(out, "--dry-run"), capsys)[0] == 0
    assert not out.exists()
    assert cli(sweep_args(out), capsys)[0] == 0
    # the same folder with another --limit: refused before the model loads, naming the difference
    args = sweep_args(out)
    args[args.index("--limit") + 1] = "2"
    code, _, err = cli(args, capsys)
    assert code == 2 and "different configuration" in err and fake_model == ["reference"]
