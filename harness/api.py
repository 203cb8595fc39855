"""The public Python entry point and the ONE run orchestration.

``harness run``, ``harness sweep``, the tests and notebooks all come through here::

    import harness

    result = harness.evaluate(task="scienceqa", knobs="14,6")       # the bundled model and samples
    print(result.summary["score"], result.summary["latency_ms"]["measured"]["total"]["mean"])
    print(result.run_dir)                                           # samples.jsonl, summary.json, run.json

Three steps, each validated before the next costs anything:

1. :func:`prepare` resolves tasks, metrics, the model's config (no weights), device, dtype, the
   importance file, the estimator spec and the data; every bad input raises ``HarnessError``;
2. :func:`open_units` opens one run directory per unit of work (a task at fixed knobs or under a
   policy; a sweep has one unit per (task, configuration)), refusing folders that hold another
   configuration, before any weights load;
3. :func:`run_units` loads the model once (or uses the backend passed in), fits an estimator on
   first use when needed, and executes the unfinished units through :mod:`harness.runner`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Sequence

from harness import distributed
from harness.errors import HarnessError
from harness.knobs import Knobs, parse_tier


@dataclass
class EvalResult:
    """What :func:`evaluate` returns: one summary and run directory per task (or sweep unit)."""

    summaries: list[dict]
    run_dirs: list[Path]
    samples: list[list[dict]] = field(default_factory=list)  # per run: the sample lines, in data order

    @property
    def summary(self) -> dict:
        if len(self.summaries) != 1:
            raise ValueError(f"{len(self.summaries)} runs: use .summaries")
        return self.summaries[0]

    @property
    def run_dir(self) -> Path:
        if len(self.run_dirs) != 1:
            raise ValueError(f"{len(self.run_dirs)} runs: use .run_dirs")
        return self.run_dirs[0]


@dataclass
class Context:
    """Everything validated before any weights load, shared by the units of one call."""

    tasks: list
    metrics: dict[str, Any]
    info: Any
    model: str
    device: str
    dtype: str
    experts_impl: str
    data: dict[str, Any]  # task name -> LoadedData
    seed: int = 0  # policies and the bootstrap
    subset_seed: int = 0  # the --limit subset
    batch_size: int = 1
    style: str | None = None
    max_new_tokens: int | None = None
    importance: Any = None
    importance_hash: str | None = None
    estimator_spec: str | None = None
    latency_budget_ms: float | None = None
    accuracy_table: str | None = None
    knob_space: str | None = None
    knob_space_configs: list | None = None
    quiet: bool = True
    engine: str = "eager"  # the resolved execution engine: "fast" or "eager"
    trust_remote_code: bool = False
    model_config: str | None = None
    backend: Any = None
    estimator: Any = None  # set by bind()
    estimator_note: str | None = None  # a loaded backend (tests, notebooks) or None: loaded by run_units
    timing: dict = field(default_factory=dict)
    world: Any = None  # a harness.distributed.World under torchrun with more than one process
    check_batch1: int = 0  # samples of a batched run measured again alone (harness.batch1_check)
    overlap: bool = False  # host work on a worker thread beside the device's (harness.host_overlap)
    units_dealt: bool = False  # True: whole units were dealt to the ranks (sweep); False: each unit's samples are

    def max_new(self, task) -> int:
        from harness.run_setup import task_max_new_tokens

        return self.max_new_tokens or task_max_new_tokens(task, self.style)


@dataclass
class Unit:
    """One run directory: one task at fixed knobs (``knobs``) or under a policy."""

    task: Any
    folder: Path
    knobs: Knobs | None = None
    policy: Any = "fixed"  # a spec string or a Policy object
    policy_args: dict = field(default_factory=dict)
    record: Any = None


# -- 1. validation ------------------------------------------------------------------------------------
def _file_sha256(path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def prepare(*, task, model: str = "reference", data="bundled", limit: int | None = None, batch_size: int = 1,
            importance=None, estimator: str | None = None, device: str = "auto", dtype: str = "auto", seed: int = 0,
            subset_seed: int = 0, style: str | None = None, max_new_tokens: int | None = None,
            experts_impl: str | None = None, latency_budget_ms: float | None = None, accuracy_table: str | None = None, knob_space: str | None = None,
            include_path: Sequence[str] = (), metric=None, backend=None, quiet: bool = True,
            engine: str = "auto", trust_remote_code: bool = False,
            model_config: str | None = None, dist_timeout: float | None = None,
            check_batch1: int | None = None, host_overlap: str = "auto") -> Context:
    """Validate everything that can be checked without weights (see the module docstring)."""
    from harness.registry import import_path
    from harness.run_setup import DEFAULT_EXPERTS_IMPL, resolve_device, resolve_dtype

    t0 = time.perf_counter()
    for folder in include_path or ():
        import_path(folder)
    from harness.tasks import resolve_tasks

    task_objs = resolve_tasks(task)
    import harness.metrics as metric_pkg

    if metric is not None:
        m = metric_pkg.get_metric(metric) if isinstance(metric, str) else metric
        metrics = {t.name: m for t in task_objs}
    else:
        metrics = {t.name: metric_pkg.get_metric(t.metric) for t in task_objs}
    if style is not None:
        for t in task_objs:
            styles = tuple(getattr(t, "styles", ()) or ())
            if styles and style not in styles:
                raise HarnessError(f"task '{t.name}' has no prompt style '{style}'; use one of {', '.join(styles)}")

    if backend is not None:
        info = backend.info
        model = getattr(info, "name", model)
        dev, dt = str(getattr(backend, "device", "cpu")), str(getattr(backend, "dtype", "")).replace("torch.", "")
        impl = getattr(backend, "experts_impl", None) or experts_impl or DEFAULT_EXPERTS_IMPL
        engine = getattr(backend, "engine", None) or "eager"
    else:
        from harness import backends

        backends.check_trust(model, trust_remote_code)
        info = backends.describe(model) if model_config is None else backends.describe(model, model_config)
        dev = resolve_device(device)
        dt = resolve_dtype(dtype, dev)
        impl = experts_impl or DEFAULT_EXPERTS_IMPL
        from harness.engine import resolve as resolve_engine, start_compile_workers

        engine = resolve_engine(engine, dev, info.family)
        start_compile_workers(engine, dev)  # booting beside the loading, not beside the run loop
    imp_hash = None
    if isinstance(importance, (str, Path)):
        from harness.knobs import load_importance

        load_importance(importance, info.n_blocks)
        imp_hash = _file_sha256(importance)

    space = None
    if isinstance(knob_space, (list, tuple)):  # candidate configurations given directly (Python API)
        space, knob_space = [k if isinstance(k, Knobs) else Knobs.parse(str(k)) for k in knob_space], None
        space = [k.with_tier(k.tier or getattr(info, "default_tier", None) or "medium") for k in space]
        for k in space:
            info.validate(k)
    elif knob_space is not None:
        from harness.policies import load_knob_space

        space = load_knob_space(knob_space, info)

    from harness.tasks.data import load_samples

    loaded = {}
    for t in task_objs:
        ld = data if hasattr(data, "samples") else load_samples(t, data, limit, subset_seed)
        if not ld.samples:
            raise HarnessError(f"task '{t.name}' has no samples in --data {data}; check the path or --limit")
        if not getattr(info, "vision", True) and any(s.image is not None for s in ld.samples):
            raise HarnessError(f"{info.name} is a text-only model ({getattr(info, 'family', '?')}) and task '{t.name}' has "
                               "images, which it would drop; use a vision-language model (reference, hf: LLaVA-style, molmoe:)")
        loaded[t.name] = ld
    ctx = Context(tasks=task_objs, metrics=metrics, info=info, model=model, device=dev, dtype=dt, experts_impl=impl,
                  data=loaded, seed=seed, subset_seed=subset_seed, batch_size=int(batch_size), style=style,
                  max_new_tokens=max_new_tokens,
                  importance=importance, importance_hash=imp_hash, estimator_spec=estimator,
                  latency_budget_ms=latency_budget_ms, accuracy_table=accuracy_table, knob_space=knob_space,
                  knob_space_configs=space, quiet=quiet, engine=engine, backend=backend,
                  trust_remote_code=bool(trust_remote_code), model_config=model_config)
    from harness.batch1_check import default_n

    ctx.check_batch1 = default_n(dev, batch_size) if check_batch1 is None else int(check_batch1)
    from harness.host_overlap import enabled as overlap_enabled, host_threads

    ctx.overlap = overlap_enabled(host_overlap, dev)
    ctx.timing["host_threads"] = host_threads()
    ctx.world = distributed.setup(dev, dist_timeout)  # joins the torchrun job, if any (after validation)
    ctx.timing["startup_s"] = time.perf_counter() - t0
    return ctx


def fixed_knobs(ctx: Context, knobs=None, tier=None, policy=None, policy_args: dict | None = None) -> Knobs | None:
    """The fixed configuration of a run (``--knobs``, or the full model when no policy is given), validated
    against the model; None under a policy."""
    if tier is not None:
        tier = parse_tier(tier)
    fixed = None
    if knobs is not None:
        fixed = knobs if isinstance(knobs, Knobs) else Knobs.parse(str(knobs), tier=tier)
        if tier is not None and isinstance(knobs, Knobs):
            fixed = fixed.with_tier(tier)
    elif policy in (None, "fixed") and not (policy_args or {}).get("knobs"):
        fixed = Knobs(ctx.info.n_blocks, ctx.info.default_top_k, tier)
    if fixed is not None and policy not in (None, "fixed"):
        raise HarnessError(f"--knobs and --policy {policy} are exclusive; --knobs means --policy fixed")
    if fixed is not None:
        fixed.check_generic()
        ctx.info.validate(fixed)
        if fixed.tier is None:
            fixed = fixed.with_tier(getattr(ctx.info, "default_tier", None) or "medium")
    return fixed


def default_output(task_names: list[str], config_slug: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    label = task_names[0] if len(task_names) == 1 else f"{len(task_names)}tasks"
    return Path("runs") / f"{stamp}-{label}-{config_slug}"


# -- 2. run directories -------------------------------------------------------------------------------
def unit_run_config(ctx: Context, unit: Unit) -> dict:
    """Everything that must match for ``unit.folder`` to be resumed."""
    from harness.summary import make_run_config, policy_config

    spec = unit.policy if isinstance(unit.policy, str) else getattr(unit.policy, "name", "custom")
    args = dict(unit.policy_args)
    if spec == "fixed" and unit.knobs is not None:
        args = {"knobs": str(unit.knobs)}
    extra = {"importance": ctx.importance_hash, "experts_impl": ctx.experts_impl, "engine": ctx.engine,
             "accuracy_table": ctx.accuracy_table, "knob_space": ctx.knob_space}
    if ctx.model_config is not None:  # other tiers or prompt template: never resumed into a default-settings run
        from harness.backends.modelconfig import resolve_model_config

        path = resolve_model_config(ctx.model_config)
        extra["model_config"] = {"name": path.stem, "sha256": _file_sha256(path)}
    return make_run_config(task=unit.task, model=ctx.model, data=ctx.data[unit.task.name],
                           policy=policy_config(unit.knobs, spec, args, ctx.info), batch_size=ctx.batch_size,
                           style=ctx.style, max_new_tokens=ctx.max_new(unit.task), device=ctx.device, dtype=ctx.dtype,
                           seed=ctx.seed, estimator=ctx.estimator_spec, latency_budget_ms=ctx.latency_budget_ms,
                           extra=extra)


def open_units(ctx: Context, units: list[Unit]) -> list[Unit]:
    """Open (create or check for resume) every unit's run directory; nothing loads yet."""
    from harness.records import RunRecord

    def open_all():
        for u in units:
            u.record = RunRecord.open(u.folder, unit_run_config(ctx, u))

    distributed.main_first(None if ctx.units_dealt else ctx.world, "opening the run directories", open_all)
    return units


# -- 3. execution ---------------------------------------------------------------------------------------
def _load_backend(ctx: Context):
    if ctx.backend is None:
        from harness import backends

        t0 = time.perf_counter()
        device = ctx.world.device if ctx.world is not None else ctx.device  # cuda:LOCAL_RANK under torchrun
        ctx.backend = backends.load(ctx.model, device=device, dtype=ctx.dtype, importance=ctx.importance,
                                    experts_impl=ctx.experts_impl, engine=ctx.engine,
                                    trust_remote_code=ctx.trust_remote_code,
                                    **({} if ctx.model_config is None else {"model_config": ctx.model_config}))
        ctx.timing["model_load_s"] = time.perf_counter() - t0
    return ctx.backend


def bind(ctx: Context, units: list[Unit], estimator=None) -> None:
    """Prepare the estimator (a spec is loaded; a missing fit becomes a pending fit on first use) and
    build each unit's policy, so that policy configuration errors surface before any weights load.
    Units with the same policy spec and arguments share one policy object."""
    from harness.run_setup import build_policy, prepare_estimator

    if estimator is not None:
        ctx.estimator, ctx.estimator_note = estimator, None
    else:
        ctx.estimator, ctx.estimator_note = prepare_estimator(ctx.estimator_spec, ctx.info, ctx.device, ctx.quiet)
    built: dict[str, Any] = {}
    for u in units:
        if not isinstance(u.policy, str):
            continue
        args = dict(u.policy_args)
        if u.policy == "fixed" and u.knobs is not None:
            args.setdefault("knobs", str(u.knobs))
        key = f"{u.policy}|{sorted(args.items())}"
        if key not in built:
            built[key] = build_policy(u.policy, args, info=ctx.info, estimator=ctx.estimator,
                                      knob_space=ctx.knob_space_configs, accuracy_table=ctx.accuracy_table,
                                      seed=ctx.seed, max_new_tokens=max(ctx.max_new(t) for t in ctx.tasks),
                                      tasks=tuple(t.name for t in ctx.tasks), latency_budget_ms=ctx.latency_budget_ms)
        u.policy = built[key]


def batch1_estimator_for(ctx: Context, backend, est) -> tuple[Any, str | None, str | None]:
    """(the estimator of each sample's latency alone, a note when it had to be fitted or is missing,
    the command that re-makes the batch-1 fit): :func:`harness.latency.firstuse.batch1_estimator`,
    made on rank 0 under torchrun."""
    from harness.backends import model_fingerprint
    from harness.latency.fit_files import profile_command
    from harness.latency.firstuse import backend_key, batch1_estimator

    if est is None:
        return None, None, None
    weights = model_fingerprint(ctx.model)
    command = profile_command(backend_key(backend, ctx.info, weights), 1, ctx.model) if backend is not None else None

    def make():  # every rank of a torchrun job gets here (a collective): rank 0 fits, the others receive
        if backend is None:
            return None, None
        return batch1_estimator(est, backend, ctx.info, batch_size=ctx.batch_size, model_spec=ctx.model, weights=weights,
                                seed=ctx.seed, quiet=ctx.quiet)

    alone, note = ctx.world.from_main("fitting the batch-1 latency estimator", make) if ctx.world is not None else make()
    return alone, note, command


def run_units(ctx: Context, units: list[Unit], reporter: Callable[[], Any] | None = None) -> list[tuple[dict, list[dict]]]:
    """Execute bound ``units`` (see :func:`bind`) on one loaded model; returns (summary, sample lines)
    per unit (both also written to each unit's folder)."""
    from harness.runner import execute
    from harness.run_setup import ensure_fitted
    from harness.sharding import unit_execution

    if not units and ctx.world is None:
        return []
    backend = _load_backend(ctx) if units else None
    est, fit_note = ensure_fitted(ctx.estimator, backend, ctx.info, ctx.device, ctx.seed, ctx.quiet,
                                  model_spec=ctx.model, batch_size=ctx.batch_size, world=ctx.world)
    note = ctx.estimator_note or fit_note
    alone, alone_note, refit = batch1_estimator_for(ctx, backend, est)
    if alone_note:
        note = f"{note}; {alone_note}" if note else alone_note
    placement, rank, reporter = unit_execution(ctx, reporter)
    # --check-batch1 N is the command's: its samples are shared out over the run directories
    per_unit_check = -(-int(ctx.check_batch1) // max(1, len(units))) if ctx.check_batch1 else 0
    results = []
    for u in units:
        summary, lines = execute(backend=backend, task=u.task, metric=ctx.metrics[u.task.name],
                                 data=ctx.data[u.task.name], record=u.record, policy=u.policy, fixed_knobs=u.knobs,
                                 estimator=est, estimator_note=note, batch_size=ctx.batch_size, style=ctx.style,
                                 max_new_tokens=ctx.max_new(u.task), latency_budget_ms=ctx.latency_budget_ms,
                                 seed=ctx.seed, reporter=reporter() if reporter else None,
                                 extra_timing={k: round(v, 3) for k, v in ctx.timing.items()}, placement=placement, rank=rank,
                                 batch1_estimator=alone, check_batch1=per_unit_check, refit_command=refit,
                                 subset_seed=ctx.subset_seed, overlap=ctx.overlap)
        results.append((summary, lines))
        if (summary.get("estimator_info") or {}).get("disabled"):
            est = None  # do not retry a failing estimator plugin on every unit
            note = (summary.get("notes") or [note])[-1]
    return results


def evaluate(task, knobs=None, *, model: str = "reference", data="bundled", limit: int | None = None,
             tier: str | None = None, batch_size: int = 1, policy=None, policy_args: dict | None = None,
             latency_budget_ms: float | None = None, accuracy_table: str | None = None, knob_space: str | None = None,
             importance=None, estimator=None, output=None, device: str = "auto", dtype: str = "auto", seed: int = 0,
             subset_seed: int = 0, style: str | None = None, max_new_tokens: int | None = None, experts_impl: str | None = None,
             include_path: Sequence[str] = (), metric=None, backend=None, quiet: bool = True,
             reporter: Callable[[], Any] | None = None, engine: str = "auto",
             trust_remote_code: bool = False, model_config: str | None = None, dist_timeout: float | None = None,
             check_batch1: int | None = None, host_overlap: str = "auto") -> EvalResult:
    """Evaluate a model on one or more tasks at fixed knobs (``knobs="14,6"``) or under a policy
    (``policy="random"``), writing one run directory per task; re-running into the same ``output``
    resumes. ``backend`` may be an already loaded backend (then ``model``/``device``/``dtype`` come from
    it); ``trust_remote_code`` allows ``molmoe:`` checkpoints to run their own Python files; ``model_config``
    replaces the model's harness settings (tiers, prompt template: a TOML file or a name in configs/models); ``data`` may be a data spec (``bundled``, ``hub``, a path) or a loaded ``LoadedData``.
    ``estimator`` is a spec string or an estimator object. Returns the summaries and run directories."""
    est_obj = None if estimator is None or isinstance(estimator, str) else estimator
    ctx = prepare(task=task, model=model, data=data, limit=limit, batch_size=batch_size, importance=importance,
                  estimator=estimator if isinstance(estimator, str) else getattr(estimator, "name", None),
                  device=device, dtype=dtype, seed=seed, subset_seed=subset_seed, style=style,
                  max_new_tokens=max_new_tokens,
                  experts_impl=experts_impl, latency_budget_ms=latency_budget_ms, accuracy_table=accuracy_table,
                  knob_space=knob_space, include_path=include_path, metric=metric, backend=backend, quiet=quiet,
                  engine=engine, trust_remote_code=trust_remote_code, model_config=model_config,
                  dist_timeout=dist_timeout, check_batch1=check_batch1, host_overlap=host_overlap)
    pol_spec = policy or "fixed"
    pargs = dict(policy_args or {})
    fixed = fixed_knobs(ctx, knobs, tier, policy if isinstance(policy, str) or policy is None else "custom", pargs)
    if not isinstance(pol_spec, str):
        fixed = None
    slug = fixed.slug if fixed is not None else f"policy-{str(getattr(pol_spec, 'name', pol_spec)).replace(':', '-').replace('.', '-')}"
    root = Path(output) if output else default_output([t.name for t in ctx.tasks], slug)
    units = [Unit(task=t, folder=root if len(ctx.tasks) == 1 else root / t.name, knobs=fixed, policy=pol_spec,
                  policy_args=pargs) for t in ctx.tasks]
    bind(ctx, units, estimator=est_obj)
    open_units(ctx, units)
    results = run_units(ctx, units, reporter=reporter)
    return EvalResult([r[0] for r in results], [u.folder for u in units], [r[1] for r in results])
