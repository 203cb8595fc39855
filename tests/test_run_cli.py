"""`harness run` on the command line (fake backend, real tasks and bundled data): output, --json,
--config TOML, resume, and one-line errors (exit 2) for bad input, all before weights load."""

from __future__ import annotations

import json

import pytest

from fixtures.fakes import FakeBackend, FakeInfo


@pytest.fixture
def cli(monkeypatch, tmp_path):
    import harness.backends as hb
    import harness.latency.fit_files as F

    loads = []

    def fake_load(spec, **kw):
        loads.append(kw)
        return FakeBackend(device=kw.get("device", "cpu"), dtype=kw.get("dtype", "float32"))

    monkeypatch.setattr(hb, "describe", lambda spec: FakeInfo(name=spec))
    monkeypatch.setattr(hb, "load", fake_load)
    monkeypatch.setattr(F, "shipped_dir", lambda: tmp_path / "shipped")
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HARNESS_AUTOFIT_SECONDS", "60")
    monkeypatch.chdir(tmp_path)

    def run(*args):
        from harness.cli import main

        with pytest.raises(SystemExit) as exc:
            main(["run", *map(str, args)])
        return exc.value.code

    run.loads = loads
    return run


def test_run_json_summary(cli, capsys, tmp_path):
    code = cli("--task", "scienceqa", "--knobs", "6,2", "--limit", "8", "--output", tmp_path / "o", "--json", "--quiet")
    out = capsys.readouterr()
    assert code == 0, out.err
    s = json.loads(out.out)
    assert s["task"] == "scienceqa" and s["n"] == 8 and s["config"] == "6,2,medium"
    assert s["metric"] == "mc" and s["latency_mode"] == "per-sample"
    # first use on this (model, device): a quick estimator fit was made, saved and named
    assert s["estimator"] and "quick" in s["estimator"]
    assert s["estimator_error"]["mape_total"] is not None
    assert "quick" in out.err and "fitting" in out.err
    # ... into the user cache, keyed by the execution mode (never into the package)
    fits = sorted((tmp_path / "cache" / "estimators").glob("*.json"))
    assert [p.name.split("__")[0] for p in fits] == ["reference"]
    assert not (tmp_path / "shipped").exists()
    assert s["estimator_info"]["key"]["engine"] == "eager" and s["estimator_info"]["batch_buckets"] == [1]
    assert (tmp_path / "o" / "summary.json").is_file()


def test_several_tasks_one_subdir_each_and_one_model_load(cli, capsys, tmp_path):
    code = cli("--task", "scienceqa,tallyqa", "--limit", "4", "--output", tmp_path / "o", "--json", "-q", "--estimator", "none")
    out = capsys.readouterr()
    assert code == 0, out.err
    runs = json.loads(out.out)
    assert [r["task"] for r in runs] == ["scienceqa", "tallyqa"]
    assert (tmp_path / "o" / "scienceqa" / "summary.json").is_file() and (tmp_path / "o" / "tallyqa" / "summary.json").is_file()
    assert len(cli.loads) == 1
    assert runs[0]["config"] == "8,4,medium"  # no --knobs: the full model


def test_default_output_dir_and_table(cli, capsys, tmp_path):
    code = cli("--task", "scienceqa", "--limit", "3", "--knobs", "6,2,low", "--estimator", "none")
    out = capsys.readouterr()
    assert code == 0, out.err
    dirs = list((tmp_path / "runs").iterdir())
    assert len(dirs) == 1 and dirs[0].name.endswith("-scienceqa-b6-k2-low")
    assert "scienceqa" in out.out and "6,2,low" in out.out


def test_resume_via_cli(cli, capsys, tmp_path):
    args = ("--task", "scienceqa", "--limit", "6", "--output", tmp_path / "o", "--json", "-q", "--estimator", "none")
    assert cli(*args) == 0
    first = json.loads(capsys.readouterr().out)
    lines = (tmp_path / "o" / "samples.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "o" / "samples.jsonl").write_text("".join(lines[:3]) + lines[3][:10])
    assert cli(*args) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["score"] == first["score"] and second["n"] == 6
    assert cli("--task", "scienceqa", "--limit", "6", "--output", tmp_path / "o", "--knobs", "5,2", "-q") == 2
    err = capsys.readouterr().err
    assert "different configuration" in err and err.count("\n") == 1


def test_config_file_fills_options_and_flags_win(cli, capsys, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('task = "scienceqa"\nknobs = "6,2"\nlimit = 5\nbatch-size = 2\nestimator = "none"\n[run]\nquiet = true\n')
    assert cli("--config", cfg, "--knobs", "7,3", "--output", tmp_path / "o", "--json") == 0
    s = json.loads(capsys.readouterr().out)
    assert s["config"] == "7,3,medium" and s["n"] == 5 and s["batch_size"] == 2


def test_config_unknown_keys_are_named(cli, capsys, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('task = "scienceqa"\nbatchsize = 4\ncolour = "red"\n')
    assert cli("--config", cfg) == 2
    err = capsys.readouterr().err
    assert "unknown key(s) batchsize, colour" in err and err.count("\n") == 1
    bad = tmp_path / "bad.toml"
    bad.write_text("task = [unclosed\n")
    assert cli("--config", bad) == 2
    assert "not valid TOML" in capsys.readouterr().err


@pytest.mark.parametrize("args, needle", [
    (("--task", "scienceqa", "--knobs", "99,2"), "num_blocks=99 is out of range"),
    (("--task", "scienceqa", "--knobs", "6,9"), "top_k=9 is out of range"),
    (("--task", "scienceqa", "--knobs", "6"), "malformed"),
    (("--task", "scienceqa", "--knobs", "6,2,ultra"), "unknown tier"),
    (("--task", "sciencqa",), "Did you mean 'scienceqa'"),
    (("--knobs", "6,2"), "no task given"),
    (("--task", "scienceqa", "--data", "/nonexistent/file.parquet"), "nonexistent"),
    (("--task", "scienceqa", "--importance", "/nonexistent.json"), "importance file"),
    (("--task", "scienceqa", "--estimator", "no_such_mod:Est"), "cannot import module"),
    (("--task", "scienceqa", "--style", "fancy"), "no prompt style 'fancy'"),
    (("--task", "scienceqa", "--policy", "budget"), "budget"),
    (("--task", "scienceqa", "--policy", "nosuchpolicy"), "unknown policy"),
    (("--task", "scienceqa", "--knobs", "6,2", "--policy", "random"), "exclusive"),
])
def test_bad_input_is_one_line_exit_2_before_loading(cli, capsys, args, needle):
    assert cli(*args) == 2
    err = capsys.readouterr().err
    assert needle in err and err.startswith("error:") and err.count("\n") == 1, err
    assert cli.loads == []


def test_unwritable_output_is_refused_before_loading(cli, capsys, tmp_path):
    (tmp_path / "afile").write_text("x")
    assert cli("--task", "scienceqa", "--output", tmp_path / "afile" / "sub") == 2
    assert "not writable" in capsys.readouterr().err and cli.loads == []


def test_bad_importance_content(cli, capsys, tmp_path):
    imp = tmp_path / "imp.json"
    imp.write_text('{"0": 1.0, "1": "high"}')
    assert cli("--task", "scienceqa", "--importance", imp) == 2
    assert "not a number" in capsys.readouterr().err


def test_failing_plugin_estimator_run_continues(cli, capsys, tmp_path):
    code = cli("--task", "scienceqa", "--limit", "3", "--estimator", "test_estimator_plugin:Raises", "--output",
               tmp_path / "o", "--json", "-q")
    out = capsys.readouterr()
    assert code == 0
    s = json.loads(out.out)
    assert s["latency_ms"]["estimated"] is None and any("without estimates" in n for n in s["notes"])
    assert "model file is corrupt" in out.err
