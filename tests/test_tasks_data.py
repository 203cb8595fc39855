"""Data sources: bundled, local files (parquet / JSON lines / save_to_disk), in-memory datasets, the
hub (mocked: no network in tests), subsets, fingerprints, unlabeled splits and bad input."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harness.errors import HarnessError
from harness.tasks import BUILTIN_TASKS, get_task
from harness.tasks.data import load_samples, subset_indices
from harness.tasks.images import decode_image

FIX = Path(__file__).parent / "data" / "tasks"
SQA = FIX / "scienceqa-test-img-167.parquet"


def sample_key(s):
    return (s.id, s.task, s.question, s.context, s.choices, s.answer, s.references, s.image_id, s.group, s.error,
            None if s.image is None else (s.image.size, s.image.tobytes()))


def png_b64(color=(200, 10, 10)) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 6), color).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# -- bundled ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", BUILTIN_TASKS)
def test_bundled_samples_are_labelled_synthetic_and_complete(name):
    d = load_samples(name, "bundled")
    assert d.synthetic is True
    assert d.source == f"bundled-synthetic:tasks/samples/{name}.parquet"
    assert d.subset == {"limit": None, "seed": 0, "n_total": len(d.samples), "n": len(d.samples)}
    assert len(d.samples) >= 60
    assert d.labeled is True and get_task(name).can_score(d.samples)
    assert all(s.error is None and s.image.size == (192, 192) and s.image.mode == "RGB" for s in d.samples)
    assert len({s.id for s in d.samples}) == len(d.samples)
    assert d.to_dict()["synthetic"] is True and "samples" not in d.to_dict()


def test_bundled_rejects_other_splits():
    with pytest.raises(HarnessError, match="one synthetic evaluation split") as err:
        load_samples("vqav2", "bundled", split="test")
    assert "--split" not in str(err.value)  # no such flag


# -- subsets and fingerprints ---------------------------------------------------------------------
def test_limit_is_nested_seeded_and_recorded():
    small = load_samples("vqav2", limit=20, seed=3)
    big = load_samples("vqav2", limit=50, seed=3)
    ids_small, ids_big = [s.id for s in small.samples], [s.id for s in big.samples]
    assert set(ids_small) < set(ids_big)
    assert small.subset == {"limit": 20, "seed": 3, "n_total": 100, "n": 20}
    again = load_samples("vqav2", limit=20, seed=3)
    assert [s.id for s in again.samples] == ids_small and again.fingerprint == small.fingerprint
    other = load_samples("vqav2", limit=20, seed=4)
    assert other.fingerprint != small.fingerprint
    full = load_samples("vqav2")
    assert full.fingerprint not in (small.fingerprint, big.fingerprint)
    # dataset order is kept inside a subset
    order = [s.id for s in full.samples]
    assert ids_big == sorted(ids_big, key=order.index)
    assert load_samples("vqav2", limit=1000).subset["n"] == 100


def test_subset_indices_properties():
    for seed in range(5):
        a, b = subset_indices(40, 10, seed), subset_indices(40, 25, seed)
        assert set(a) <= set(b) and len(set(b)) == 25 and a == sorted(a)
    assert subset_indices(5, None, 0) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("limit", [0, -3, 2.5, True])
def test_bad_limit(limit):
    with pytest.raises(HarnessError, match="--limit must be a positive integer"):
        load_samples("vqav2", limit=limit)


def test_fingerprint_depends_on_labels(tmp_path):
    rows = [{"question_id": "1", "image": {"bytes": png_b64()}, "question": "q?", "answers": ["a"] * 10}]
    fp1 = load_samples("okvqa", write_jsonl(tmp_path / "a.jsonl", rows)).fingerprint
    rows[0]["answers"] = ["b"] * 10
    fp2 = load_samples("okvqa", write_jsonl(tmp_path / "b.jsonl", rows)).fingerprint
    assert fp1 != fp2 and len(fp1) == 64


# -- same items through every local format --------------------------------------------------------
def _sqa_rows(n=12):
    return pq.read_table(SQA).slice(0, n).to_pylist()


def test_parquet_jsonl_memory_and_saved_dir_give_identical_samples(tmp_path):
    import datasets

    rows = _sqa_rows()
    table = pq.read_table(SQA).slice(0, len(rows))
    pq.write_table(table, tmp_path / "sqa.parquet")
    (tmp_path / "img").mkdir()
    jrows = []
    for k, row in enumerate(rows):
        (tmp_path / "img" / f"{k}.png").write_bytes(row["image"]["bytes"])
        jrows.append({**row, "image": f"img/{k}.png"})  # path relative to the JSONL file
    write_jsonl(tmp_path / "sqa.jsonl", jrows)
    ds = datasets.Dataset(table)  # features come from the parquet's huggingface metadata
    assert isinstance(ds.features["image"], datasets.Image)
    ds.save_to_disk(str(tmp_path / "saved"))

    loaded = [load_samples("scienceqa", tmp_path / "sqa.parquet"), load_samples("scienceqa", str(tmp_path / "sqa.jsonl")),
              load_samples("scienceqa", ds), load_samples("scienceqa", str(tmp_path / "saved"))]
    keys = [[sample_key(s) for s in d.samples] for d in loaded]
    assert all(k == keys[0] for k in keys[1:])
    assert len({d.fingerprint for d in loaded}) == 1
    assert loaded[2].source == "memory:datasets.Dataset" and loaded[0].source.startswith("path:")
    # and a subset picks the same items from each
    assert len({tuple(s.id for s in load_samples("scienceqa", src, limit=5, seed=1).samples)
                for src in (tmp_path / "sqa.parquet", ds, str(tmp_path / "sqa.jsonl"))}) == 1


def test_nested_tallyqa_rows_in_every_format(tmp_path):
    import datasets

    table = pq.read_table(FIX / "tallyqa_test.parquet")
    rows = table.to_pylist()
    write_jsonl(tmp_path / "t.jsonl", [{**r, "image": {"bytes": base64.b64encode(r["image"]["bytes"]).decode(), "path": None}} for r in rows])
    a = load_samples("tallyqa", FIX / "tallyqa_test.parquet")
    b = load_samples("tallyqa", tmp_path / "t.jsonl")
    c = load_samples("tallyqa", datasets.Dataset(table))
    assert [sample_key(s) for s in a.samples] == [sample_key(s) for s in b.samples] == [sample_key(s) for s in c.samples]
    assert [(s.id, s.group, s.references) for s in a.samples] == [("0-0", "simple", ["2"]), ("0-1", "complex", ["1"]), ("1-0", "simple", ["0"])]
    # the two questions of one image share the decoded picture
    assert a.samples[0].image is a.samples[1].image


def test_saved_datasetdict_picks_the_split(tmp_path):
    import datasets

    ds = datasets.Dataset(pq.read_table(FIX / "docvqa_validation.parquet"))
    datasets.DatasetDict({"validation": ds, "test": datasets.Dataset(pq.read_table(FIX / "docvqa_test.parquet"))}).save_to_disk(str(tmp_path / "dd"))
    assert load_samples("docvqa", str(tmp_path / "dd")).labeled is True
    assert load_samples("docvqa", str(tmp_path / "dd"), split="test").labeled is False
    with pytest.raises(HarnessError, match="holds splits validation, test but not the task's split 'train'") as err:
        load_samples("docvqa", str(tmp_path / "dd"), split="train")
    # the fix it names exists on the command line (there is no --split flag) and works
    assert "--split" not in str(err.value) and f"--data {tmp_path / 'dd' / 'validation'}" in str(err.value)
    assert load_samples("docvqa", str(tmp_path / "dd" / "validation")).labeled is True


def test_hub_snapshot_folder_of_parquet_shards(tmp_path):
    """A `huggingface-cli download` copy: <config>/<split>-0000k-of-0000n.parquet."""
    table = pq.read_table(SQA)
    cfg = tmp_path / "snap" / "ScienceQA-IMG"
    cfg.mkdir(parents=True)
    pq.write_table(table.slice(0, 100), cfg / "test-00000-of-00002.parquet")
    pq.write_table(table.slice(100), cfg / "test-00001-of-00002.parquet")
    pq.write_table(table.slice(0, 5), cfg / "validation-00000-of-00001.parquet")
    other = tmp_path / "snap" / "ScienceQA-FULL"
    other.mkdir()
    pq.write_table(table.slice(0, 7), other / "test-00000-of-00001.parquet")
    d = load_samples("scienceqa", tmp_path / "snap")
    assert len(d.samples) == 167 and d.fingerprint == load_samples("scienceqa", SQA).fingerprint
    assert len(load_samples("scienceqa", tmp_path / "snap", split="validation").samples) == 5
    with pytest.raises(HarnessError, match="no parquet shards for the task's split 'train' \\(found: test, validation\\)") as err:
        load_samples("scienceqa", tmp_path / "snap", split="train")
    assert "--split" not in str(err.value)
    suggested = str(err.value).split("--data ")[1]
    assert len(load_samples("scienceqa", suggested).samples) == 100
    (tmp_path / "empty").mkdir()
    with pytest.raises(HarnessError, match="neither a save_to_disk dataset nor holds parquet files"):
        load_samples("scienceqa", tmp_path / "empty")


# -- real schemas, labeled and unlabeled ----------------------------------------------------------
@pytest.mark.parametrize(
    "task,file,labeled,first_id,first_refs",
    [
        ("textvqa", "textvqa_validation.parquet", True, "3", ["simon clancy"] * 8 + ["simon ciancy", "the brand is bayard"]),
        ("textvqa", "textvqa_test.parquet", False, "34603", None),
        ("okvqa", "okvqa_val2014.parquet", True, "2971475", ["race"] * 6 + ["motocross"] * 2 + ["ride"] * 2),
        ("vqav2", "vqav2_validation.jsonl", True, "262148000", ["down"] * 7 + ["at table", "skateboard", "table"]),
        ("vqav2", "vqav2_testdev.parquet", False, "1000", None),
        ("stvqa", "stvqa_test.parquet", False, "21", None),
        ("docvqa", "docvqa_validation.parquet", True, "49153", ["0.28"]),
        ("docvqa", "docvqa_test.parquet", False, "57344", None),
        ("coco-caption", "coco_caption_val.parquet", True, "000000397133.jpg", None),
        ("coco-caption", "coco_caption_test.parquet", False, "000000000001.jpg", None),
        ("tallyqa", "tallyqa_test.parquet", True, "0-0", ["2"]),
        ("scienceqa", "scienceqa-test-img-167.parquet", True, "0", ["how steady a parachute with a 1 m vent was at 200 km per hour"]),
    ],
)
def test_real_schema_fixtures(task, file, labeled, first_id, first_refs):
    d = load_samples(task, FIX / file)
    t = get_task(task)
    assert d.labeled is labeled and t.can_score(d.samples) is labeled
    assert d.synthetic is False and d.source == f"path:{FIX / file}"
    s = d.samples[0]
    assert s.id == first_id and s.error is None and s.image is not None
    if labeled and first_refs is not None:
        assert s.references == first_refs
    if not labeled:
        assert all(x.references is None and x.answer is None for x in d.samples)
        with pytest.raises(HarnessError):
            t.target(s)
    for x in d.samples:  # every sample renders in every style
        for style in t.styles:
            assert x.question in t.prompt(x, style) or task == "textvqa"


def test_scienceqa_real_rows():
    d = load_samples("scienceqa", SQA)
    assert len(d.samples) == 167
    t = get_task("scienceqa")
    five = [s for s in d.samples if len(s.choices) == 5]
    assert five and all(t.prompt(s).count("\n") >= 6 for s in five)
    with_hint = next(s for s in d.samples if s.context)
    assert t.prompt(with_hint).startswith(f"Context: {with_hint.context}\n{with_hint.question}\nA. ")
    assert all(0 <= s.answer < len(s.choices) and s.references == [s.choices[s.answer]] for s in d.samples)
    assert {"A", "B", "C", "D", "E"} >= {t.target(s) for s in d.samples}


# -- the hub (no network in tests: reachability and load_dataset are replaced) ------------------
def test_hub_unreachable_names_the_alternatives(monkeypatch):
    import harness.tasks.data as data

    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(data, "_hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(HarnessError) as err:
        load_samples("scienceqa", "hub")
    msg = str(err.value)
    assert "cannot be reached" in msg and "lmms-lab/ScienceQA/ScienceQA-IMG" in msg
    assert "--data PATH" in msg and "--data bundled" in msg and "\n" not in msg


def test_hub_offline_without_cache(monkeypatch):
    import datasets

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")

    def boom(*a, **k):
        raise ConnectionError("Couldn't reach 'lmms-lab/VQAv2' on the Hub (offline mode is enabled)")

    monkeypatch.setattr(datasets, "load_dataset", boom)
    with pytest.raises(HarnessError, match=r"offline mode is set.*--data PATH.*--data bundled"):
        load_samples("vqav2", "hub")


def test_hub_uses_the_real_id_and_refuses_to_score_unlabeled_splits(monkeypatch):
    import datasets

    calls = []
    table = {"docvqa": pq.read_table(FIX / "docvqa_validation.parquet"), "stvqa": pq.read_table(FIX / "docvqa_validation.parquet")}

    def fake_load(hub_id, config=None, split=None):
        calls.append((hub_id, config, split))
        return datasets.Dataset(table["docvqa"] if hub_id.endswith("DocVQA") else _with_answers_stvqa())

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")  # skips the reachability probe
    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    d = load_samples("docvqa", "hub", limit=1)
    assert calls[-1] == ("lmms-lab/DocVQA", "DocVQA", "validation")
    assert d.source == "hub:lmms-lab/DocVQA/DocVQA/validation" and d.labeled and not d.synthetic
    # ST-VQA's hub split is submission-only: even if a copy carries answers, they are not used
    st = load_samples("stvqa", "hub")
    assert calls[-1] == ("lmms-lab/ST-VQA", None, "test")
    assert st.labeled is False and all(s.references is None for s in st.samples)
    with pytest.raises(HarnessError, match="no split 'train'.*known splits: test"):
        load_samples("stvqa", "hub", split="train")


def _with_answers_stvqa():
    return pa.table({"question_id": [1, 2], "question": ["What is written?", "Which word?"],
                     "image": [None, None], "answers": [["stop"], ["exit"]]})


# -- bad input --------------------------------------------------------------------------------------
def test_missing_required_column_names_column_and_file(tmp_path):
    path = tmp_path / "no_question.parquet"
    pq.write_table(pq.read_table(SQA).slice(0, 2).drop_columns(["question"]), path)
    with pytest.raises(HarnessError) as err:
        load_samples("scienceqa", path)
    assert "'question'" in str(err.value) and str(path) in str(err.value)


def test_corrupt_and_missing_images_fail_only_their_sample(tmp_path):
    rows = [
        {"question_id": "1", "image": {"bytes": png_b64()}, "question": "q1?", "answers": ["a"] * 10},
        {"question_id": "2", "image": {"bytes": base64.b64encode(b"\x89PNG\r\n\x1a\nnot really").decode()}, "question": "q2?", "answers": ["a"] * 10},
        {"question_id": "3", "image": None, "question": "q3?", "answers": ["a"] * 10},
        {"question_id": "4", "image": "does/not/exist.png", "question": "q4?", "answers": ["a"] * 10},
    ]
    d = load_samples("okvqa", write_jsonl(tmp_path / "bad.jsonl", rows))
    errs = [s.error for s in d.samples]
    assert errs[0] is None and d.samples[0].image.size == (8, 6)
    assert errs[1].startswith("unreadable image") and errs[2] == "missing image" and errs[3].startswith("unreadable image")
    assert all(s.image is None for s in d.samples[1:])
    assert d.labeled is True  # failed samples do not make the set unscorable


def test_large_sets_open_images_lazily(monkeypatch):
    import harness.tasks.data as data

    monkeypatch.setattr(data, "EAGER_DECODE_MAX", 10)
    d = load_samples("scienceqa", SQA, limit=40)
    img = d.samples[0].image
    assert img.size == (448, 336) and img.fp is not None  # header parsed, pixels not decoded yet
    assert img.convert("RGB").getpixel((0, 0)) is not None
    eager = load_samples("scienceqa", SQA, limit=10).samples[0].image
    assert eager.mode == "RGB" and getattr(eager, "fp", None) is None


def test_decode_image_never_raises():
    assert decode_image(b"garbage")[0] is None
    # the message is the same in every run: no memory address of an in-memory file object
    assert decode_image(b"garbage")[1] == "unreadable image: UnidentifiedImageError: not an image format Pillow can read"
    assert " at 0x" not in decode_image({"bytes": b"\x89PNG\r\n\x1a\nshort"})[1]
    assert decode_image(12)[1].startswith("unreadable image: unsupported")
    img, err = decode_image("data:image/png;base64," + png_b64())
    assert err is None and img.size == (8, 6)


@pytest.mark.parametrize(
    "task,row,match",
    [
        ("okvqa", {"question_id": "1", "question": "   ", "answers": ["a"]}, r"row 0: empty 'question'"),
        ("okvqa", {"question_id": "1", "question": 5, "answers": ["a"]}, r"'question'.*must be a string, got int"),
        ("okvqa", {"question_id": "1", "question": "q", "answers": "a"}, r"'answers'.*must be a list of strings"),
        ("scienceqa", {"question": "q", "choices": ["x", "y"], "answer": "1"}, r"'answer'.*must be an int index"),
        ("scienceqa", {"question": "q", "choices": ["x", "y"], "answer": 2}, r"answer index 2 is outside"),
        ("scienceqa", {"question": "q", "choices": "x, y", "answer": 0}, r"'choices'.*list of strings"),
        ("scienceqa", {"question": "q", "choices": ["x"], "answer": 0}, r"2 to 7 choices"),
        ("tallyqa", {"qa": [{"question": "How many?", "answer": "two", "is_simple": True}]}, r"integer count"),
        ("tallyqa", {"qa": []}, r"'qa'.*non-empty list"),
    ],
)
def test_bad_rows_are_one_line_errors_naming_the_file(tmp_path, task, row, match):
    path = write_jsonl(tmp_path / "bad.jsonl", [{**row, "image": {"bytes": png_b64()}}])
    with pytest.raises(HarnessError, match=match) as err:
        load_samples(task, path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_duplicate_ids_and_empty_files(tmp_path):
    row = {"question_id": "1", "image": {"bytes": png_b64()}, "question": "q?", "answers": ["a"]}
    with pytest.raises(HarnessError, match="'1' occurs more than once"):
        load_samples("okvqa", write_jsonl(tmp_path / "dup.jsonl", [row, row]))
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(HarnessError, match="is empty"):
        load_samples("okvqa", tmp_path / "empty.jsonl")


def test_bad_data_arguments(tmp_path):
    with pytest.raises(HarnessError, match="not 'hub', 'bundled', an existing file or a folder"):
        load_samples("okvqa", tmp_path / "nope.parquet")
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(HarnessError, match="unknown file type '.csv'"):
        load_samples("okvqa", tmp_path / "x.csv")
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 nonsense")
    with pytest.raises(HarnessError, match="cannot read parquet file"):
        load_samples("okvqa", tmp_path / "broken.parquet")
    with pytest.raises(HarnessError, match="unknown task 'okvq'. Did you mean 'okvqa'"):
        load_samples("okvq")
    with pytest.raises(HarnessError, match="data must be"):
        load_samples("okvqa", 42)
