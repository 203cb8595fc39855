"""Run records: resume after a kill (half-written line), refusal of a different configuration,
unwritable output folders, atomic summaries."""

from __future__ import annotations

import json
import os

import pytest

from fixtures.fakes import FakeBackend, fake_data
from harness.errors import HarnessError
from harness.records import RunRecord, check_writable


def _strip(summary):
    drop = {"created", "timing"}
    return {k: v for k, v in summary.items() if k not in drop}


def _comparable(lines):
    keep = ("id", "config", "prediction", "scores", "error", "output_tokens", "estimated")
    return sorted(({k: ln[k] for k in keep} for ln in lines), key=lambda x: x["id"])


def test_resume_after_kill_with_half_written_line(run_fake, tmp_path):
    full_summary, full_lines, _ = run_fake(out=tmp_path / "full", data=fake_data(12, raise_at=4))
    # simulate a run killed mid-write: 5 complete lines, then half of the 6th, no summary
    run_dir = tmp_path / "killed"
    run_fake(out=run_dir, data=fake_data(12, raise_at=4))
    text = (run_dir / "samples.jsonl").read_text().splitlines(keepends=True)
    (run_dir / "samples.jsonl").write_text("".join(text[:5]) + text[5][: len(text[5]) // 2])
    os.unlink(run_dir / "summary.json")
    backend = FakeBackend()
    summary, lines, _ = run_fake(out=run_dir, data=fake_data(12, raise_at=4), backend=backend)
    # only the 7 unfinished samples (the half line included) ran again
    done_ids = {json.loads(t)["id"] for t in text[:5]}
    # every unfinished sample except s004 (which fails)
    assert sum(n for _, n in backend.batches) == len([i for i in range(12) if f"s{i:03d}" not in done_ids and i != 4])
    raw = (run_dir / "samples.jsonl").read_text().splitlines()
    assert len(raw) == 12 and all(json.loads(x) for x in raw)
    assert _comparable(lines) == _comparable(full_lines)
    assert _strip(summary)["score"] == full_summary["score"]
    a, b = _strip(summary), _strip(full_summary)
    for key in ("score", "scores", "score_ci95", "n", "n_failed", "knobs_histogram", "groups"):
        assert a[key] == b[key], key


def test_rerun_of_finished_run_recomputes_nothing(run_fake, tmp_path):
    first, _, _ = run_fake(out=tmp_path / "r")
    backend = FakeBackend()
    second, _, _ = run_fake(out=tmp_path / "r", backend=backend)
    assert backend.batches == []
    assert second["score"] == first["score"] and second["n"] == 12


def test_different_configuration_is_refused(run_fake, tmp_path):
    run_fake(out=tmp_path / "r", knobs="8,4")
    before = (tmp_path / "r" / "samples.jsonl").read_bytes()
    with pytest.raises(HarnessError) as err:
        run_fake(out=tmp_path / "r", knobs="6,2")
    msg = str(err.value)
    assert "different configuration" in msg and "8,4,medium" in msg and "6,2,medium" in msg and "\n" not in msg
    assert (tmp_path / "r" / "samples.jsonl").read_bytes() == before


def test_batch_size_change_is_refused(run_fake, tmp_path):
    run_fake(out=tmp_path / "r")
    with pytest.raises(HarnessError, match="batch_size"):
        run_fake(out=tmp_path / "r", batch_size=4)


def test_samples_without_run_file_refused(tmp_path):
    (tmp_path / "samples.jsonl").write_text('{"id": "x"}\n')
    with pytest.raises(HarnessError, match="run.json"):
        RunRecord.open(tmp_path, {"task": "t"})


def test_corrupt_middle_line_is_an_error(tmp_path):
    rec = RunRecord.open(tmp_path, {"task": "t"})
    rec.append({"id": "a"})
    rec.close()
    with open(tmp_path / "samples.jsonl", "a") as fh:
        fh.write("{not json\n")
        fh.write('{"id": "b"}\n')
    with pytest.raises(HarnessError, match=r"samples.jsonl:2"):
        RunRecord.open(tmp_path, {"task": "t"})


def test_garbage_last_line_is_redone(tmp_path):
    rec = RunRecord.open(tmp_path, {"task": "t"})
    rec.append({"id": "a"})
    rec.close()
    with open(tmp_path / "samples.jsonl", "a") as fh:
        fh.write('{"id": "b", "predic\n')
    rec = RunRecord.open(tmp_path, {"task": "t"})
    assert list(rec.finished) == ["a"]
    assert (tmp_path / "samples.jsonl").read_text() == '{"id": "a"}\n'


def test_unwritable_output_dir(tmp_path, monkeypatch):
    """An existing folder where no file can be created (permissions, read-only mount): refused up
    front. Simulated at the file-creation call so that it fails for every user, root included
    (root ignores permission bits, and CI runs as root)."""
    import tempfile

    ro = tmp_path / "ro"
    ro.mkdir()

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    with pytest.raises(HarnessError, match=r"'.*ro' is not writable \(Permission denied\)"):
        check_writable(ro)
    assert list(ro.iterdir()) == []


@pytest.mark.parametrize("where", ["/proc/harness-test-unwritable/run", "/sys/harness-test-unwritable"])
def test_output_dir_in_a_kernel_filesystem_is_not_writable(where):
    """Real paths nobody can create folders in, whatever the user."""
    mount = "/" + where.split("/")[1]
    if not os.path.isdir(mount):
        pytest.skip(f"no {mount} on this system")
    with pytest.raises(HarnessError, match="not writable"):
        check_writable(where)


def test_output_dir_below_a_file_is_not_writable(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(HarnessError, match="not writable"):
        check_writable(f / "sub")


def test_output_path_that_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(HarnessError, match="not a directory"):
        check_writable(f)
