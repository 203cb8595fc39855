"""Task lookup: built-ins, aliases, did-you-mean, `module:attr`, `--include-path` folders and the
`harness.tasks` entry point group of an installed package; and the `harness tasks` command."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest
from click.testing import CliRunner

from harness.errors import HarnessError
from harness.tasks import BUILTIN_TASKS, get_task, include_path, registry
from harness.tasks.base import Task

EXPECTED = {
    "scienceqa": ("mc", "lmms-lab/ScienceQA", "ScienceQA-IMG", "test", True),
    "textvqa": ("vqa_score", "lmms-lab/textvqa", None, "validation", True),
    "okvqa": ("vqa_score", "lmms-lab/OK-VQA", None, "val2014", True),
    "vqav2": ("vqa_score", "lmms-lab/VQAv2", None, "validation", True),
    "tallyqa": ("em", "vikhyatk/tallyqa-test", None, "test", True),
    "stvqa": ("ansl_em", "lmms-lab/ST-VQA", None, "test", False),
    "docvqa": ("ansl_em", "lmms-lab/DocVQA", "DocVQA", "validation", True),
    "coco-caption": ("cider_score", "lmms-lab/COCO-Caption2017", None, "val", True),
}


@pytest.mark.parametrize("name", BUILTIN_TASKS)
def test_builtin_tasks_declare_dataset_and_metric(name):
    task = get_task(name)
    assert isinstance(task, Task) and task.name == name
    spec = task.dataset
    assert (task.metric, spec.hub_id, spec.config, spec.split, spec.labeled) == EXPECTED[name]
    assert task.max_new_tokens > 0 and task.molmo_style


def test_aliases_and_case():
    assert get_task("coco-vqa") is get_task("vqav2")
    assert get_task("ST-VQA").name == "stvqa"
    assert get_task("coco-cap").name == "coco-caption"
    assert "coco-vqa" in registry.aliases_of("vqav2")
    assert set(BUILTIN_TASKS) <= set(registry.names())


def test_unknown_task_suggests_the_closest():
    with pytest.raises(HarnessError, match="unknown task 'tallyq'. Did you mean 'tallyqa'"):
        get_task("tallyq")


def test_module_attr_names_a_task_class():
    assert get_task("harness.tasks.docvqa:DocVQA").name == "docvqa"
    with pytest.raises(HarnessError, match="not a tasks.base.Task"):
        get_task("harness.tasks.base:majority")


PLUGIN = '''
from harness.types import Sample
from harness.tasks import register
from harness.tasks.base import DatasetSpec, VQATask


@register
class {cls}(VQATask):
    name = "{name}"
    aliases = ("{name}-alias",)
    molmo_style = "vqa2"
    dataset = DatasetSpec(hub_id="someone/{name}", config=None, split="val", labeled=True,
                          required_columns=("question", "qid"), label_columns=("answers",))

    def samples_from_row(self, row, index):
        return [Sample(id=str(row["qid"]), task=self.name, question=self._text(row, "question", index),
                       references=self._str_list(row, "answers", index))]
'''


def test_include_path_plugin_runs_end_to_end(tmp_path):
    from harness.tasks.data import load_samples

    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "my_task.py").write_text(PLUGIN.format(cls="IncludedTask", name="included-demo"))
    include_path(folder)
    task = get_task("included-demo-alias")
    assert task.name == "included-demo" and task.dataset.hub_id == "someone/included-demo"
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"qid": 1, "question": "what?", "answers": ["x"] * 10}) + "\n")
    loaded = load_samples(task, data)
    assert [s.id for s in loaded.samples] == ["1"] and loaded.labeled
    assert task.prompt(loaded.samples[0], "molmo") == "vqa2: what?"


def test_include_path_errors(tmp_path):
    with pytest.raises(HarnessError, match="is not a directory"):
        include_path(tmp_path / "missing")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.py").write_text("raise RuntimeError('boom')\n")
    with pytest.raises(HarnessError, match="cannot import plugin file .*broken.py.*boom"):
        include_path(bad)


def test_entry_point_of_an_installed_package(tmp_path, monkeypatch):
    """A throwaway distribution (package + dist-info with entry_points.txt) on sys.path."""
    site = tmp_path / "site"
    pkg = site / "demo_task_pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(PLUGIN.replace("@register\n", "").format(cls="EntryPointTask", name="ep-demo"))
    dist = site / "demo_task_pkg-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: demo-task-pkg\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[harness.tasks]\nep-demo = demo_task_pkg:EntryPointTask\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    try:
        task = get_task("ep-demo")
        assert task.name == "ep-demo" and type(task).__module__ == "demo_task_pkg"
        rows = _cli(["tasks", "--json"])
        assert "ep-demo" in {r["task"] for r in rows}
    finally:  # leave the shared registry as other tests expect it
        registry._items.pop("ep-demo", None)
        sys.modules.pop("demo_task_pkg", None)


def _cli(args):
    from harness.cli import cli

    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.output) if "--json" in args else result.output


def test_tasks_command_table_and_json(tmp_path):
    out = _cli(["tasks"])
    for name in BUILTIN_TASKS:
        assert name in out
    assert "synthetic" in out and "SYNTHETIC" in out and "unlabeled" in out
    rows = {r["task"]: r for r in _cli(["tasks", "--json"])}
    assert rows["tallyqa"]["bundled_samples"] == 120 and rows["tallyqa"]["bundled_synthetic"] is True
    assert rows["stvqa"]["labeled"] is False and rows["vqav2"]["aliases"] == ["coco-vqa"]
    # ST-VQA's hub split has no public labels, but its bundled samples do and a bundled run is scored:
    # the listing says which source is scored instead of calling the task "not scored"
    assert rows["stvqa"]["bundled_labeled"] is True
    (line,) = [ln for ln in out.splitlines() if ln.startswith("│ stvqa")]
    assert "unlabeled on the hub: not scored" in line and "100 synthetic, scored" in line
    assert rows["scienceqa"]["sources"] == ["hub", "path", "bundled"]
    folder = tmp_path / "more"
    folder.mkdir()
    (folder / "t.py").write_text(PLUGIN.format(cls="CliTask", name="cli-demo"))
    rows = {r["task"]: r for r in _cli(["tasks", "--include-path", str(folder), "--json"])}
    assert rows["cli-demo"]["sources"] == ["hub", "path"] and rows["cli-demo"]["bundled_samples"] is None


def test_tasks_command_bad_include_path_exits_2(tmp_path, capsys):
    from harness.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["tasks", "--include-path", str(tmp_path / "nope")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --include-path") and err.count("\n") == 1
