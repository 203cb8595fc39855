"""``--policy package.module:Name@weights.json``: a learned controller gets its checkpoint through
``load_checkpoint(path)``, recorded (path and sha256) in summary.json; bad checkpoints are one-line
errors before any weights load."""

from __future__ import annotations

import json

import pytest

from fixtures.fakes import FakeBackend, FakeMetric, FakeTask, evaluate_loaded, fake_data
from harness.errors import HarnessError
from harness.policies import Policy, split_checkpoint


class Thresholded(Policy):
    """Cheap configuration for prompts longer than a threshold read from its checkpoint."""

    name = "thresholded"

    def setup(self):
        self.threshold = None

    def load_checkpoint(self, path):
        self.threshold = int(json.loads(open(path).read())["threshold"])

    def choose(self, inputs):
        cheap, full = self.context.knob_space[0], self.context.knob_space[-1]
        return [cheap if i.text_tokens > self.threshold else full for i in inputs]


class NoCheckpoint(Policy):
    name = "nockpt"

    def choose(self, inputs):
        return [self.context.knob_space[0]] * len(inputs)


def test_split_checkpoint():
    assert split_checkpoint("pkg.mod:Cls@w.json") == ("pkg.mod:Cls", "w.json")
    assert split_checkpoint("random") == ("random", None)
    assert split_checkpoint("pkg.mod:Cls") == ("pkg.mod:Cls", None)


def _run(tmp_path, spec, name="run"):
    return evaluate_loaded(FakeBackend(), FakeTask(), fake_data(6), tmp_path / name, metric=FakeMetric(), policy=spec,
                           knob_space=["6,2", "8,4"])


def test_checkpoint_is_loaded_and_recorded(tmp_path):
    w = tmp_path / "w.json"
    w.write_text(json.dumps({"threshold": 0}))
    summary, lines = _run(tmp_path, f"test_policy_checkpoint:Thresholded@{w}")
    assert {ln["config"] for ln in lines} == {"6,2,medium"}  # every prompt is longer than 0 tokens
    ck = summary["policy"]["checkpoint"]
    assert ck["path"] == str(w) and len(ck["sha256"]) == 16


@pytest.mark.parametrize("spec, needle", [
    ("test_policy_checkpoint:Thresholded@{missing}", "does not exist"),
    ("test_policy_checkpoint:NoCheckpoint@{w}", "has no load_checkpoint"),
    ("test_policy_checkpoint:Thresholded@{bad}", "cannot load checkpoint"),
])
def test_bad_checkpoints_are_one_line_errors(tmp_path, spec, needle):
    w, bad = tmp_path / "w.json", tmp_path / "bad.json"
    w.write_text("{}")
    bad.write_text("not json")
    with pytest.raises(HarnessError, match=needle) as err:
        _run(tmp_path, spec.format(missing=tmp_path / "nope.json", w=w, bad=bad))
    assert "\n" not in str(err.value)
