"""`harness profile` (fake backend): sweep, held-out report, fit + raw measurements saved, errors."""

from __future__ import annotations

import json

import pytest

from harness.errors import HarnessError
from fixtures.fakes import FakeBackend, FakeInfo


@pytest.fixture
def cli(monkeypatch, tmp_path):
    import harness.backends as hb
    import harness.latency.fit_files as F

    monkeypatch.setattr(hb, "describe", lambda spec: FakeInfo(name=spec))
    monkeypatch.setattr(hb, "load", lambda spec, **kw: FakeBackend())
    monkeypatch.setattr(F, "shipped_dir", lambda: tmp_path / "shipped")
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))

    def run(*args):
        from harness.cli import main

        with pytest.raises(SystemExit) as exc:
            main(["profile", *map(str, args)])
        return exc.value.code

    return run


def _fits(tmp_path, model):
    return sorted(p for p in (tmp_path / "cache" / "estimators").glob(f"{model}__*.json")
                  if not p.name.endswith(".measurements.json"))


def test_profile_saves_fit_and_measurements_in_the_user_cache(cli, capsys, tmp_path):
    code = cli("--model", "fakemodel", "--grid", "blocks=4,6,8;top_k=1,2,4;tier=low,high;prompt=8,24;output=4",
               "--tasks", "tallyqa", "--repeats", "2", "--seed", "1", "--json")
    out = capsys.readouterr()
    assert code == 0, out.err
    res = json.loads(out.out)
    (fit,) = _fits(tmp_path, "fakemodel")
    raw = fit.with_name(fit.stem + ".measurements.json")
    assert res["fit"] == str(fit) and raw.is_file()
    assert not (tmp_path / "shipped").exists()  # never into the package
    assert res["key"]["device"].startswith("cpu-") and res["key"]["engine"] == "eager"
    assert res["n_measurements"] == 3 * 3 * 2 * 2 * 2
    assert len(json.loads(raw.read_text())["measurements"]) == res["n_measurements"]
    for part in ("prefill", "decode", "total"):
        assert res["heldout"][part]["mape"] < 1e-3 and res["heldout"][part]["within_10pct"] == 1.0
        assert res["heldout_medians"][part]["mape"] < 1e-3
    assert res["headline"]["mape_total"] == res["heldout"]["total"]["mape"]
    assert "expected duration" in out.err and "held-out" in out.err
    assert not list((tmp_path / "cache" / "estimators").glob("*.partial.jsonl"))  # finished: no partial log


def test_profile_config_file_and_bad_grid(cli, capsys, tmp_path):
    cfg = tmp_path / "p.toml"
    cfg.write_text('[profile]\ngrid = "blocks=4,8;top_k=1,4;tier=low;prompt=8;output=3"\nrepeats = 1\ntasks = "tallyqa"\n')
    assert cli("--config", cfg, "--model", "m2", "-q") == 0
    assert len(_fits(tmp_path, "m2")) == 1
    assert cli("--model", "m2", "--grid", "blocks=2", "--tasks", "tallyqa") == 2
    assert "out of range" in capsys.readouterr().err
    assert cli("--model", "m2", "--grid", "warp=9", "--tasks", "tallyqa") == 2
    assert cli("--model", "m2", "--batch-sizes", "0", "--tasks", "tallyqa") == 2
    assert "--batch-sizes" in capsys.readouterr().err


def test_refit_from_saved_measurements(cli, capsys, tmp_path):
    assert cli("--model", "m3", "--grid", "blocks=4,6,8;top_k=1,4;tier=low,high;prompt=8,24;output=3", "--repeats", "2",
               "--tasks", "tallyqa", "-q") == 0
    (fit,) = _fits(tmp_path, "m3")
    raw = fit.with_name(fit.stem + ".measurements.json")
    first = json.loads(fit.read_text())
    out = tmp_path / "refit.json"
    assert cli("--model", "m3", "--from-measurements", raw, "--output", out, "--json") == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n_measurements"] == first["n_measurements"] and res["n_interference_excluded"] == 0
    again = json.loads(out.read_text())
    assert again["prefill"]["coef"] == pytest.approx(first["prefill"]["coef"])
    assert again["key"] == first["key"]
    assert cli("--model", "other", "--from-measurements", raw) == 2
    assert "holds measurements of m3" in capsys.readouterr().err


class Interrupting(FakeBackend):
    """Raises KeyboardInterrupt (Ctrl-C) on the n-th generate call."""

    def __init__(self, at):
        super().__init__()
        self.at, self.calls = at, 0

    def generate(self, requests, max_new_tokens, tier=None):
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt
        return super().generate(requests, max_new_tokens, tier)


def test_interrupted_profile_keeps_its_measurements_and_resumes(cli, capsys, tmp_path, monkeypatch):
    import harness.backends as hb

    grid = ("--model", "m4", "--grid", "blocks=4,8;top_k=1,4;tier=low,high;prompt=8;output=3", "--repeats", "2",
            "--tasks", "tallyqa", "--json")
    backend = Interrupting(at=30)
    monkeypatch.setattr(hb, "load", lambda spec, **kw: backend)
    assert cli(*grid) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "resume" in err
    (partial,) = (tmp_path / "cache" / "estimators").glob("m4__*.partial.jsonl")
    saved = len(partial.read_text().splitlines()) - 1
    assert saved > 0 and not _fits(tmp_path, "m4")
    fresh = Interrupting(at=10 ** 9)
    monkeypatch.setattr(hb, "load", lambda spec, **kw: fresh)
    assert cli(*grid) == 0
    out = capsys.readouterr()
    res = json.loads(out.out)
    assert f"resuming: {saved} of 16" in out.err
    assert res["n_measurements"] == 16 and not partial.exists()
    # only the missing calls were timed again (plus calibration and warm-up calls)
    timed_again = sum(1 for k, n in fresh.batches)
    assert timed_again < 16 - saved + 2 * 3 + 4 * 5


def test_default_grid_stays_within_the_model_positions():
    from harness.latency.grid import TaskRanges, check_grid, default_grid

    info = FakeInfo()
    g = default_grid(info, TaskRanges(prompt_tokens=700, max_new_tokens=64, tasks=["x"]), max_pos=512)
    assert max(info.vision_tokens.values()) + max(g.prompt) + max(g.output) <= 512
    assert max(g.output) == 64 and len(g.tiers) == 3
    check_grid(g, info, 512)
    g.prompt = [600]
    with pytest.raises(HarnessError, match="512"):
        check_grid(g, info, 512)


def test_interference_is_dropped_from_the_fit():
    from harness.latency.measurement import Measurement, drop_interference

    base = [Measurement(8, 4, 1, 36, 10, 10.0, [2.0, 2.0], r) for r in range(3)]
    slow = Measurement(8, 4, 1, 36, 10, 120.0, [25.0, 25.0], 3)
    kept = drop_interference(base + [slow])
    assert slow not in kept and len(kept) == 3


@pytest.mark.parametrize("model, impl", [("molmoe:/models/MolmoE-1B-0924", "remote-code"), ("random:molmoe-1b", "grouped_mm")])
def test_the_suggested_profile_command_is_one_the_cli_accepts(model, impl):
    """The command a run prints for a missing or stale fit is accepted as it is: an experts
    implementation only where the model takes one, --trust-remote-code where it runs its own code."""
    import shlex

    from harness.commands.profile import command
    from harness.latency.fit_files import FitKey, profile_command

    cmd = profile_command(FitKey(model, "w", "cuda-nvidia-h200", "bfloat16", "fast", impl), batch_size=8)
    argv = shlex.split(cmd)
    assert argv[:2] == ["harness", "profile"]
    ctx = command.make_context("profile", argv[2:])  # parses every option as the CLI would (nothing runs)
    assert ctx.params["model"] == model and ctx.params["engine"] == "fast"
    assert ctx.params["experts_impl"] == (None if impl == "remote-code" else impl)
    assert ctx.params["trust_remote_code"] == model.startswith("molmoe:")
