"""Load a task's samples from the hub, a local copy, or the bundled synthetic files.

``load_samples(task, data, limit, seed, split)`` -> :class:`LoadedData`.

``data``:
- ``"bundled"``: ``tasks/samples/<task>.parquet``, SYNTHETIC rows made by :mod:`tasks.synthetic`
  in the hub schema (``LoadedData.synthetic`` is True and ``source`` says so);
- ``"hub"``: ``datasets.load_dataset(hub_id, config, split=...)`` with the task's real id; honours
  ``HF_DATASETS_OFFLINE`` / ``HF_HUB_OFFLINE`` (then only the local cache is used);
- a path: a parquet file, a JSON lines file (images as a path relative to the file, a
  ``{"bytes": base64, "path": ...}`` object, or a ``data:`` URI), a ``save_to_disk`` folder, or a
  downloaded hub snapshot folder of parquet shards (``[<config>/]<split>-*.parquet``), all in the
  hub schema;
- a ``datasets.Dataset`` object (in memory).

Rows become samples without decoding images; ``limit`` then picks the first N of one fixed
permutation (``numpy.random.default_rng(seed)``), kept in dataset order, so ``limit=100``
contains ``limit=50``; only the chosen samples' images are decoded: fully (RGB) for up to
``EAGER_DECODE_MAX`` samples, else opened lazily (header parsed, pixels decoded on first use, so a
5k-image DocVQA run does not hold 60 GB of pixels). An unreadable image sets ``Sample.error``
(the run goes on); a missing required column or a malformed row is a
:class:`~harness.errors.HarnessError` naming the column and the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from harness.errors import HarnessError
from harness.types import Sample
from harness.tasks.base import Task
from harness.tasks.images import EAGER_DECODE_MAX, ImageRef, decode_image

PACKAGE_DIR = Path(__file__).resolve().parent
SAMPLES_DIR = PACKAGE_DIR / "samples"
SYNTHETIC_KEY = b"harness_synthetic"  # parquet schema metadata key set on generated files


@dataclass
class LoadedData:
    samples: list[Sample]
    source: str  # e.g. "bundled-synthetic:tasks/samples/scienceqa.parquet", "hub:lmms-lab/ScienceQA/ScienceQA-IMG/test"
    synthetic: bool
    fingerprint: str  # sha256 over the evaluated items (ids, questions, choices, answers, references), in order
    subset: dict  # {"limit", "seed", "n_total", "n"}
    labeled: bool  # every loaded sample has labels: the run may score
    split: str | None = None
    task: str = ""

    def to_dict(self) -> dict:
        """The ``data`` block for run records (everything but the samples)."""
        return {
            "task": self.task,
            "source": self.source,
            "synthetic": self.synthetic,
            "split": self.split,
            "labeled": self.labeled,
            "fingerprint": self.fingerprint,
            "subset": dict(self.subset),
        }


# -- tables: rows without images, images on demand --------------------------------------------
class _Table:
    where: str  # for messages
    base_dir: Path | None = None
    columns: list[str]

    def __len__(self) -> int:
        raise NotImplementedError

    def rows(self, skip: tuple[str, ...]) -> list[dict]:
        raise NotImplementedError

    def image(self, index: int, column: str = "image"):
        raise NotImplementedError


class _ArrowTable(_Table):
    def __init__(self, table, where: str, base_dir: Path | None = None, image_column: str = "image"):
        self.table, self.where, self.base_dir, self.image_column = table, where, base_dir, image_column
        self.columns = list(table.column_names)

    def __len__(self):
        return self.table.num_rows

    def rows(self, skip):
        return self.table.drop_columns([c for c in skip if c in self.columns]).to_pylist()

    def image(self, index, column=None):
        return self.table.column(column or self.image_column)[index].as_py()


class _ListTable(_Table):
    def __init__(self, rows: list[dict], where: str, base_dir: Path | None = None, image_column: str = "image"):
        self._rows, self.where, self.base_dir, self.image_column = rows, where, base_dir, image_column
        seen: dict[str, None] = {}
        for r in rows:
            seen.update(dict.fromkeys(r))
        self.columns = list(seen)

    def __len__(self):
        return len(self._rows)

    def rows(self, skip):
        return [{k: v for k, v in r.items() if k not in skip} for r in self._rows]

    def image(self, index, column=None):
        return self._rows[index].get(column or self.image_column)


def _dataset_table(ds, where: str, image_column: str) -> _Table:
    """A ``datasets.Dataset`` -> arrow table (images stay encoded)."""
    if getattr(ds, "_indices", None) is not None:
        ds = ds.flatten_indices()
    return _ArrowTable(ds.data.table, where, image_column=image_column)


# -- sources -------------------------------------------------------------------------------------
def _read_parquet(path: Path, image_column: str) -> tuple[_Table, bool]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:
        raise HarnessError(f"cannot read parquet file '{path}': {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}; check the file")
    meta = table.schema.metadata or {}
    return _ArrowTable(table, str(path), base_dir=path.parent, image_column=image_column), SYNTHETIC_KEY in meta


def _read_jsonl(path: Path, image_column: str) -> _Table:
    from harness.jsonio import iter_jsonl

    return _ListTable([obj for _, obj in iter_jsonl(path)], str(path), base_dir=path.parent, image_column=image_column)


def _read_saved(path: Path, split: str, image_column: str) -> _Table:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as exc:
        raise HarnessError(f"cannot read saved dataset folder '{path}': {type(exc).__name__}: {exc}; pass a folder written by Dataset.save_to_disk")
    if isinstance(ds, datasets.DatasetDict):
        if split in ds:
            ds = ds[split]
        elif len(ds) == 1:
            ds = next(iter(ds.values()))
        else:
            raise HarnessError(f"'{path}' holds splits {', '.join(ds)} but not the task's split '{split}'; "
                               f"pass one split's folder, e.g. --data {path / next(iter(ds))}")
    return _dataset_table(ds, str(path), image_column)


SAVED_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


def _read_folder(path: Path, task: Task, split: str) -> tuple[_Table, bool]:
    """A ``save_to_disk`` folder, or a downloaded hub snapshot of parquet shards
    (``[<config>/]<split>-00000-of-0000N.parquet``, ``data/<split>-*.parquet``)."""
    if any((path / m).is_file() for m in SAVED_MARKERS):
        return _read_saved(path, split, task.image_column), False
    shards = sorted(p for p in path.rglob("*.parquet") if p.is_file())
    if not shards:
        raise HarnessError(f"folder '{path}' is neither a save_to_disk dataset nor holds parquet files; pass a dataset folder or file")
    config = task.dataset.config
    if config and any(config in p.relative_to(path).parts for p in shards):
        shards = [p for p in shards if config in p.relative_to(path).parts]
    chosen = [p for p in shards if p.name.split("-")[0].split(".")[0] == split or p.parent.name == split]
    if not chosen:
        found = sorted({p.name.split("-")[0].split(".")[0] for p in shards})
        raise HarnessError(f"folder '{path}' has no parquet shards for the task's split '{split}' (found: {', '.join(found)}); "
                           f"pass the shard file itself, e.g. --data {shards[0]}")
    import pyarrow as pa

    tables, synthetic = [], True
    for p in chosen:
        t, syn = _read_parquet(p, task.image_column)
        tables.append(t.table)
        synthetic = synthetic and syn
    try:
        table = pa.concat_tables(tables, promote_options="default")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise HarnessError(f"parquet shards in '{path}' have different columns or types ({exc}); keep one split's shards together")
    return _ArrowTable(table, f"{path} ({len(chosen)} parquet shard{'s' if len(chosen) > 1 else ''} of split {split})", base_dir=path,
                       image_column=task.image_column), synthetic


def _hub_reachable(timeout: float = 3.0) -> bool:
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _offline() -> bool:
    return any(os.environ.get(v, "").strip().upper() in {"1", "ON", "YES", "TRUE"} for v in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"))


ALTERNATIVES = "use --data PATH (a local parquet, JSON lines or save_to_disk copy in the hub schema) or --data bundled (synthetic samples shipped with the harness)"


def _load_hub(task: Task, split: str) -> _Table:
    spec = task.dataset
    name = "/".join(p for p in (spec.hub_id, spec.config) if p)
    offline = _offline()
    if not offline and not _hub_reachable():
        raise HarnessError(f"the Hugging Face hub cannot be reached to load {name} split {split} (set HF_DATASETS_OFFLINE=1 to use a cached copy); {ALTERNATIVES}")
    import datasets

    try:
        ds = datasets.load_dataset(spec.hub_id, spec.config, split=split)
    except (ConnectionError, OSError, TimeoutError) as exc:
        why = "offline mode is set (HF_DATASETS_OFFLINE/HF_HUB_OFFLINE) and no cached copy was found" if offline else "the Hugging Face hub cannot be reached"
        raise HarnessError(f"cannot load {name} split {split}: {why} ({type(exc).__name__}); {ALTERNATIVES}")
    except ValueError as exc:
        raise HarnessError(f"cannot load {name} split {split}: {str(exc).splitlines()[0]}; known splits: {', '.join(_known_splits(task))}")
    except Exception as exc:
        raise HarnessError(f"cannot load {name} split {split} from the hub: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}; {ALTERNATIVES}")
    return _dataset_table(ds, f"hub:{name}/{split}", task.image_column)


def _known_splits(task: Task) -> list[str]:
    return list(dict.fromkeys([task.dataset.split, *task.dataset.splits]))


def bundled_file(task: Task) -> Path:
    return SAMPLES_DIR / f"{task.name}.parquet"


def bundled_info(task: Task) -> tuple[int, bool] | None:
    """(number of bundled synthetic samples, whether they carry labels, i.e. are scored) for a task,
    None if it ships none. Images are not decoded."""
    path = bundled_file(task)
    if not path.is_file():
        return None
    table, _ = _read_parquet(path, task.image_column)
    samples = _build_samples(task, table)
    return len(samples), task.can_score(samples)


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(PACKAGE_DIR.parent))
    except ValueError:
        return str(path)


# -- rows -> samples -----------------------------------------------------------------------------
def _check_columns(task: Task, table: _Table) -> None:
    for col in task.dataset.required_columns:
        if col not in table.columns:
            raise HarnessError(
                f"'{table.where}' has no column '{col}', which task {task.name} requires (columns found: {', '.join(table.columns) or 'none'}); "
                f"use a copy in the {task.dataset.hub_id} schema"
            )


def _build_samples(task: Task, table: _Table) -> list[Sample]:
    img_col = task.image_column
    has_images = img_col in table.columns
    samples: list[Sample] = []
    for index, row in enumerate(table.rows(skip=(img_col,))):
        if has_images:
            row[img_col] = ImageRef(table, index)
        try:
            made = task.samples_from_row(row, index)
        except HarnessError as exc:
            raise HarnessError(f"{table.where}: {exc}")
        except KeyError as exc:
            raise HarnessError(f"{table.where}: row {index} has no '{exc.args[0]}', which task {task.name} needs; fill it in or drop the row")
        except (TypeError, ValueError, AttributeError) as exc:
            raise HarnessError(f"{table.where}: row {index} has a value of the wrong type for task {task.name} ({type(exc).__name__}: {exc})")
        samples.extend(made)
    counts = Counter(s.id for s in samples)
    if len(counts) != len(samples):
        dup = next(i for i, c in counts.items() if c > 1)
        raise HarnessError(f"{table.where}: sample id '{dup}' occurs more than once; ids must be unique within a split")
    return samples


def _resolve_images(task: Task, samples: list[Sample]) -> None:
    """Decode the chosen samples' images: fully for up to EAGER_DECODE_MAX samples, else lazily."""
    required = task.image_column in task.dataset.required_columns
    load = len(samples) <= EAGER_DECODE_MAX
    for s in samples:
        if isinstance(s.image, ImageRef):
            s.image, err = s.image.resolve(load)
        elif s.image is not None:
            s.image, err = decode_image(s.image, load=load)
        else:
            err = "missing image" if required else None
        if err and s.error is None:
            s.error = err


def _strip_labels(samples: list[Sample]) -> None:
    for s in samples:
        s.references = None
        s.answer = None


def fingerprint(samples: list[Sample]) -> str:
    """sha256 over each item's id, question, context, choices, answer and references, in order."""
    h = hashlib.sha256()
    for s in samples:
        item = [s.id, s.question, s.context, s.choices, s.answer, s.references]
        h.update(json.dumps(item, ensure_ascii=False, sort_keys=True, default=str).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def subset_indices(n_total: int, limit: int | None, seed: int) -> list[int]:
    """Indices of the first ``limit`` items of one fixed seeded permutation, in dataset order."""
    if limit is None or limit >= n_total:
        return list(range(n_total))
    return sorted(int(i) for i in np.random.default_rng(seed).permutation(n_total)[:limit])


def load_samples(task, data="bundled", limit: int | None = None, seed: int = 0, split: str | None = None) -> LoadedData:
    """Load, subset and decode a task's samples. See the module docstring."""
    if not isinstance(task, Task):
        from harness.tasks import get_task

        task = get_task(task)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise HarnessError(f"--limit must be a positive integer, got {limit!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise HarnessError(f"subset seed must be an integer, got {seed!r}")
    split_name = split or task.dataset.split
    synthetic = False
    strip = False
    if not isinstance(data, (str, Path)):
        if hasattr(data, "data") and hasattr(data, "features"):  # a datasets.Dataset
            table = _dataset_table(data, "in-memory dataset", task.image_column)
            source = "memory:datasets.Dataset"
        else:
            raise HarnessError(f"data must be 'bundled', 'hub', a path or a datasets.Dataset, got {type(data).__name__}")
    elif str(data) == "bundled":
        path = bundled_file(task)
        if not path.is_file():
            raise HarnessError(f"task {task.name} ships no bundled samples; use --data hub or --data PATH")
        if split not in (None, task.dataset.split, "eval"):
            raise HarnessError(f"bundled samples have one synthetic evaluation split, not '{split}'; load them without "
                               "a split, or load that split from 'hub' or a path")
        table, _ = _read_parquet(path, task.image_column)
        source, synthetic, split_name = f"bundled-synthetic:{_rel(path)}", True, "synthetic-eval"
    elif str(data) == "hub":
        if task.dataset.splits and split_name not in _known_splits(task):
            raise HarnessError(f"task {task.name} has no split '{split_name}' on {task.dataset.hub_id}; known splits: {', '.join(_known_splits(task))}")
        table = _load_hub(task, split_name)
        source = f"hub:{'/'.join(p for p in (task.dataset.hub_id, task.dataset.config, split_name) if p)}"
        strip = task.dataset.split_labeled(split_name) is False
    else:
        path = Path(data).expanduser()
        if path.is_dir():
            table, synthetic = _read_folder(path, task, split_name)
        elif path.is_file():
            suffix = path.suffix.lower()
            if suffix == ".parquet":
                table, synthetic = _read_parquet(path, task.image_column)
            elif suffix in (".jsonl", ".json", ".ndjson"):
                table = _read_jsonl(path, task.image_column)
            else:
                raise HarnessError(f"--data '{path}': unknown file type '{suffix}'; pass a .parquet or .jsonl file, a save_to_disk folder, 'hub' or 'bundled'")
        else:
            raise HarnessError(f"--data '{data}' is not 'hub', 'bundled', an existing file or a folder; check the path")
        source = f"{'synthetic-' if synthetic else ''}path:{path}"
        split_name = split
    _check_columns(task, table)
    samples = _build_samples(task, table)
    if not samples:
        raise HarnessError(f"'{table.where}' holds no rows for task {task.name}; pass a non-empty dataset")
    if strip:
        _strip_labels(samples)
    n_total = len(samples)
    samples = [samples[i] for i in subset_indices(n_total, limit, seed)]
    _resolve_images(task, samples)
    return LoadedData(
        samples=samples,
        source=source,
        synthetic=synthetic,
        fingerprint=fingerprint(samples),
        subset={"limit": limit, "seed": seed, "n_total": n_total, "n": len(samples)},
        labeled=task.can_score(samples),
        split=split_name,
        task=task.name,
    )
