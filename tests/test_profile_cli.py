"""`harness profile` (fake backend): sweep, held-out report, fit + raw measurements saved, errors."""

from __future__ import annotations

import json

import pytest

from fixtures.fakes import FakeBackend, FakeInfo


@pytest.fixture
def cli(monkeypatch, tmp_path):
    import harness.backends as hb
    import harness.latency.estimator as E

    monkeypatch.setattr(hb, "describe", lambda spec: FakeInfo(name=spec))
    monkeypatch.setattr(hb, "load", lambda spec, **kw: FakeBackend())
    monkeypatch.setattr(E, "estimators_dir", lambda: tmp_path / "estimators")
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))

    def run(*args):
        from harness.cli import main

        with pytest.raises(SystemExit) as exc:
            main(["profile", *map(str, args)])
        return exc.value.code

    return run


def test_profile_saves_fit_and_measurements(cli, capsys, tmp_path):
    code = cli("--model", "fakemodel", "--grid", "blocks=4,6,8;top_k=1,2,4;tier=low,high;prompt=8,24;output=4",
               "--repeats", "2", "--seed", "1", "--json")
    out = capsys.readouterr()
    assert code == 0, out.err
    res = json.loads(out.out)
    fit = tmp_path / "estimators" / "fakemodel__cpu.json"
    raw = tmp_path / "estimators" / "fakemodel__cpu.measurements.json"
    assert res["fit"] == str(fit) and fit.is_file() and raw.is_file()
    assert res["n_measurements"] == 3 * 3 * 2 * 2 * 2
    assert len(json.loads(raw.read_text())["measurements"]) == res["n_measurements"]
    for part in ("prefill", "decode", "total"):
        assert res["heldout"][part]["mape"] < 1e-3 and res["heldout"][part]["within_10pct"] == 1.0
    assert "held-out" in out.err
    # a later run finds the fit by (model, device)
    from harness.latency.estimator import load_estimator

    est = load_estimator(None, FakeInfo(name="fakemodel"), "cpu")
    assert est.path == str(fit) and est.meta["heldout"]["total"]["n"] > 0


def test_profile_config_file_and_bad_grid(cli, capsys, tmp_path):
    cfg = tmp_path / "p.toml"
    cfg.write_text('[profile]\ngrid = "blocks=4,8;top_k=1,4;tier=low;prompt=8;output=3"\nrepeats = 1\n')
    assert cli("--config", cfg, "--model", "m2", "-q") == 0
    assert (tmp_path / "estimators" / "m2__cpu.json").is_file()
    assert cli("--model", "m2", "--grid", "blocks=2") == 2
    assert "out of range" in capsys.readouterr().err
    assert cli("--model", "m2", "--grid", "warp=9") == 2


def test_refit_from_saved_measurements(cli, capsys, tmp_path):
    assert cli("--model", "m3", "--grid", "blocks=4,6,8;top_k=1,4;tier=low,high;prompt=8,24;output=3", "--repeats", "2", "-q") == 0
    raw = tmp_path / "estimators" / "m3__cpu.measurements.json"
    first = json.loads((tmp_path / "estimators" / "m3__cpu.json").read_text())
    out = tmp_path / "refit.json"
    assert cli("--model", "m3", "--from-measurements", raw, "--output", out, "--json") == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n_measurements"] == first["n_measurements"] and res["n_interference_excluded"] == 0
    again = json.loads(out.read_text())
    assert again["prefill"]["coef"] == pytest.approx(first["prefill"]["coef"])
    assert cli("--model", "other", "--from-measurements", raw) == 2
    assert "holds measurements of m3" in capsys.readouterr().err


def test_interference_is_dropped_from_the_fit():
    from harness.latency.estimator import Measurement, drop_interference

    base = [Measurement(8, 4, 1, 36, 10, 10.0, [2.0, 2.0], r) for r in range(3)]
    slow = Measurement(8, 4, 1, 36, 10, 120.0, [25.0, 25.0], 3)
    kept = drop_interference(base + [slow])
    assert slow not in kept and len(kept) == 3
