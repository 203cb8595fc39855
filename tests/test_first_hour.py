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


def _disk_full_after(monkeypatch, n_ok: int):
    """The line writer writes ``n_ok`` lines, then half of the next one and fails with ENOSPC."""
    import errno

    import harness.jsonio as jsonio

    real = jsonio.write_flush
    calls = {"n": 0}

    def writer(fh, text):
        calls["n"] += 1
        if calls["n"] > n_ok:
            fh.write(text[: len(text) // 2])
            fh.flush()
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fh, text)

    monkeypatch.setattr(jsonio, "write_flush", writer)
    return real


RUN = ("run", "--task", "scienceqa", "--knobs", "6,2", "--limit", "8", "--estimator", "none", "-q")


def test_full_disk_during_run_is_one_line_and_resumes(harness_cli, capsys, monkeypatch, tmp_path):
    out = tmp_path / "o"
    real_writer = _disk_full_after(monkeypatch, 3)
    assert harness_cli(*RUN, "-o", out) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write sample records") and err.count("\n") == 1, err
    assert "No space left on device" in err and "resume" in err and "3 finished" in err
    text = (out / "samples.jsonl").read_text()
    assert text.endswith("\n") and len(text.splitlines()) == 3  # nothing half-written
    assert not (out / "summary.json").exists()
    import harness.jsonio as jsonio

    monkeypatch.setattr(jsonio, "write_flush", real_writer)  # space again
    assert harness_cli(*RUN, "-o", out, "--json") == 0
    resumed = json.loads(capsys.readouterr().out)
    assert harness_cli(*RUN, "-o", tmp_path / "clean", "--json") == 0
    clean = json.loads(capsys.readouterr().out)
    assert resumed["n"] == clean["n"] == 8 and resumed["score"] == clean["score"]
    lines = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert sorted(x["id"] for x in lines) == sorted(json.loads(x)["id"] for x in (tmp_path / "clean" / "samples.jsonl").read_text().splitlines())


@pytest.mark.parametrize("command", ["run", "sweep"])
def test_full_disk_on_the_first_line_leaves_no_folder(harness_cli, capsys, monkeypatch, tmp_path, command):
    _disk_full_after(monkeypatch, 0)
    out = tmp_path / "new" / "o"
    if command == "run":
        code = harness_cli(*RUN, "-o", out)
    else:
        code = harness_cli("sweep", "--task", "scienceqa", "--grid", "num_blocks=6 top_k=2,4", "--limit", "4",
                           "--estimator", "none", "-q", "-o", out)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert not (tmp_path / "new").exists()


def test_full_disk_writing_the_summary(harness_cli, capsys, monkeypatch, tmp_path):
    import errno

    import harness.records as records

    def full(path, obj):
        raise OSError(errno.ENOSPC, "No space left on device")

    real = records.atomic_write_json
    monkeypatch.setattr(records, "atomic_write_json",
                        lambda path, obj: full(path, obj) if str(path).endswith("summary.json") else real(path, obj))
    out = tmp_path / "o"
    assert harness_cli(*RUN, "-o", out) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write the summary") and err.count("\n") == 1
    assert len((out / "samples.jsonl").read_text().splitlines()) == 8
    assert sorted(p.name for p in out.iterdir()) == ["run.json", "samples.jsonl"]


def test_full_disk_anywhere_else_is_one_line(harness_cli, capsys, monkeypatch, tmp_path):
    """A write outside the run records (an estimator fit, a profile) still ends in one line, exit 2."""
    import errno

    import harness.latency.heldout_fit as prof

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "est.json"))

    monkeypatch.setattr(prof, "save_profile", full)
    code = harness_cli("profile", "--model", "fakemodel", "--grid", "blocks=4,6;top_k=1,2;tier=low;prompt=8;output=4",
                       "--repeats", "1", "-q", "--output", tmp_path / "est.json")
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: cannot write") and "No space left" in err and err.count("\n") == 1


def test_failed_model_load_leaves_no_folder(harness_cli, capsys, monkeypatch, tmp_path):
    import harness.backends as hb
    from harness.errors import HarnessError

    def broken(spec, **kw):
        raise HarnessError("cannot load model 'x': config.json is missing")

    monkeypatch.setattr(hb, "load", broken)
    assert harness_cli(*RUN, "-o", tmp_path / "o") == 2
    assert "cannot load model" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_bad_measurements_file_leaves_no_folder(harness_cli, capsys, tmp_path):
    bad = tmp_path / "m.json"
    bad.write_text("{not json")
    out = tmp_path / "fits" / "est.json"
    assert harness_cli("profile", "--model", "fakemodel", "--from-measurements", bad, "--output", out) == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert not (tmp_path / "fits").exists()


def test_ctrl_c_prints_aborted_on_its_own_line_with_the_resume_hint(harness_cli, capsys, monkeypatch, tmp_path):
    from fixtures.fakes import FakeBackend

    real = FakeBackend.generate
    calls = {"n": 0}

    def interrupted(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(FakeBackend, "generate", interrupted)
    assert harness_cli("run", "--task", "scienceqa", "--knobs", "6,2", "--limit", "8", "--estimator", "none",
                       "-o", tmp_path / "o") == 130
    err = capsys.readouterr().err
    last = err.rstrip("\n").splitlines()[-1]
    assert last.startswith("aborted") and "re-run the same command to resume" in last
    assert "Traceback" not in err
    assert harness_cli("score", "--metric", "em", tmp_path / "missing.jsonl") == 2  # not resumable: no hint there


def test_subset_is_independent_of_the_policy_seed(harness_cli, capsys, tmp_path):
    def ids(*extra):
        out = tmp_path / f"o{len(list(tmp_path.iterdir()))}"
        code = harness_cli("run", "--task", "scienceqa", "--policy", "random", "--limit", "5", "--estimator", "none",
                           "-q", "--json", "-o", out, *extra)
        assert code == 0, capsys.readouterr().err
        summary = json.loads(capsys.readouterr().out)
        return summary, sorted(json.loads(x)["id"] for x in (out / "samples.jsonl").read_text().splitlines())

    s1, a = ids("--seed", "1")
    s2, b = ids("--seed", "2")
    assert a == b  # another policy seed evaluates the same samples
    assert (s1["seed"], s1["subset_seed"]) == (1, 0) and (s2["seed"], s2["subset_seed"]) == (2, 0)
    s3, c = ids("--seed", "1", "--subset-seed", "7")
    assert c != a and (s3["seed"], s3["subset_seed"]) == (1, 7)


def _failing_backend(monkeypatch, fail_every: int):
    """Every ``fail_every``-th generate call of the fake backend raises (1 = all)."""
    from fixtures.fakes import FakeBackend

    real = FakeBackend.generate
    calls = {"n": 0}

    def generate(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] % fail_every == 0:
            raise RuntimeError("CUDA error: device-side assert triggered")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(FakeBackend, "generate", generate)


def test_a_run_whose_samples_all_fail_exits_1(harness_cli, capsys, monkeypatch, tmp_path):
    _failing_backend(monkeypatch, 1)
    assert harness_cli(*RUN, "-o", tmp_path / "o", "--json") == 1
    cap = capsys.readouterr()
    assert json.loads(cap.out)["n_failed"] == 8  # the results are still written and printed
    assert cap.err.startswith("error: 8 of 8 samples failed in scienceqa") and "device-side assert" in cap.err
    assert cap.err.count("\n") == 1 and (tmp_path / "o" / "summary.json").is_file()


def test_max_failed_share(harness_cli, capsys, monkeypatch, tmp_path):
    _failing_backend(monkeypatch, 2)  # every other sample fails (the estimator-free run has no warm-up calls)
    assert harness_cli(*RUN, "-o", tmp_path / "a") == 0  # default: only all-failed is an error
    capsys.readouterr()
    assert harness_cli(*RUN, "-o", tmp_path / "b", "--max-failed", "0.25") == 1
    assert "more than 25% may not" in capsys.readouterr().err
    assert harness_cli(*RUN, "-o", tmp_path / "c", "--max-failed", "0.75") == 0
    assert harness_cli(*RUN, "-o", tmp_path / "d", "--max-failed", "1.5") == 2


def test_sweep_all_failed_exits_1(harness_cli, capsys, monkeypatch, tmp_path):
    _failing_backend(monkeypatch, 1)
    code = harness_cli("sweep", "--task", "scienceqa", "--grid", "num_blocks=6 top_k=2,4", "--limit", "3",
                       "--estimator", "none", "-q", "-o", tmp_path / "s")
    err = capsys.readouterr().err
    assert code == 1 and "3 of 3 samples failed" in err and "1 more run" in err


@pytest.mark.parametrize("command", ["run", "sweep"])
def test_results_on_stdout_progress_on_stderr(harness_cli, capsys, tmp_path, command):
    if command == "run":
        code = harness_cli(*RUN[:-1], "-o", tmp_path / "o")
    else:
        code = harness_cli("sweep", "--task", "scienceqa", "--grid", "num_blocks=6 top_k=2,4", "--limit", "3",
                           "--estimator", "none", "-o", tmp_path / "o")
    cap = capsys.readouterr()
    assert code == 0, cap.err
    assert "scienceqa" in cap.out and ("run directory:" in cap.out or "sweep folder:" in cap.out)
    # piped: each table row is one line holding all its cells
    rows = [ln for ln in cap.out.splitlines() if ln.startswith("│ scienceqa")]
    assert rows and all(ln.rstrip().endswith("│") and ln.count("│") == 12 for ln in rows)
    assert "run directory:" not in cap.err and "sweep folder:" not in cap.err


def test_input_longer_than_the_context_fails_that_sample_before_the_model(harness_cli, capsys, monkeypatch, tmp_path):
    import base64
    import io

    from PIL import Image

    import harness.backends as hb
    from fixtures.fakes import FakeBackend, FakeInfo

    info = FakeInfo(name="fake")
    info.max_positions = 200  # text + vision (64 at tier high) + new tokens must fit
    seen, counted = [], []

    class Recording(FakeBackend):
        def generate(self, requests, max_new_tokens, tier=None):
            seen.extend(len(r.prompt.split()) for r in requests)
            return super().generate(requests, max_new_tokens, tier)

        def count_tokens(self, request, tier=None):
            counted.append(len(request.prompt))
            return super().count_tokens(request, tier)

    monkeypatch.setattr(hb, "describe", lambda spec: info)
    monkeypatch.setattr(hb, "load", lambda spec, **kw: Recording(info=info))
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (9, 9, 9)).save(buf, format="PNG")
    img = {"bytes": base64.b64encode(buf.getvalue()).decode()}
    rows = [{"question_id": str(i), "image": img, "question": q, "answers": ["a"] * 10}
            for i, q in enumerate(["what is it?", "word " * 300, "and this?", "word " * 100_000])]
    data = tmp_path / "long.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert harness_cli("run", "--task", "okvqa", "--data", data, "--knobs", "6,2,high", "--estimator", "none",
                       "-q", "--json", "-o", tmp_path / "o") == 0
    s = json.loads(capsys.readouterr().out)
    assert s["n"] == 4 and s["n_failed"] == 2
    lines = {x["id"]: x for x in map(json.loads, (tmp_path / "o" / "samples.jsonl").read_text().splitlines())}
    err = lines["1"]["error"]
    assert err.startswith("input too long: ") and "exceed the model's context of 200 positions" in err
    assert "vision at tier high" in err and lines["0"]["error"] is None and lines["2"]["error"] is None
    assert seen and max(seen) < 200  # the long prompts never reached the model
    # half a megabyte of question cannot fit 200 positions whatever the tokenizer: refused untokenized
    huge = lines["3"]["error"]
    assert huge.startswith("input too long: the prompt has ") and "context is 200 positions" in huge
    assert max(counted) < 100_000


def test_models_know_their_context():
    from harness.backends import describe

    assert describe("reference").max_positions == 2048  # RoPE positions: real ScienceQA prompts (up to 774 text tokens + 144 vision + new) fit
    assert describe("random:molmoe-1b").max_positions == 4096


def test_pareto_plot_labels_stay_inside_the_figure(tmp_path):
    """The rightmost points' labels used to run past the right edge of the PNG."""
    import sys
    from pathlib import Path

    import matplotlib.pyplot as plt

    sys.path.insert(0, str(Path(__file__).parent / "data" / "rundirs"))
    from rundir_factory import make_run

    from harness.reports.pareto import build_tables, figure
    from harness.reports.rundirs import load_runs

    ids = [f"q{i}" for i in range(20)]
    for j, knobs in enumerate(["12,2,low", "13,4,medium", "14,6,high", None]):
        scores = [1.0 if i < 8 + 3 * j else 0.0 for i in range(20)]
        policy = {"name": "budget", "args": {"latency_budget_ms": 120.0, "accuracy_table": "runs/sweep/vqav2"}}
        make_run(tmp_path / "runs", knobs=knobs, policy=policy if knobs is None else None, scores=scores, ids=ids,
                 latency_ms=50 + 40 * j, estimated_ms=45 + 40 * j)  # the slowest point has the longest label
    (table,) = build_tables(load_runs([tmp_path / "runs"]))
    fig = figure(table)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    width = fig.bbox.width
    labels = [t for ax in fig.axes for t in ax.texts]
    assert len(labels) == 8  # every point of both panels is labelled
    for t in labels:
        box = t.get_window_extent(renderer)
        assert 0 <= box.x0 and box.x1 <= width, f"label {t.get_text()!r} is clipped ({box.x1:.0f} > {width:.0f})"
    plt.close(fig)


@pytest.mark.parametrize("load, busy", [(7.5, True), (0.4, False)])
def test_a_busy_cpu_is_said_next_to_the_latency_figures(harness_cli, capsys, monkeypatch, tmp_path, load, busy):
    import harness.hostload as hostload
    import harness.runner as runner

    monkeypatch.setattr(runner, "load_1m", lambda: load)
    monkeypatch.setattr(hostload, "cpus", lambda: 2)
    assert harness_cli("run", "--task", "scienceqa", "--knobs", "6,2", "--limit", "3", "--estimator", "none",
                       "-o", tmp_path / "o") == 0
    out = capsys.readouterr().out
    s = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert s["host_load"] == {"load_1m": [load, load], "cpus": 2, "busy": busy}
    note = "the CPU was busy during this run (load average 7.5 on 2 CPUs)"
    assert (note in " ".join(s["notes"])) is busy and (note in out) is busy


def test_full_disk_during_profile_leaves_no_half_line(harness_cli, capsys, monkeypatch, tmp_path):
    real = _disk_full_after(monkeypatch, 2)  # two of the four measurements fit
    grid = "blocks=4,6;top_k=1,2;tier=low;prompt=8;output=4"
    out = tmp_path / "fits" / "est.json"
    args = ("profile", "--model", "fakemodel", "--grid", grid, "--repeats", "1", "-q", "--output", out)
    assert harness_cli(*args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "No space left" in err and err.count("\n") == 1
    (partial,) = list((tmp_path / "fits").glob("*.partial.jsonl"))
    text = partial.read_text()
    assert text.endswith("\n") and all(json.loads(x) for x in text.splitlines())  # no half line
    import harness.jsonio as jsonio

    monkeypatch.setattr(jsonio, "write_flush", real)
    assert harness_cli(*args, "--json") == 0
    assert json.loads(capsys.readouterr().out)["n_measurements"] == 4
