"""Published reference scores (``configs/published/*.toml``) and the rule that puts one beside a run.

A published score applies to a run only when the run's model is the published model and the run's
data is the published task and dataset split: a ``molmoe:``/``hf:`` spec naming the hub id, or a
local snapshot folder of the same name; a ``hub:`` data source of that split (runs on bundled
samples or on a local file name no split and never match).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from harness.errors import HarnessError

PUBLISHED_DIR = Path(__file__).resolve().parents[2] / "configs" / "published"
_FIELDS = ("model", "task", "split", "value", "metric", "source")


@dataclass(frozen=True)
class PublishedScore:
    model: str  # hub id, e.g. "allenai/MolmoE-1B-0924"
    task: str
    split: str
    value: float  # percent, as published
    metric: str
    source: str

    @property
    def score(self) -> float:
        """On the harness's 0..1 scale."""
        return self.value / 100.0


def load_published(folder: str | Path = PUBLISHED_DIR) -> list[PublishedScore]:
    """Every ``[[score]]`` of every TOML file in ``folder`` (none when the folder is absent)."""
    import tomllib

    out: list[PublishedScore] = []
    folder = Path(folder)
    for path in sorted(folder.glob("*.toml")) if folder.is_dir() else ():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise HarnessError(f"published scores '{path}' are unreadable ({exc}); fix the file")
        for i, entry in enumerate(data.get("score", [])):
            missing = [f for f in _FIELDS if f not in entry]
            if missing:
                raise HarnessError(f"published scores '{path}': entry {i + 1} lacks {', '.join(missing)}; "
                                   f"each [[score]] needs {', '.join(_FIELDS)}")
            try:
                value = float(entry["value"])
            except (TypeError, ValueError):
                raise HarnessError(f"published scores '{path}': entry {i + 1} value {entry['value']!r} is not a number")
            out.append(PublishedScore(str(entry["model"]), str(entry["task"]), str(entry["split"]), value,
                                      str(entry["metric"]), str(entry["source"])))
    return out


def split_of(data_source: str) -> str | None:
    """The dataset split of a ``hub:<id>[/<config>]/<split>`` data source; None for other sources."""
    if not data_source.startswith("hub:"):
        return None
    return data_source.rsplit("/", 1)[-1] or None


def model_is(run_model: str, hub_id: str) -> bool:
    """``run_model`` (a model spec) names ``hub_id``: the id itself after the family prefix, or a
    local folder whose name is the id's last part (a downloaded snapshot)."""
    run_model = run_model.split(" [", 1)[0]  # "SPEC [model-config]": the same model with other harness settings
    _, sep, target = run_model.partition(":")
    target = (target if sep else run_model).rstrip("/")
    if target.lower() == hub_id.lower():
        return True
    is_path = target.startswith(("/", ".", "~")) or target.count("/") != 1  # "owner/name" is another hub id
    return is_path and Path(target).name.lower() == hub_id.rsplit("/", 1)[-1].lower()


def published_for(task: str, data_source: str, model: str, scores: Iterable[PublishedScore]) -> PublishedScore | None:
    split = split_of(data_source)
    for s in scores:
        if s.task == task and split == s.split and model_is(model, s.model):
            return s
    return None
