"""The pieces of a torchrun job that need no processes: dealing work by cost, the part files a
killed job leaves behind (folded into samples.jsonl by any later open, whatever the world size),
merged timing, and the device each rank uses."""

from __future__ import annotations

import json

import pytest

from harness.distributed import rank_device, setup
from harness.errors import HarnessError
from harness.knobs import Knobs
from harness.parts import fold_parts, part_path
from harness.records import RunRecord
from harness.sharding import deal, merged_timing, sample_costs


def test_deal_balances_by_cost_and_is_deterministic():
    costs = [9, 1, 1, 1, 1, 1, 1, 1, 1, 1]
    owners = deal(costs, 2)
    loads = [sum(c for c, r in zip(costs, owners) if r == k) for k in range(2)]
    assert loads == [9, 9]
    assert deal(costs, 2) == owners
    assert deal([3.0] * 5, 5) == [0, 1, 2, 3, 4]
    assert deal([], 4) == []
    # more ranks than items: the first ranks get one each, the rest none
    assert sorted(deal([5, 4], 4)) == [0, 1]


def test_sample_costs_follow_the_estimator_else_a_token_proxy():
    rows = [(Knobs(16, 8, "high"), 30, 144, 1), (Knobs(12, 2, "low"), 30, 16, 1)]
    proxy = sample_costs(rows)
    assert proxy[0] > proxy[1] > 0

    class Est:
        def predict(self, inputs):
            from harness.latency.estimator import Estimate

            return [Estimate(1.0, 1.0, 2.0 + i.num_active_blocks) for i in inputs]

    assert sample_costs(rows, Est()) == [18.0, 14.0]

    class Broken:
        def predict(self, inputs):
            raise RuntimeError("no")

    assert sample_costs(rows, Broken()) == proxy


def _line(i: int, rank: int = 0) -> dict:
    return {"id": f"s{i}", "prediction": "A", "measured": {"rank": rank}}


def test_open_folds_the_parts_of_a_killed_job_once(tmp_path):
    rec = RunRecord.open(tmp_path / "run", {"task": "t"})
    rec.append(_line(0))
    rec.close()
    # a killed 3-rank job: rank 1 died mid-line, rank 2 repeated a line already merged
    for rank, ids in ((0, [1, 2]), (1, [3]), (2, [0, 4])):
        p = part_path(tmp_path / "run", rank)
        p.parent.mkdir(exist_ok=True)
        p.write_text("".join(json.dumps(_line(i, rank)) + "\n" for i in ids))
    with open(part_path(tmp_path / "run", 1), "a") as fh:
        fh.write('{"id": "s5", "predic')
    rec = RunRecord.open(tmp_path / "run", {"task": "t"})
    assert sorted(rec.finished) == ["s0", "s1", "s2", "s3", "s4"]
    ids = [json.loads(x)["id"] for x in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert sorted(ids) == sorted(set(ids)) == ["s0", "s1", "s2", "s3", "s4"]
    assert not (tmp_path / "run" / "parts").exists()
    # opening again changes nothing
    assert sorted(RunRecord.open(tmp_path / "run", {"task": "t"}).finished) == sorted(rec.finished)


def test_a_fold_killed_halfway_is_finished_by_the_next_open(tmp_path):
    folder = tmp_path / "run"
    rec = RunRecord.open(folder, {"task": "t"})
    rec.append(_line(0))
    rec.close()
    p = part_path(folder, 0)
    p.parent.mkdir()
    p.write_text("".join(json.dumps(_line(i)) + "\n" for i in range(3)))
    # the fold appended one line and half of the next, then the process died (parts still there)
    (folder / "samples.jsonl").write_text(json.dumps(_line(0)) + "\n" + json.dumps(_line(1))[:9])
    rec = RunRecord.open(folder, {"task": "t"})
    assert sorted(rec.finished) == ["s0", "s1", "s2"]
    lines = (folder / "samples.jsonl").read_text().splitlines()
    assert [json.loads(x)["id"] for x in lines] == ["s0", "s1", "s2"]


def test_fold_reports_lines_per_part_file(tmp_path):
    p = part_path(tmp_path, 3)
    p.parent.mkdir()
    p.write_text(json.dumps(_line(7, 3)) + "\n")
    finished: dict = {}
    found = fold_parts(tmp_path, finished, tmp_path / "samples.jsonl")
    assert found == {"rank-3.jsonl": 1} and list(finished) == ["s7"]
    assert fold_parts(tmp_path, finished, tmp_path / "samples.jsonl") == {}


def test_merged_timing_sums_work_and_keeps_the_slowest_wall_time():
    per_rank = [{"rank": 0, "device": "cuda:0", "written": 3, "samples": 3, "batches": 2, "loop_s": 4.0,
                 "generate_s": 3.0, "model_ms": 2500.0, "warmup_s": 1.0, "warmup": {"keys": 1}},
                {"rank": 1, "device": "cuda:1", "written": 2, "samples": 2, "batches": 2, "loop_s": 5.0,
                 "generate_s": 2.0, "model_ms": 1500.0, "warmup_s": 0.5}]
    t = merged_timing(per_rank)
    assert t["samples"] == 5 and t["batches"] == 4 and t["model_ms"] == 4000.0 and t["loop_s"] == 5.0
    assert t["world_size"] == 2 and [r["device"] for r in t["ranks"]] == ["cuda:0", "cuda:1"]
    assert "rank" not in t and "written" not in t


def test_rank_device(monkeypatch):
    assert rank_device("cpu", 3, 4) == "cpu"
    assert rank_device("cuda", 3, 4) == "cuda:3"
    assert rank_device("cuda:1", 0, 1) == "cuda:1"
    with pytest.raises(HarnessError, match="pass --device cuda"):
        rank_device("cuda:0", 1, 8)


def test_one_process_has_no_world_and_bad_torchrun_environments_are_one_line_errors(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert setup("cpu") is None
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert setup("cpu") is None
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(HarnessError, match="MASTER_ADDR is not set; start the job with torchrun"):
        setup("cpu")
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(HarnessError, match="RANK='x' is not an integer"):
        setup("cpu")
