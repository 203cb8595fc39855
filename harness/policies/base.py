"""The policy protocol: given a batch of samples, return one :class:`~harness.knobs.Knobs` each.

A policy is the controller under evaluation. The runner builds one :class:`PolicyInput` per
sample (what a controller may look at before running the model: task, question, image size,
prompt and vision token counts per tier, the latency budget), calls ``policy.choose(inputs)``
and groups the samples by the returned configuration.

Writing a policy::

    from harness.policies import Policy, Param, register

    @register("short-first")
    class ShortFirst(Policy):
        params = {"long_tokens": Param(int, 400, "prompts longer than this get the cheap config")}

        def choose(self, inputs):
            cheap, full = min(self.context.knob_space), max(self.context.knob_space)
            return [cheap if i.text_tokens > self.long_tokens else full for i in inputs]

``--policy-arg key=value`` strings are converted with each :class:`Param`'s type (unknown keys
and unconvertible values are one-line errors naming the policy and the allowed keys) and set as
attributes of the instance. ``choose`` may return a :class:`PolicyFailure` in place of a
configuration for a sample it cannot handle; the runner records that sample as failed.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from harness.errors import HarnessError
from harness.knobs import Knobs

if TYPE_CHECKING:  # pragma: no cover
    from harness.backends import ModelInfo
    from harness.latency.estimator import LatencyEstimator


@dataclass
class PolicyInput:
    """What a policy may look at for one sample: what a deployed controller has before the model
    runs (the request, its token counts per tier, the budget), never anything from the model's
    forward pass. ``prompt`` is the task's rendered prompt (the prompt style applied; the model's
    own template and image placeholders are the backend's). ``image`` is the sample's image as
    loaded (PIL), passed only to policies that declare ``needs_image = True`` (no copy; do not
    modify it); None otherwise and for text-only samples."""

    sample_id: str
    task: str
    question: str
    image_size: tuple[int, int] | None
    text_tokens: int
    vision_tokens_by_tier: dict[str, int]  # tier name -> vision tokens for this sample
    latency_budget_ms: float | None
    meta: dict = field(default_factory=dict)
    prompt: str | None = None
    image: Any = field(default=None, repr=False, compare=False)

    def vision_tokens(self, tier: str) -> int:
        """Vision tokens of this sample at ``tier`` (0 for a text-only sample)."""
        if not self.vision_tokens_by_tier:
            return 0
        if tier not in self.vision_tokens_by_tier:
            raise HarnessError(f"sample '{self.sample_id}' has no vision token count for tier '{tier}' "
                               f"(known: {', '.join(sorted(self.vision_tokens_by_tier))})")
        return int(self.vision_tokens_by_tier[tier])

    def to_dict(self) -> dict:
        """JSON form (no image, no prompt: the sample line keeps the prompt once)."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("image", "prompt")}
        d["meta"] = dict(self.meta)
        d["vision_tokens_by_tier"] = dict(self.vision_tokens_by_tier)
        d["image_size"] = list(self.image_size) if self.image_size is not None else None
        return d


@dataclass
class PolicyContext:
    """What a policy gets once, at build time (before the model loads)."""

    model_info: "ModelInfo"  # knob ranges, tiers, default tier
    knob_space: list[Knobs]  # candidate configurations (--knob-space / configs/knob_spaces/*.toml)
    estimator: "LatencyEstimator | None"  # harness/latency/estimator.py
    accuracy_table: str | None  # --accuracy-table: run dirs / pareto JSON from a sweep
    seed: int
    max_new_tokens: int
    # Optional extras (defaults keep the documented constructor valid). When the runner fills
    # them, config errors that depend on them are raised at build time, before the model loads.
    tasks: tuple[str, ...] = ()  # canonical names of the tasks this run evaluates
    latency_budget_ms: float | None = None  # --latency-budget-ms

    @property
    def default_tier(self) -> str | None:
        return getattr(self.model_info, "default_tier", None)

    def resolve(self, knobs: Knobs) -> Knobs:
        """Fill a missing tier with the model's default tier (so equal configs compare equal)."""
        if knobs.tier is None and self.default_tier is not None:
            return knobs.with_tier(self.default_tier)
        return knobs


@dataclass(frozen=True)
class PolicyFailure:
    """Stands in for a sample's configuration when the policy could not give a valid one."""

    message: str

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class Param:
    """One ``--policy-arg`` a policy accepts: a converter (``int``, ``float``, ``str``, ``bool``,
    or any callable raising ``ValueError``/``HarnessError`` on bad text), a default, a help line.
    ``required=True`` (or no default) makes it mandatory."""

    type: Callable[[str], Any] = str
    default: Any = None
    help: str = ""
    required: bool = False
    choices: tuple[str, ...] | None = None

    def convert(self, policy: str, key: str, value: Any) -> Any:
        if not isinstance(value, str):  # already typed (from a TOML config or Python)
            return value
        text = value.strip()
        if self.choices is not None and text not in self.choices:
            raise HarnessError(f"policy '{policy}': --policy-arg {key}={value!r} is not one of {', '.join(self.choices)}")
        if self.type is bool:
            low = text.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise HarnessError(f"policy '{policy}': --policy-arg {key}={value!r} is not a boolean; use true or false")
        try:
            return self.type(text)
        except HarnessError as exc:
            raise HarnessError(f"policy '{policy}': --policy-arg {key}={value!r}: {exc}")
        except (TypeError, ValueError):
            tname = getattr(self.type, "__name__", "the expected type")
            raise HarnessError(f"policy '{policy}': --policy-arg {key}={value!r} is not a valid {tname}")


class Policy:
    """Base class of policies. Subclasses set ``name`` (via ``@register``) and ``params`` and
    implement :meth:`choose`; ``self.context`` holds the :class:`PolicyContext`."""

    name: ClassVar[str] = "policy"
    summary: ClassVar[str] = ""
    params: ClassVar[dict[str, Param]] = {}
    needs_image: ClassVar[bool] = False  # True: PolicyInput.image holds the sample's image

    def __init__(self, context: PolicyContext, **args: Any):
        self.context = context
        for key, param in self.params.items():
            setattr(self, key, args.get(key, param.default))
        unknown = set(args) - set(self.params)
        if unknown:
            raise HarnessError(f"policy '{self.name}' has no argument(s) {', '.join(sorted(unknown))}; "
                               f"{known_args_text(self.params)}")
        self.setup()

    def setup(self) -> None:
        """Check the context and arguments, load tables; raise HarnessError on bad config."""

    def choose(self, inputs: list[PolicyInput]) -> list[Knobs]:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> dict:
        """JSON-able description recorded in ``summary.json`` (``policy``)."""
        return {"name": self.name, "args": {k: _jsonable(getattr(self, k, None)) for k in self.params}}


def known_args_text(params: dict[str, Param]) -> str:
    if not params:
        return "it takes no --policy-arg"
    return "known: " + ", ".join(f"{k} ({p.help})" if p.help else k for k, p in params.items())


def convert_args(policy: str, params: dict[str, Param], args: dict[str, Any]) -> dict[str, Any]:
    """Validate ``--policy-arg`` strings against ``params``: unknown keys, missing required keys
    and bad values are one-line errors."""
    out: dict[str, Any] = {}
    for key, value in (args or {}).items():
        k = str(key).strip().replace("-", "_")
        if k not in params:
            from harness.suggest import did_you_mean

            hint = did_you_mean(k, params)
            raise HarnessError(f"policy '{policy}' has no argument '{key}'.{hint} {known_args_text(params)}")
        out[k] = params[k].convert(policy, k, value)
    for k, p in params.items():
        if p.required and k not in out:
            raise HarnessError(f"policy '{policy}' needs --policy-arg {k}=... ({p.help or 'required'})")
    return out


def _jsonable(v):
    if isinstance(v, Knobs):
        return str(v)
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v
