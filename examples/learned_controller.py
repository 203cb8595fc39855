"""A small learned controller: per configuration, a logistic model of "answers this sample
correctly" and a linear model of its latency, over features a deployed controller has before the
model runs (``PolicyInput``: prompt text tokens, image size, vision tokens of each tier).

For each sample it picks the configuration with the highest predicted score minus
``trade_off`` x predicted latency / ``ref_ms`` (the slowest configuration's mean latency in the
training sweep), among those whose predicted latency fits the sample's budget when there is one
(``--latency-budget-ms`` or ``--policy-arg budget_ms=...``; none fits: the fastest).

Trained by ``examples/train_controller.py`` from a sweep's per-sample results (weights.json), run
with::

    python -m harness run --task scienceqa --policy examples.learned_controller:Controller@weights.json
    harness run --task scienceqa --policy examples/learned_controller.py:Controller@weights.json

(``python -m`` puts the checkout on the import path; the ``harness`` script needs the file form or
``PYTHONPATH=.``). Not installed with the harness: an example of the policy plugin contract
(``harness/policies/base.py``, docs/contracts.md "Policies").
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from harness.errors import HarnessError
from harness.knobs import Knobs
from harness.policies import Param, Policy

FORMAT = "examples.learned_controller/1"


def feature_names(tiers: Sequence[str]) -> list[str]:
    return ["text_tokens", "log_image_pixels"] + [f"vision_tokens_{t}" for t in tiers]


def features(text_tokens: int, image_size, vision_tokens_by_tier: dict, tiers: Sequence[str]) -> list[float]:
    """The controller's inputs for one sample: the same function at training (from a sample line's
    ``policy_input``) and at decision time (from a ``PolicyInput``)."""
    pixels = float(image_size[0]) * float(image_size[1]) if image_size else 0.0
    by_tier = vision_tokens_by_tier or {}
    return [float(text_tokens or 0), math.log1p(pixels)] + [float(by_tier.get(t, 0)) for t in tiers]


def latency_inputs(text_tokens: int, vision_tokens: int) -> list[float]:
    """What a configuration's latency model is linear in: a constant, its vision tokens, the text tokens."""
    return [1.0, float(vision_tokens), float(text_tokens or 0)]


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))


class Controller(Policy):
    """``--policy examples.learned_controller:Controller@weights.json``."""

    name = "learned-controller"
    summary = "logistic accuracy and linear latency models per configuration, trained on a sweep"
    params = {
        "trade_off": Param(float, None, "score given up per ref_ms of predicted latency (default: the checkpoint's)"),
        "budget_ms": Param(float, None, "per-sample latency budget (default: --latency-budget-ms)"),
        "weights": Param(str, None, "weights.json (same as @weights.json after the class name)"),
    }

    def setup(self) -> None:
        self.model: dict | None = None
        if self.weights:
            self.load_checkpoint(self.weights)

    def load_checkpoint(self, path: str) -> None:
        try:
            doc = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise HarnessError(f"learned controller: cannot read weights '{path}': {exc}")
        if not isinstance(doc, dict) or doc.get("format") != FORMAT or not doc.get("configs"):
            raise HarnessError(f"learned controller: '{path}' is not a weights file ({FORMAT}); write one with "
                               "examples/train_controller.py")
        self.model = doc
        self.tiers = list(doc["tiers"])
        self.mean = np.asarray(doc["mean"], dtype=float)
        self.scale = np.asarray(doc["scale"], dtype=float)
        self.configs = [Knobs.parse(c["config"]) for c in doc["configs"]]
        self.w = np.asarray([c["w"] for c in doc["configs"]], dtype=float)  # [configs, features]
        self.b = np.asarray([c["b"] for c in doc["configs"]], dtype=float)
        self.lat = np.asarray([c["latency"] for c in doc["configs"]], dtype=float)  # [configs, 3]
        self.lat_floor = np.asarray([c["latency_min_ms"] for c in doc["configs"]], dtype=float)
        self.weights = str(path)

    def predict(self, inp) -> tuple[np.ndarray, np.ndarray]:
        """Predicted probability of a correct answer and latency (ms) of each configuration."""
        x = (np.asarray(features(inp.text_tokens, inp.image_size, inp.vision_tokens_by_tier, self.tiers)) - self.mean) / self.scale
        p = sigmoid(self.w @ x + self.b)
        rows = np.asarray([latency_inputs(inp.text_tokens, (inp.vision_tokens_by_tier or {}).get(k.tier, 0))
                           for k in self.configs])
        lat = np.maximum((rows * self.lat).sum(axis=1), self.lat_floor)
        return p, lat

    def choose(self, inputs):
        if self.model is None:
            raise HarnessError("the learned controller has no weights: pass --policy "
                               "examples.learned_controller:Controller@weights.json")
        trade = float(self.trade_off if self.trade_off is not None else self.model.get("trade_off", 0.0))
        ref = float(self.model["ref_ms"])
        out = []
        for inp in inputs:
            p, lat = self.predict(inp)
            budget = self.budget_ms or inp.latency_budget_ms or self.context.latency_budget_ms
            fits = np.flatnonzero(lat <= budget) if budget else np.arange(len(lat))
            if fits.size == 0:
                out.append(self.configs[int(np.argmin(lat))])
                continue
            utility = p[fits] - trade * lat[fits] / ref
            out.append(self.configs[int(fits[np.argmax(utility)])])
        return out

    def describe(self) -> dict:
        return {"name": self.name, "args": {"trade_off": self.trade_off, "budget_ms": self.budget_ms},
                "configs": [str(k) for k in getattr(self, "configs", [])]}
