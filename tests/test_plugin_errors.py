"""Broken plugin modules and misspelled names on the command line: one line, exit 2, the module
and the first line of its error (no traceback); `--include-path DIR --policy file:Class`; the
model did-you-mean."""

from __future__ import annotations

import json
import textwrap

import pytest

BROKEN = {
    "syntax": ("def f(:\n    pass\n", "SyntaxError"),
    "raises": ("import os\nraise RuntimeError('boom at import\\nsecond line of the message')\n", "RuntimeError: boom at import"),
    "needs_missing_dep": ("import no_such_dependency_xyz\n", "No module named 'no_such_dependency_xyz'"),
}


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    folder = tmp_path / "plugins"
    folder.mkdir()
    for name, (source, _) in BROKEN.items():
        (folder / f"broken_{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(folder))
    return folder


@pytest.mark.parametrize("kind", sorted(BROKEN))
@pytest.mark.parametrize("where", ["estimator", "policy", "metric"])
def test_broken_plugin_module_is_one_line(harness_cli, plugins, capsys, tmp_path, kind, where):
    spec = f"broken_{kind}:Thing"
    if where == "metric":
        preds = tmp_path / "p.jsonl"
        preds.write_text(json.dumps({"id": 1, "prediction": "a", "references": ["a"]}) + "\n")
        code = harness_cli("score", "--metric", spec, preds)
    elif where == "policy":
        code = harness_cli("run", "--task", "scienceqa", "--limit", "2", "--policy", spec, "-o", tmp_path / "o")
    else:
        code = harness_cli("run", "--task", "scienceqa", "--limit", "2", "--knobs", "6,2", "--estimator", spec,
                           "-o", tmp_path / "o")
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert f"broken_{kind}" in err and BROKEN[kind][1] in err
    assert "Traceback" not in err and "second line" not in err
    assert not (tmp_path / "o").exists()


def test_syntax_error_names_file_and_line(plugins):
    from harness.errors import HarnessError
    from harness.registry import import_attr

    with pytest.raises(HarnessError, match=r"broken_syntax\.py:1: SyntaxError"):
        import_attr("broken_syntax:f")


def test_include_path_file_attr_resolves_a_plain_class(harness_cli, capsys, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "mypolicy.py").write_text(textwrap.dedent("""
        from harness.knobs import Knobs
        from harness.policies import Policy

        class Smallest(Policy):  # no decorator: named as file:Class
            def choose(self, inputs):
                return [Knobs(6, 2, None) for _ in inputs]
    """))
    for spec in ("mypolicy:Smallest", f"{folder / 'mypolicy.py'}:Smallest"):
        out = tmp_path / f"o{len(spec)}"
        code = harness_cli("run", "--task", "scienceqa", "--limit", "3", "--include-path", folder, "--policy", spec,
                           "--estimator", "none", "-o", out, "--json", "-q")
        captured = capsys.readouterr()
        assert code == 0, captured.err
        lines = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
        assert {x["knobs"]["num_blocks"] for x in lines} == {6}


def test_model_typo_gets_did_you_mean(capsys):
    from harness.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["run", "--task", "scienceqa", "--model", "refrence", "--knobs", "14,6"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "Did you mean 'reference'?" in err and err.count("\n") == 1


def test_did_you_mean_helper():
    from harness.suggest import did_you_mean

    assert did_you_mean("refrence", ["reference", "random:molmoe-1b"]) == " Did you mean 'reference'?"
    assert did_you_mean("SCIENCEQA", ["scienceqa"]) == " Did you mean 'scienceqa'?"
    assert did_you_mean("zzz", ["reference"]) == ""
