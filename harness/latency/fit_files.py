"""Where latency fits live and which one a run may use.

A fit is valid for one execution mode, its :class:`FitKey`: the model (name and weights
fingerprint), the device identity (:func:`harness.environment.identity_key`: CPU model and core
count, or GPU name), the dtype, the execution engine and the experts implementation; inside the
file, ``batch_buckets`` lists the batch-size buckets it was profiled at. A run uses a fit only when
all of these match; otherwise it refits (bounded) or falls back to the analytic roofline, and says
which profile command makes a real fit.

Fits made by ``harness profile`` or on first use go to the user cache
(``$HARNESS_CACHE_DIR``, else ``$XDG_CACHE_HOME/harness``, else ``~/.cache/harness``), under
``estimators/``, named by key and batch buckets (:func:`default_fit_path`:
``<key>__b1-32.json``, quick fits ``<key>__b32__quick.json``), so a fit never overwrites one of
another batch bucket and a quick fit never overwrites a full one. Fits shipped with the package
(``harness/configs/estimators``) are read-only fallbacks, used under the same key rules. Lookup
(:func:`find_fit`) reads the key and buckets inside each file, so files named before buckets were
part of the name (``<key>.json``) are still found for the buckets they hold.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path

KEY_FIELDS = ("model", "weights", "device", "dtype", "engine", "experts_impl")


def slugify(text) -> str:
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-") or "x"


def normalize_dtype(dtype) -> str:
    return str(dtype or "").replace("torch.", "") or "float32"


@dataclass(frozen=True)
class FitKey:
    model: str
    weights: str | None
    device: str  # identity_key of the device
    dtype: str
    engine: str
    experts_impl: str

    def slug(self) -> str:
        w = f"__w{self.weights[:8]}" if self.weights else ""
        return "__".join(slugify(x) for x in (self.model, self.device, self.dtype, self.engine, self.experts_impl)) + w

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d) -> "FitKey | None":
        if not isinstance(d, dict) or any(f.name not in d for f in fields(cls)):
            return None
        return cls(**{f.name: d[f.name] for f in fields(cls)})

    def differences(self, other: "FitKey") -> list[str]:
        return [f for f in KEY_FIELDS if getattr(self, f) != getattr(other, f)]

    def describe(self) -> str:
        return (f"{self.model} on {self.device}, {self.dtype}, engine {self.engine}, experts {self.experts_impl}"
                + (f", weights {self.weights[:8]}" if self.weights else ""))


def engine_name(backend=None, engine: str | None = None) -> str:
    """The resolved execution engine, with its kernel overrides (:func:`harness.engine.variant`):
    the backend's own word, else the option, else eager."""
    name = (getattr(backend, "engine_variant", None) or getattr(backend, "engine", None)) if backend is not None else None
    name = getattr(name, "name", name)
    if isinstance(name, str) and name:
        return name
    if engine and engine != "auto":
        return engine
    return "eager"


def run_key(info, device: str, dtype, *, weights: str | None = None, engine: str = "eager",
            experts_impl: str = "grouped_mm") -> FitKey:
    """The key of a run: ``weights`` is the model's weights fingerprint
    (:func:`harness.backends.model_fingerprint`; None for models without local weights)."""
    from harness.environment import device_identity, identity_key

    return FitKey(str(getattr(info, "name", info)), weights, identity_key(device_identity(device)),
                  normalize_dtype(dtype), str(engine), str(experts_impl or "eager"))


def cache_root() -> Path:
    base = os.environ.get("HARNESS_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "harness")
    return Path(base)


def cache_dir() -> Path:
    """Where fits and profile measurements are written."""
    return cache_root() / "estimators"


def shipped_dir() -> Path:
    """Fits shipped with the package (read-only)."""
    import harness.configs as configs

    return Path(configs.__file__).resolve().parent / "estimators"


def buckets_of(batch_sizes) -> list[int]:
    """The batch buckets (:func:`harness.latency.measure.batch_bucket`) of one batch size or several."""
    from harness.latency.measure import batch_bucket

    sizes = [batch_sizes] if isinstance(batch_sizes, int) else list(batch_sizes or [1])
    return sorted({batch_bucket(int(b)) for b in sizes}) or [1]


def default_fit_path(key: FitKey, batch_sizes=1, quick: bool = False) -> Path:
    """Where the fit for ``key`` at ``batch_sizes`` (one batch size or several; their buckets name the
    file) is saved in the user cache: ``<key>__b1-8.json``; a quick fit (first use) gets
    ``<key>__b8__quick.json``. A fit never overwrites another batch bucket's fit, and a quick fit
    never overwrites a full (``harness profile``) one."""
    tag = "-".join(str(b) for b in buckets_of(batch_sizes))
    return cache_dir() / f"{key.slug()}__b{tag}{'__quick' if quick else ''}.json"


def _fit_files():
    """(folder rank, path): the user cache (0) first, then the shipped fits (1)."""
    for rank, folder in enumerate((cache_dir(), shipped_dir())):
        if folder.is_dir():
            for p in sorted(folder.glob("*.json")):
                if not p.name.endswith(".measurements.json"):
                    yield rank, p


def _read(path: Path) -> dict | None:
    try:
        d = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) else None


def read_key(path: Path) -> tuple[FitKey | None, list[int], int]:
    """(key, batch buckets, prompt bucket: the padding of prompt passes by the measured engine)."""
    d = _read(path)
    if d is None:
        return None, [], 0
    return FitKey.from_dict(d.get("key")), [int(b) for b in d.get("batch_buckets") or [1]], int(d.get("prompt_bucket") or 0)


@dataclass
class Lookup:
    path: Path | None  # the matching fit, if any
    near: list[tuple[Path, list[str]]]  # fits of this model for another mode: (path, what differs)

    def why_not(self, bucket: int) -> str:
        if not self.near:
            return "no fit for this model"
        path, diff = self.near[0]
        return f"{path.name} is for another {', '.join(diff)}"


def find_fit(key: FitKey, batch_size: int = 1, prompt_bucket: int | None = None) -> Lookup:
    """The fit for ``key`` covering ``batch_size``'s bucket (and, when given, measured on an engine
    that pads prompt passes to ``prompt_bucket`` tokens, 0 = not at all). Of several that match, a
    full fit (``harness profile``) before a quick one (first use), then the user cache before the
    shipped fits, then the newest. Fits of the same model for another mode are returned as near
    misses (for the message)."""
    from harness.latency.measure import batch_bucket

    bucket = batch_bucket(batch_size)
    near, found = [], []
    for rank, path in _fit_files():
        d = _read(path)
        k = FitKey.from_dict(d.get("key")) if d else None
        if k is None or k.model != key.model:
            continue
        buckets = [int(b) for b in d.get("batch_buckets") or [1]]
        padding = int(d.get("prompt_bucket") or 0)
        diff = key.differences(k) + ([] if bucket in buckets else ["batch bucket"])
        diff += [] if prompt_bucket is None or padding == prompt_bucket else ["prompt padding (an older engine)"]
        if diff:
            near.append((path, diff))
        else:
            found.append(((bool(d.get("quick")), rank), str(d.get("created") or ""), path))
    near.sort(key=lambda x: len(x[1]))
    if not found:
        return Lookup(None, near)
    best = min(found, key=lambda f: f[0])[0]
    newest = max((f for f in found if f[0] == best), key=lambda f: f[1])  # ISO times sort as text
    return Lookup(newest[2], near)


# kernel choices an environment variable overrides: (variable, short name, engines it acts on, CUDA only);
# harness.engine.variant appends the ones set to the engine name a fit is keyed by
KERNEL_OVERRIDES = (("HARNESS_ENGINE_MOE", "moe", ("fast",), False), ("HARNESS_ENGINE_PREFILL_MOE", "prefill_moe", ("fast",), False),
                    ("HARNESS_ENGINE_ATTN", "attn", ("fast",), True), ("HARNESS_ENGINE_GEMV", "gemv", ("fast",), True),
                    ("HARNESS_ENGINE_ROUTER", "router", ("fast",), True), ("HARNESS_CUDNN_SDPA", "cudnn", ("fast", "eager"), True),
                    ("HARNESS_ENGINE_PREFILL_GRAPHS", "prefill_graphs", ("fast",), True),
                    ("HARNESS_ENGINE_VISION_GRAPHS", "vision_graphs", ("fast",), True))


def variant_env(engine_variant: str) -> str:
    """The environment assignments that reproduce an engine variant (``VAR=value ...``)."""
    short = {s: var for var, s, _, _ in KERNEL_OVERRIDES}
    parts = engine_variant.split("+")[1:]
    return " ".join(f"{short[k]}={v}" for k, _, v in (p.partition("=") for p in parts) if k in short)


REMOTE_CODE_EXPERTS = "remote-code"  # the experts of a model that runs its own code (molmoe:): no --experts-impl applies


def profile_command(key: FitKey, batch_size: int = 1, model_spec: str | None = None) -> str:
    """The ``harness profile`` command that makes the fit for ``key``: its device, dtype, engine
    (with the kernel overrides in the environment), and the experts implementation, or, for a
    model that runs its own code (:data:`REMOTE_CODE_EXPERTS`), ``--trust-remote-code``."""
    dev = "cuda" if key.device.startswith("cuda") else "cpu"
    engine = key.engine.split("+")[0]
    env = variant_env(key.engine)
    parts = ([env] if env else []) + [f"harness profile --model {model_spec or key.model} --device {dev} --dtype {key.dtype}"]
    parts.append("--trust-remote-code" if key.experts_impl == REMOTE_CODE_EXPERTS else f"--experts-impl {key.experts_impl}")
    if engine in ("fast", "eager") and not (dev == "cpu" and engine == "eager"):  # auto = eager on CPU
        parts.append(f"--engine {engine}")
    if batch_size > 1:
        parts.append(f"--batch-sizes 1,{batch_size}")
    return " ".join(parts)


STALE_MAPE = 0.5  # a fit that misses a run by more than this (MAPE over enough samples) is flagged
STALE_MIN_SAMPLES = 10


def stale_fit_note(error: dict, estimator: dict | None) -> str | None:
    """A note for the run's summary when the built-in fit misses the run's own measurements by
    more than :data:`STALE_MAPE`: a fit made on a busy machine, before a driver or library
    change, or for another state of the engine keeps being found by its key; this says so and
    gives the command that re-makes it."""
    mape, n = error.get("mape_total"), int(error.get("n") or 0)
    if not estimator or estimator.get("kind") not in ("fit", "quick fit") or mape is None or n < STALE_MIN_SAMPLES:
        return None
    if mape <= STALE_MAPE:
        return None
    where = estimator.get("path") or estimator.get("name")
    made = f" (made {estimator['created']})" if estimator.get("created") else ""
    fix = ""
    key = estimator.get("key")
    if isinstance(key, dict):
        try:
            fix = f"; re-profile: {profile_command(FitKey(**key))}"
        except TypeError:
            fix = ""
    return (f"the latency estimator misses this run's measurements by {100 * mape:.0f}% (MAPE over {n} samples): "
            f"the fit {where}{made} does not describe this machine as it is now{fix}")
