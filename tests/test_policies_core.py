"""Policy protocol: registry and loading, --policy-arg conversion, choose_safely, knob spaces,
the fixed and random built-ins."""

from __future__ import annotations

import sys
import textwrap
from collections import Counter

import pytest

from harness.backends.base import ModelInfo
from harness.errors import HarnessError
from harness.knobs import Knobs
from harness.policies import (REGISTRY, PolicyContext, PolicyFailure, PolicyInput, build, choose_safely,
                              load_knob_space, parse_policy_args)
from harness.policies.knob_space import default_knob_space

INFO = ModelInfo(name="tiny", family="olmoe", n_blocks=16, default_top_k=8, max_top_k=8, min_blocks=12,
                 tiers=("low", "medium", "high"), default_tier="high")


def ctx(space=None, **kw) -> PolicyContext:
    return PolicyContext(model_info=INFO, knob_space=space if space is not None else load_knob_space("full", INFO),
                         estimator=kw.pop("estimator", None), accuracy_table=kw.pop("accuracy_table", None),
                         seed=kw.pop("seed", 0), max_new_tokens=kw.pop("max_new_tokens", 16), **kw)


def inp(i, task="vqav2", text=50, budget=None) -> PolicyInput:
    return PolicyInput(sample_id=f"s{i}", task=task, question=f"q{i}", image_size=(64, 48), text_tokens=text,
                       vision_tokens_by_tier={"low": 16, "medium": 64, "high": 144}, latency_budget_ms=budget)


# -- registry and loading -----------------------------------------------------------------------
def test_builtins_are_registered():
    assert {"fixed", "budget", "random", "oracle"} <= set(REGISTRY.names())


def test_unknown_policy_suggests_a_name():
    with pytest.raises(HarnessError, match="Did you mean 'random'"):
        build("randon", {}, ctx())


def test_module_attr_policy_class_with_params(tmp_path, monkeypatch):
    (tmp_path / "my_policies.py").write_text(textwrap.dedent("""
        from harness.knobs import Knobs
        from harness.policies import Policy, Param

        class ByLength(Policy):
            params = {"cut": Param(int, 100, "text tokens")}
            def choose(self, inputs):
                return [Knobs(12, 2) if i.text_tokens > self.cut else Knobs(16, 8, "low") for i in inputs]

        def all_cheap(inputs):
            return ["12,2,low"] * len(inputs)

        class Plain:
            def __init__(self, context, level="12"):
                self.level = int(level)
            def choose(self, inputs):
                return [Knobs(self.level, 2)] * len(inputs)
        """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_policies", raising=False)
    p = build("my_policies:ByLength", {"cut": "60"}, ctx())
    got = choose_safely(p, [inp(0, text=50), inp(1, text=70)], INFO)
    assert got == [Knobs(16, 8, "low"), Knobs(12, 2, "high")]  # tier None -> model default "high"
    with pytest.raises(HarnessError, match="not a valid int"):
        build("my_policies:ByLength", {"cut": "many"}, ctx())
    with pytest.raises(HarnessError, match="has no argument 'cutt'. Did you mean 'cut'"):
        build("my_policies:ByLength", {"cutt": "3"}, ctx())
    f = build("my_policies:all_cheap", {}, ctx())
    assert choose_safely(f, [inp(0)], INFO) == [Knobs(12, 2, "low")]
    plain = build("my_policies:Plain", {"level": "13"}, ctx())
    assert choose_safely(plain, [inp(0)], INFO) == [Knobs(13, 2, "high")]
    with pytest.raises(HarnessError, match="no argument"):
        build("my_policies:Plain", {"bogus": "1"}, ctx())


def test_entry_point_policy(monkeypatch):
    from harness import registry as reg_mod
    from harness.policies import Policy

    class EP(Policy):
        def choose(self, inputs):
            return [Knobs(12, 4)] * len(inputs)

    class FakeEP:
        name = "from-ep"

        def load(self):
            return EP

    monkeypatch.setattr(reg_mod, "entry_points", lambda group: [FakeEP()] if group == "harness.policies" else [])
    monkeypatch.setattr(REGISTRY, "_entry_points_loaded", False)
    monkeypatch.setattr(REGISTRY, "_items", dict(REGISTRY._items))
    p = build("from-ep", {}, ctx())
    assert choose_safely(p, [inp(0)], INFO) == [Knobs(12, 4, "high")]


def test_parse_policy_args():
    assert parse_policy_args(["seed=3", "knobs=14,6,low"]) == {"seed": "3", "knobs": "14,6,low"}
    for bad, msg in ((["seed"], "not key=value"), (["=3"], "empty key"), (["a=1", "a=2"], "twice")):
        with pytest.raises(HarnessError, match=msg):
            parse_policy_args(bad)


# -- choose_safely ------------------------------------------------------------------------------
class Raises:
    name = "boom"

    def choose(self, inputs):
        raise RuntimeError("model of the world\nunavailable")


class Counts:
    name = "short"

    def choose(self, inputs):
        return [Knobs(14, 6)] * (len(inputs) - 1)


class Mixed:
    name = "mixed"

    def choose(self, inputs):
        return [Knobs(14, 6), Knobs(14, 9), "12,2,low", {"num_blocks": 11, "top_k": 2}, 7, PolicyFailure("skip me")]


def test_choose_safely_raising_policy_fails_every_sample_with_its_message():
    out = choose_safely(Raises(), [inp(0), inp(1)], INFO)
    assert all(isinstance(o, PolicyFailure) for o in out)
    assert str(out[0]) == "policy 'boom' raised RuntimeError: model of the world unavailable"


def test_choose_safely_wrong_count():
    out = choose_safely(Counts(), [inp(i) for i in range(3)], INFO)
    assert [str(o) for o in out] == ["policy 'short' returned 2 configurations for 3 samples"] * 3


def test_choose_safely_invalid_items_fail_alone():
    out = choose_safely(Mixed(), [inp(i) for i in range(6)], INFO)
    assert out[0] == Knobs(14, 6, "high")
    assert isinstance(out[1], PolicyFailure) and "top_k=9 is out of range" in str(out[1]) and "'s1'" in str(out[1])
    assert out[2] == Knobs(12, 2, "low")
    assert isinstance(out[3], PolicyFailure) and "allowed 12..16" in str(out[3])
    assert isinstance(out[4], PolicyFailure) and "not a configuration" in str(out[4])
    assert str(out[5]) == "skip me"


def test_choose_safely_non_list_answer():
    class One:
        name = "one"

        def choose(self, inputs):
            return Knobs(14, 6)

    out = choose_safely(One(), [inp(0)], INFO)
    assert "returned Knobs, not a list" in str(out[0])


# -- fixed --------------------------------------------------------------------------------------
def test_fixed_policy():
    p = build("fixed", {"knobs": "14,6"}, ctx())
    assert choose_safely(p, [inp(0), inp(1)], INFO) == [Knobs(14, 6, "high")] * 2
    assert build("fixed", {"knobs": "num_blocks=13,top_k=2,tier=low"}, ctx()).choose([inp(0)]) == [Knobs(13, 2, "low")]
    with pytest.raises(HarnessError, match="needs --policy-arg knobs"):
        build("fixed", {}, ctx())
    with pytest.raises(HarnessError, match="top_k=12 is out of range for tiny: allowed 1..8"):
        build("fixed", {"knobs": "14,12"}, ctx())
    with pytest.raises(HarnessError, match="malformed"):
        build("fixed", {"knobs": "14"}, ctx())


# -- random -------------------------------------------------------------------------------------
def test_random_is_per_sample_deterministic_whatever_the_batch():
    p = build("random", {}, ctx(seed=7))
    items = [inp(i) for i in range(40)]
    whole = p.choose(items)
    pieces = []
    for chunk in (items[:3], items[3:4], items[4:40]):
        pieces += p.choose(chunk)
    assert whole == pieces
    rev = p.choose(list(reversed(items)))
    assert list(reversed(rev)) == whole
    again = build("random", {}, ctx(seed=7)).choose(items)
    assert again == whole
    other = build("random", {"seed": "8"}, ctx(seed=7)).choose(items)
    assert other != whole


def test_random_is_uniform_over_the_space():
    space = load_knob_space("mixed8", INFO)
    p = build("random", {"seed": "1"}, ctx(space=space))
    counts = Counter(p.choose([inp(i) for i in range(4000)]))
    assert set(counts) == set(space)
    assert max(counts.values()) - min(counts.values()) < 200  # expected 500 each; sd ~ 21


def test_random_bad_seed_and_empty_space():
    with pytest.raises(HarnessError, match="seed='x' is not a valid int"):
        build("random", {"seed": "x"}, ctx())
    with pytest.raises(HarnessError, match="non-empty knob space"):
        build("random", {}, ctx(space=[]))


# -- knob spaces --------------------------------------------------------------------------------
def test_bundled_knob_spaces():
    full = load_knob_space("full", INFO)
    assert len(full) == 60 and len(set(full)) == 60
    assert Knobs(12, 2, "low") in full and Knobs(16, 8, "high") in full
    assert all(k.tier is not None for k in load_knob_space("full-default-tier", INFO))
    assert len(load_knob_space("mixed8", INFO)) == 8


def test_default_knob_space_is_the_model_grid():
    grid = default_knob_space(INFO)
    assert len(grid) == 5 * 4 * 3
    assert load_knob_space(None, INFO) == grid


def test_sweep_grid_files_are_knob_spaces(tmp_path):
    f = tmp_path / "grid.toml"
    f.write_text('tasks = ["vqav2"]\n[grid]\nnum_blocks = "14..16"\ntop_k = [4, 8]\ntier = ["low"]\n')
    assert load_knob_space(str(f), INFO) == [Knobs(b, k, "low") for b in (14, 15, 16) for k in (4, 8)]
    f.write_text('[grid]\nnum_blocks = "16..14"\ntop_k = [4]\n')
    with pytest.raises(HarnessError, match="empty range"):
        load_knob_space(str(f), INFO)
    f.write_text('[grid]\nnum_blocks = "many"\ntop_k = [4]\n')
    with pytest.raises(HarnessError, match="range like"):
        load_knob_space(str(f), INFO)


def test_knob_space_errors(tmp_path):
    with pytest.raises(HarnessError, match="Did you mean 'full'"):
        load_knob_space("ful", INFO)
    bad = tmp_path / "bad.toml"
    bad.write_text('[grid]\nnum_blocks = [10, 12]\ntop_k = [2]\n')
    with pytest.raises(HarnessError, match="config 10,2.*allowed 12..16"):
        load_knob_space(str(bad), INFO)
    bad.write_text('[grid]\nnum_blocks = [12]\ntopk = [2]\n')
    with pytest.raises(HarnessError, match="unknown \\[grid\\] key"):
        load_knob_space(str(bad), INFO)
    bad.write_text('configs = ["12,2,ultra"]\n')
    with pytest.raises(HarnessError, match="unknown tier 'ultra'"):
        load_knob_space(str(bad), INFO)
    bad.write_text('configs = [\n')
    with pytest.raises(HarnessError, match="not valid TOML"):
        load_knob_space(str(bad), INFO)
    with pytest.raises(HarnessError, match="does not exist"):
        load_knob_space(str(tmp_path / "missing.toml"), INFO)


def test_policy_input_record_and_vision_tokens():
    i = inp(3)
    d = i.to_dict()
    assert d["image_size"] == [64, 48] and d["vision_tokens_by_tier"]["medium"] == 64
    with pytest.raises(HarnessError, match="no vision token count for tier 'huge'"):
        i.vision_tokens("huge")
