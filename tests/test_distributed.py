"""`harness run` and `harness sweep` under torchrun on CPU (gloo): the merged run directory equals a
one-process run's, a failing rank ends the job with one clear line and no corrupt records, and a
killed job resumes with any number of processes. The model is the fake backend (fixtures/fake_cli.py),
the tasks and samples are real."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

FAKE_CLI = str(Path(__file__).parent / "fixtures" / "fake_cli.py")
# fields that are about this invocation, not the result
VOLATILE = {"created", "timing", "host_load", "controller_ms"}  # controller_ms: wall-clock time of this invocation


# one command takes 2-10 s on 2 cores (torch imports in each process); a hang fails the test well before CI's limit
TIMEOUT_S = 120


def harness(tmp_path, *args, nproc: int | None = None, env: dict | None = None, cache: str = "cache"):
    cmd = [sys.executable]
    if nproc is not None:
        cmd += ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc)]
    cmd += [FAKE_CLI, *map(str, args)]
    full_env = {**os.environ, "HARNESS_CACHE_DIR": str(tmp_path / cache), "OMP_NUM_THREADS": "1", **(env or {})}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env, cwd=tmp_path,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        # SIGTERM: torchrun stops its workers (each in a session of its own; a hung rank sleeps an hour)
        proc.terminate()
        try:
            out, err = proc.communicate(timeout=45)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        pytest.fail(f"{' '.join(cmd[1:])} did not finish within {TIMEOUT_S} s\n{err[-4000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def read_run(folder: Path) -> tuple[dict | None, list[dict]]:
    summary = json.loads((folder / "summary.json").read_text()) if (folder / "summary.json").is_file() else None
    path = folder / "samples.jsonl"
    lines = [json.loads(x) for x in path.read_text().splitlines()] if path.is_file() else []
    return summary, lines


def result_of(lines: list[dict], batches: bool = True) -> dict:
    """What must not depend on the number of processes, per sample id (a resumed run plans its
    batches anew, as a resumed one-process run does)."""
    return {ln["id"]: (ln["prediction"], ln["score"], ln["config"], ln["error"]) + ((ln["batch_id"],) if batches else ())
            for ln in lines}


def _notes(summary: dict) -> list[str]:
    """Notes without numbers measured on the way (host load, fit duration), the first-use fit or the
    busy-CPU note (harness.hostload: the 1-minute load average, which a 4-process job on 2 cores
    raises for the run after it; like ``host_load``, about this invocation, not the result)."""
    import re

    return [re.sub(r"\d+(\.\d+)?", "#", n) for n in summary.get("notes", [])
            if "quick fit" not in n and not n.startswith("the CPU was busy")]


def assert_same_run(a: Path, b: Path, batches: bool = True, volatile: set = VOLATILE) -> None:
    sa, la = read_run(a)
    sb, lb = read_run(b)
    assert sa is not None and sb is not None
    assert result_of(la, batches) == result_of(lb, batches)
    assert len(la) == len({ln["id"] for ln in la}) and len(lb) == len({ln["id"] for ln in lb})
    diff = {k for k in set(sa) | set(sb) if sa.get(k) != sb.get(k)} - volatile
    if "notes" in diff and _notes(sa) == _notes(sb):  # only the estimator fit made on first use differs
        diff.discard("notes")
    assert not diff, {k: (sa.get(k), sb.get(k)) for k in diff}
    assert not (b / "parts").exists()


RUN = ("run", "--task", "scienceqa", "--limit", "14", "--policy", "random", "--batch-size", "2", "--quiet")


def test_two_ranks_equal_one_process_and_record_rank_and_device(tmp_path):
    # rank 0 makes the first-use estimator fit and sends it to rank 1; the one-process run loads it
    two = harness(tmp_path, *RUN, "--output", tmp_path / "two", nproc=2, env={"HARNESS_AUTOFIT_SECONDS": "30"})
    assert two.returncode == 0, two.stderr
    one = harness(tmp_path, *RUN, "--output", tmp_path / "one")
    assert one.returncode == 0, one.stderr
    assert_same_run(tmp_path / "one", tmp_path / "two")
    summary, lines = read_run(tmp_path / "two")
    assert {ln["measured"]["rank"] for ln in lines} == {0, 1}
    assert {ln["measured"]["device"] for ln in lines} == {"cpu"}
    assert summary["timing"]["world_size"] == 2 and len(summary["timing"]["ranks"]) == 2
    assert sum(r["samples"] for r in summary["timing"]["ranks"]) == 14
    assert summary["estimator"] and all(ln["estimated"] for ln in lines)


def test_nproc_1_is_the_single_process_run(tmp_path):
    args = ("run", "--task", "tallyqa", "--knobs", "6,2", "--limit", "6", "--quiet", "--estimator", "none")
    a = harness(tmp_path, *args, "--output", tmp_path / "plain")
    b = harness(tmp_path, *args, "--output", tmp_path / "torchrun", nproc=1)
    assert a.returncode == 0 and b.returncode == 0, (a.stderr, b.stderr)
    assert_same_run(tmp_path / "plain", tmp_path / "torchrun")
    sa, la = read_run(tmp_path / "plain")
    sb, lb = read_run(tmp_path / "torchrun")
    assert [ln["id"] for ln in la] == [ln["id"] for ln in lb]  # the very same file order
    assert "world_size" not in sb["timing"]


@pytest.mark.slow
def test_sweep_deals_whole_run_directories(tmp_path):
    # the default estimator without a fit: each rank's own analytic roofline (it does not pickle), so
    # estimates are per process, like measured latency
    args = ("sweep", "--grid", "num_blocks=6,8 top_k=2,4", "--task", "scienceqa", "--limit", "5", "-q")
    env = {"HARNESS_AUTOFIT_SECONDS": "0"}
    two = harness(tmp_path, *args, "--output", tmp_path / "two", nproc=2, env=env)
    assert two.returncode == 0, two.stderr
    one = harness(tmp_path, *args, "--output", tmp_path / "one", env=env)
    assert one.returncode == 0, one.stderr
    folders = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").glob("*/*") if p.is_dir())
    assert len(folders) == 4
    ranks = set()
    for f in folders:
        assert_same_run(tmp_path / "one" / f, tmp_path / "two" / f,
                        volatile=VOLATILE | {"estimator_error", "estimated_vs_measured_total_ms"})
        _, lines = read_run(tmp_path / "two" / f)
        assert len({ln["measured"]["rank"] for ln in lines}) == 1  # one rank ran the whole directory
        ranks |= {ln["measured"]["rank"] for ln in lines}
    assert ranks == {0, 1}


def test_killed_rank_fails_cleanly_and_resumes_on_one_process(tmp_path):
    args = ("run", "--task", "scienceqa", "--limit", "12", "--knobs", "6,2", "--quiet", "--estimator", "none")
    ref = harness(tmp_path, *args, "--output", tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr
    killed = harness(tmp_path, *args, "--output", tmp_path / "run", nproc=2, env={"FAKE_DIE": "1:3"})
    assert killed.returncode != 0
    errors = [ln for ln in killed.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, killed.stderr
    assert "resume" in errors[0] and ("torchrun" in errors[0] or "rank" in errors[0])
    run = tmp_path / "run"
    assert not (run / "summary.json").exists()
    kept = [json.loads(x) for p in [run / "samples.jsonl", *sorted((run / "parts").glob("*.jsonl"))]
            if p.is_file() for x in p.read_text().splitlines()]  # every line written is whole
    assert any(ln["measured"]["rank"] == 1 for ln in kept)
    resumed = harness(tmp_path, *args, "--output", run)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(tmp_path / "ref", run, batches=False)


@pytest.mark.slow
def test_resume_on_four_then_two_then_one_process(tmp_path):
    args = ("run", "--task", "tallyqa", "--limit", "24", "--policy", "random", "--quiet", "--estimator", "none")
    assert harness(tmp_path, *args, "--output", tmp_path / "ref").returncode == 0
    run = tmp_path / "run"
    first = harness(tmp_path, *args, "--output", run, nproc=4, env={"FAKE_DIE": "2:2"})
    assert first.returncode != 0
    second = harness(tmp_path, *args, "--output", run, nproc=2, env={"FAKE_DIE": "1:3"})
    assert second.returncode != 0
    last = harness(tmp_path, *args, "--output", run, nproc=1)
    assert last.returncode == 0, last.stderr
    assert_same_run(tmp_path / "ref", run, batches=False)


@pytest.mark.slow
def test_rank_that_stops_responding_times_out(tmp_path):
    args = ("run", "--task", "scienceqa", "--limit", "8", "--knobs", "6,2", "--quiet", "--estimator", "none",
            "--dist-timeout", "0.1")
    # rank 0 hangs while planning: rank 1 waits 6 s for the plan, says so and stops; torchrun stops rank 0
    hung = harness(tmp_path, *args, "--output", tmp_path / "run", nproc=2, env={"FAKE_HANG_TOKENS": "0:3"})
    assert hung.returncode != 0
    errors = [ln for ln in hung.stderr.splitlines() if ln.startswith("error:")]
    assert any(ln.startswith("error: rank 1 of 2: planning scienceqa failed (Timed out") and "--dist-timeout 0.1 min" in ln
               for ln in errors), hung.stderr
    assert len(errors) <= 2 and not (tmp_path / "run" / "summary.json").exists()
