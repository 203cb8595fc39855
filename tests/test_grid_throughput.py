"""benchmarks/grid_throughput.py: the CPU smoke run end to end (a real ``harness sweep`` subprocess on
the bundled reference model), its report's fields, and the FLOPs it counts (positive, growing with
the configuration, equal to the roofline module's count of the sample lines). No wall-clock asserts."""

from __future__ import annotations

import json

import pytest

from fixtures.scripts import load_benchmark
from harness.latency.roofline import lm_flops

COUNTS = {"dense_per_block": 1000.0, "per_expert": 100.0, "head": 5000.0, "hidden": 16}


def test_lm_flops_counts_blocks_top_k_and_tokens():
    full = lm_flops(COUNTS, 16, 8, 8, 100, 15)
    assert full["prefill"] > 0 and full["decode"] > 0
    assert lm_flops(COUNTS, 12, 8, 8, 100, 15)["prefill"] < full["prefill"]
    assert lm_flops(COUNTS, 16, 2, 8, 100, 15)["prefill"] < full["prefill"]
    assert lm_flops(COUNTS, 16, 8, 8, 50, 15)["prefill"] < full["prefill"]
    assert lm_flops(COUNTS, 16, 8, 8, 100, 0)["decode"] == 0
    # linear part: 2 x (16 dense blocks + (8 + 15 x 8) experts) per token; causal attention 2*d*L*(L+1) per block
    one = lm_flops(COUNTS, 16, 8, 8, 1, 0)["prefill"]
    assert one == 2 * (16 * 1000 + 128 * 100) + 16 * 2 * 16 * 2 + 2 * 5000
    # block 0 keeps the model's top_k: one block at any top_k costs the same
    assert lm_flops(COUNTS, 1, 2, 8, 10, 3) == lm_flops(COUNTS, 1, 8, 8, 10, 3)


def test_decode_steps_from_a_sample_line():
    mod = load_benchmark("grid_throughput.py")
    assert mod.decode_steps({"output_tokens": 16, "finish_reason": "length"}) == 15
    assert mod.decode_steps({"output_tokens": 1, "finish_reason": "eos"}) == 1  # the step that made the EOS
    assert mod.decode_steps({"output_tokens": 0, "finish_reason": "eos"}) == 0  # EOS straight from the prefill


@pytest.mark.slow
def test_random_molmoe_counts_on_meta():
    """random:molmoe-1b built on the meta device: its vision module counts as vision (tower and the
    w1/w2/w3 projector, whose names say neither), 16 language-model blocks, MolmoE-1B's expert size."""
    from harness import backends
    from harness.latency.roofline import model_counts, n_experts_of, vision_flops
    from harness.types import GenRequest
    from PIL import Image

    b = backends.load("random:molmoe-1b", device="meta", dtype="bfloat16", engine="eager")
    c = model_counts(b, n_experts_of(b, b.info))
    assert c["blocks"] == 16 and c["per_expert"] == 3 * 2048 * 1024 and c["hidden"] == 2048
    assert 0.29e9 < c["vision"] < 0.33e9  # ViT-L/14-336 at 23 layers plus the 2048 -> 2048 SwiGLU projector
    low = vision_flops(b, GenRequest("?", Image.new("RGB", (64, 48))), "low")
    assert low["vision_tokens"] == 432 and low["vision"] > 50 * low["projector"] > 0


@pytest.mark.slow
def test_smoke_run_end_to_end(tmp_path):
    mod = load_benchmark("grid_throughput.py")
    out, kept = tmp_path / "results", tmp_path / "sweep"
    report = mod.main(["--model", "reference", "--device", "cpu", "--limit", "4", "--grid", "ci", "--batch-size", "4",
                       "--out", str(out), "--keep", str(kept)])
    files = sorted(p.name for p in out.iterdir())
    stem = files[0].rsplit(".", 1)[0]
    assert files == [f"{stem}.json", f"{stem}.md"] and stem.startswith("grid_throughput_reference__cpu-") and stem.endswith("__ci__b4")
    r = json.loads((out / f"{stem}.json").read_text())
    assert r == json.loads(json.dumps(report))
    assert r["benchmark"] == "grid_throughput" and r["grid"] == "ci" and r["task"] == "scienceqa"
    assert r["configurations"] == 2 and r["samples"] == 8 and r["failed"] == 0 and r["batch_size"] == 4
    assert r["command"].startswith("harness sweep --grid ci --task scienceqa --model reference")
    for key in ("whole_command", "without_warmup", "run_loops", "model"):
        assert r["samples_per_s"][key] > 0 and r["x_of_roofline"][key] > 0
    assert r["samples_per_s"]["without_warmup"] >= r["samples_per_s"]["whole_command"]
    t = r["timing_s"]
    assert t["wall"] > 0 and t["warmup"] >= 0 and t["run_loops"] > 0
    assert r["matmul"]["dtype"] == "float32" and r["matmul"]["flops_per_s"] > 0
    assert set(r["goal"]) == {"samples_per_s", "within_x_of_roofline", "met_whole_command", "met_without_warmup"}

    # FLOPs: positive in every part, summing to the total, larger for the larger configuration
    f = r["flops"]
    assert all(f[p] > 0 for p in mod.PARTS)
    assert f["total"] == pytest.approx(sum(f[p] for p in mod.PARTS))
    assert r["roofline"]["seconds"] == pytest.approx(f["total"] / r["matmul"]["flops_per_s"])
    by = {c["config"]: c for c in r["per_config"]}
    assert set(by) == {"16,8,high", "12,2,low"}
    big, small = by["16,8,high"], by["12,2,low"]
    for p in mod.PARTS:
        assert big["flops"][p] > small["flops"][p] > 0, p
    assert big["flops_total"] > 2 * small["flops_total"]
    assert sum(c["flops_total"] for c in r["per_config"]) == pytest.approx(f["total"])
    # the vision parts scale with the tier's vision tokens (reference: 144 at high, 16 at low)
    vis = r["vision_flops_per_image"]
    assert vis["high"]["vision_tokens"] == 144 and vis["low"]["vision_tokens"] == 16
    assert big["flops"]["vision"] / small["flops"]["vision"] == pytest.approx(vis["high"]["vision"] / vis["low"]["vision"])

    # the language-model parts are the roofline module's count of the kept sample lines
    counts = r["model_counts"]
    for c in r["per_config"]:
        b, k, tier = c["config"].split(",")
        lines = [json.loads(x) for x in (kept / "scienceqa" / f"b{b}-k{k}-{tier}" / "samples.jsonl").read_text().splitlines()]
        assert len(lines) == c["n"] == 4
        want = [lm_flops(counts, int(b), int(k), 8, ln["vision_tokens"] + ln["text_tokens"], mod.decode_steps(ln)) for ln in lines]
        assert c["flops"]["lm_prefill"] == pytest.approx(sum(w["prefill"] for w in want))
        assert c["flops"]["lm_decode"] == pytest.approx(sum(w["decode"] for w in want))

    md = (out / f"{stem}.md").read_text()
    assert "| whole command |" in md and "| without warm-up" in md and "| 16,8,high | 4 |" in md and "Goal:" in md
