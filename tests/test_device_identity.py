"""Where a run ran: every run records its device identity (CPU model, cores, threads; GPU, driver;
torch/CUDA), and the gate and "same environment" checks compare on it, so two different CPUs are
never one device."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "data" / "rundirs"))
from rundir_factory import make_run  # noqa: E402

from harness.errors import HarnessError  # noqa: E402
from harness.reports.gate import read_baseline, run_gate, write_baseline  # noqa: E402
from harness.reports.comparable import check_comparable  # noqa: E402
from harness.reports.rundirs import load_runs  # noqa: E402

IDS = [f"q{i:02d}" for i in range(30)]
SCORES = [1.0 if i % 3 else 0.0 for i in range(30)]
EPYC = {"kind": "cpu", "name": "AMD EPYC 7R13 Processor", "cores": 2, "threads": 2, "driver": None,
        "torch": "2.13.0", "cuda": None}
XEON = {**EPYC, "name": "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz", "cores": 8, "threads": 8}


def _runs(tmp_path, where, ident, latency_ms=100.0):
    make_run(tmp_path / where, knobs="16,8,high", scores=SCORES, ids=IDS, latency_ms=latency_ms, estimated_ms=90,
             device_identity=ident)
    return load_runs([tmp_path / where])


def test_two_cpus_are_two_devices_for_the_gate(tmp_path):
    base = tmp_path / "baseline.json"
    write_baseline(base, _runs(tmp_path, "epyc", EPYC))
    entry = read_baseline(base)[0]
    assert entry["device_key"] == "cpu-amd-epyc-7r13-processor-2c" and "AMD EPYC 7R13 Processor, 2 cores" in entry["environment"]
    # the same CPU model and core count: measured latency is compared (a 2x slowdown fails)
    (same,) = run_gate(_runs(tmp_path, "epyc2", {**EPYC, "threads": 1}, latency_ms=200.0), read_baseline(base))
    assert same.latency_comparable is True and same.latency == "regression"
    # another CPU, also "cpu" / x86_64: not comparable, said so, and its 2x slowdown is not "ok"
    (other,) = run_gate(_runs(tmp_path, "xeon", XEON, latency_ms=200.0), read_baseline(base))
    assert other.latency == "not comparable (device)" and other.latency_comparable is False
    assert "Xeon" in other.cand_environment and "EPYC" in other.base_environment


def test_same_environment_checks_use_the_identity(tmp_path):
    runs = _runs(tmp_path, "a", EPYC) + _runs(tmp_path, "b", XEON)
    with pytest.raises(HarnessError, match="devices .* differ: .*AMD EPYC.* vs .*Xeon"):
        check_comparable(runs, ["environment"], "the Pareto table")
    check_comparable(_runs(tmp_path, "c", {**EPYC, "torch": "2.14.0"}) + runs[:1], ["environment"], "the Pareto table")


def test_a_run_records_where_it_ran(harness_cli, capsys, tmp_path):
    from harness.environment import cpu_cores, cpu_name

    assert harness_cli("run", "--task", "scienceqa", "--knobs", "6,2", "--limit", "3", "--estimator", "none", "-q",
                       "--json", "-o", tmp_path / "o") == 0
    s = json.loads(capsys.readouterr().out)
    ident = s["device_identity"]
    assert ident["kind"] == "cpu" and ident["name"] == cpu_name() and ident["cores"] == cpu_cores()
    assert ident["threads"] >= 1 and ident["torch"] and s["device_name"] == cpu_name()
    assert set(ident) >= {"kind", "name", "cores", "threads", "driver", "torch", "cuda"}
    (run,) = load_runs([tmp_path / "o"])
    assert run.device_key.startswith("cpu-") and run.device_key.endswith(f"-{cpu_cores()}c")
