"""Where the run loop's host time goes inside a real run: the main command run in-process with its
host steps timed by wall clock, by the thread's own CPU time and by context switches, under a few
thread settings.

    python benchmarks/host_in_run.py                                      # GPU: random:molmoe-1b, scienceqa, 14,6
    python benchmarks/host_in_run.py --model reference --device cpu --limit 8 --variants off   # dry run

``benchmarks/host_prep.py`` times the host preparation alone (about 4-6 ms per sample on an H100's
host); inside the main command the same call took 40 ms (without the worker) and 85 ms (with it).
This benchmark runs ``harness run`` in a child process per variant, wrapping the runner's
``host_inputs``, ``_generate_batch`` and ``_record_batch`` and the backend's ``prepare_detached``
(with its parts ``preprocess``, ``build_input_ids``), and reports per step the mean wall time, the
mean CPU time of the calling thread (``time.thread_time``: far below the wall time means the thread
waited: for the interpreter lock, for a core, for a cgroup quota), involuntary context switches,
the cgroup's CPU throttling during the run, and each process thread's CPU time. Each variant also
repeats ``prepare_detached`` once on the same inputs right after the first call (``repeat``): a fast
repeat means the first call paid a first touch (image decoding), a slow repeat means the process
was slow then. Variants: ``off``/``on`` (``--host-overlap``) with the default threads, ``-omp1`` /
``-omp4`` (``OMP_NUM_THREADS`` at process start), ``-host1`` / ``-host4`` (``HARNESS_HOST_THREADS``) and
``-nopool`` (``TORCHINDUCTOR_COMPILE_THREADS=1``: no compile worker processes; each run also reports
the processes that descend from it and their CPU seconds when its first batch starts and at the end). Prints a table and writes host_in_run.json / .md to $OUT (if set)
or benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the child runs harness from this checkout, installed or not
VARIANTS = {"off": ("off", {}), "on": ("on", {}), "off-omp1": ("off", {"OMP_NUM_THREADS": "1"}),
            "on-omp1": ("on", {"OMP_NUM_THREADS": "1"}), "off-omp4": ("off", {"OMP_NUM_THREADS": "4"}),
            "on-omp4": ("on", {"OMP_NUM_THREADS": "4"}), "off-host1": ("off", {"HARNESS_HOST_THREADS": "1"}),
            "on-host1": ("on", {"HARNESS_HOST_THREADS": "1"}), "on-host4": ("on", {"HARNESS_HOST_THREADS": "4"}),
            # no compile worker processes at all (inductor compiles in the process): do they take the host's cores?
            "off-nopool": ("off", {"TORCHINDUCTOR_COMPILE_THREADS": "1"}), "on-nopool": ("on", {"TORCHINDUCTOR_COMPILE_THREADS": "1"})}


def _throttled() -> dict:
    for path in ("/sys/fs/cgroup/cpu.stat", "/sys/fs/cgroup/cpu/cpu.stat", "/sys/fs/cgroup/cpu,cpuacct/cpu.stat"):
        try:
            out = {}
            for line in Path(path).read_text().splitlines():
                k, _, v = line.partition(" ")
                out[k] = int(v)
            return out
        except (OSError, ValueError):
            continue
    return {}


def _threads() -> dict:
    """CPU seconds of each thread of this process, by thread name (summed over equal names)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            stat = Path(f"/proc/self/task/{tid}/stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def _descendants() -> tuple[int, float]:
    """(how many processes descend from this one, their CPU seconds so far): torch inductor's
    compile workers, which start beside the run."""
    tick = os.sysconf("SC_CLK_TCK")
    procs = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                st = (p / "stat").read_text()
            except OSError:
                continue
            f = st[st.rindex(")") + 2:].split()
            procs.append((int(p.name), int(f[1]), (int(f[11]) + int(f[12])) / tick))
    mine, frontier = {}, {os.getpid()}
    while frontier:
        nxt = {pid for pid, ppid, _ in procs if ppid in frontier and pid not in mine}
        mine.update({pid: cpu for pid, ppid, cpu in procs if pid in nxt})
        frontier = nxt
    return len(mine), round(sum(mine.values()), 2)


def child(argv: list[str], dump: Path, repeat: bool) -> None:
    import resource

    import harness.backends.base as base
    import harness.runner as runner_mod
    from harness.cli import main as cli_main

    stats: dict[str, list] = {}

    def timed(name, fn):
        def wrapper(*a, **k):
            r0 = resource.getrusage(resource.RUSAGE_THREAD)
            c0, t0 = time.thread_time(), time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                t1, c1 = time.perf_counter(), time.thread_time()
                r1 = resource.getrusage(resource.RUSAGE_THREAD)
                stats.setdefault(name, []).append((1e3 * (t1 - t0), 1e3 * (c1 - c0), r1.ru_nivcsw - r0.ru_nivcsw,
                                                   r1.ru_nvcsw - r0.ru_nvcsw))
        return wrapper

    for cls_name, meth in (("Runner", "host_inputs"), ("Runner", "_generate_batch"), ("Runner", "_record_batch")):
        cls = getattr(runner_mod, cls_name)
        setattr(cls, meth, timed(meth, getattr(cls, meth)))
    for mod_name in ("harness.backends.random_molmoe", "harness.backends.hf", "harness.backends.molmoe"):
        try:
            mod = __import__(mod_name, fromlist=["x"])
        except Exception:  # noqa: BLE001 - a backend this machine cannot import is not timed
            continue
        for part in ("preprocess", "build_input_ids", "left_pad"):
            if callable(getattr(mod, part, None)):
                setattr(mod, part, timed(part, getattr(mod, part)))
    klasses = [c for c in vars(base).values() if isinstance(c, type) and "prepare_detached" in vars(c)]
    for cls in klasses:
        first = timed("prepare_detached", vars(cls)["prepare_detached"])
        again = timed("prepare_detached_repeat", vars(cls)["prepare_detached"])

        def both(self, *a, _first=first, _again=again, **k):
            out = _first(self, *a, **k)
            if repeat:
                _again(self, *a, **k)
            return out
        cls.prepare_detached = both
    loop_start: dict = {}
    gen = runner_mod.Runner._generate_batch

    def first_batch(self, *a, **k):  # the compile workers when the first timed batch starts
        if not loop_start:
            loop_start["procs"], loop_start["cpu_s"] = _descendants()
            loop_start["t_s"] = round(time.perf_counter() - t0, 2)
        return gen(self, *a, **k)
    runner_mod.Runner._generate_batch = first_batch
    thr0, threads0, t0 = _throttled(), _threads(), time.perf_counter()
    rc = 0
    try:
        cli_main(argv)
    except SystemExit as exc:
        rc = int(exc.code or 0)
    wall = time.perf_counter() - t0
    thr1, threads1 = _throttled(), _threads()
    procs, kids_cpu = _descendants()
    import torch

    dump.write_text(json.dumps({
        "rc": rc, "wall_s": wall, "torch_threads": torch.get_num_threads(),
        "throttled": {k: thr1.get(k, 0) - thr0.get(k, 0) for k in thr1}, "cpu_max": _read("/sys/fs/cgroup/cpu.max"),
        "threads_cpu_s": {k: round(v - threads0.get(k, 0.0), 3) for k, v in sorted(threads1.items(), key=lambda x: -x[1])},
        "child_processes": {"at_first_batch": loop_start, "at_end": {"procs": procs, "cpu_s": kids_cpu}},
        "stats": stats}))


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def summarise(name: str, d: dict, folder: Path) -> dict:
    row = {"variant": name, "rc": d.get("rc"), "torch_threads": d.get("torch_threads"), "wall_s": round(d["wall_s"], 2),
           "throttled": d.get("throttled"), "cpu_max": d.get("cpu_max"),
           "top_threads": dict(list(d.get("threads_cpu_s", {}).items())[:6]), "child_processes": d.get("child_processes")}
    try:
        s = json.loads((folder / "summary.json").read_text())
        t = s.get("timing") or {}
        row.update(loop_s=t.get("loop_s"), model_s=round(float(t.get("model_ms") or 0) / 1000, 3),
                   overhead_share=t.get("overhead_share"), warmup_s=t.get("warmup_s"), n=s.get("n"))
    except (OSError, ValueError):
        pass
    parts = {}
    for k, v in d["stats"].items():
        n = len(v)
        parts[k] = {"n": n, "wall_ms": round(sum(x[0] for x in v) / n, 3), "cpu_ms": round(sum(x[1] for x in v) / n, 3),
                    "invol_cs": round(sum(x[2] for x in v) / n, 2), "vol_cs": round(sum(x[3] for x in v) / n, 2),
                    "wall_ms_first10": round(sum(x[0] for x in v[:10]) / max(1, len(v[:10])), 3)}
    row["parts"] = parts
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="random:molmoe-1b")
    ap.add_argument("--task", default="scienceqa")
    ap.add_argument("--knobs", default="14,6")
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--variants", default="off,on,off-omp1,on-omp1,on-omp4,off")
    ap.add_argument("--no-repeat", action="store_true", help="do not repeat prepare_detached (the run as users run it)")
    ap.add_argument("--out", default=os.environ.get("OUT") or str(ROOT / "benchmarks" / "results"))
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--child"]:  # one variant's run, in this process: --child DUMP REPEAT harness-args...
        child(argv[3:], Path(argv[1]), argv[2] == "1")
        return
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, name in enumerate([v.strip() for v in args.variants.split(",") if v.strip()]):
            mode, extra = VARIANTS[name]
            folder, dump = Path(tmp) / f"run{i}", Path(tmp) / f"run{i}.json"
            cmd = [sys.executable, __file__, "--child", str(dump), "0" if args.no_repeat else "1", "run", "--task", args.task,
                   "--knobs", args.knobs, "--model", args.model, "--device", args.device, "--batch-size", "1",
                   "--host-overlap", mode, "--quiet", "--output", str(folder), "--limit", str(args.limit)]
            env = {**os.environ, "PYTHONUNBUFFERED": "1", **extra}
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
            if not dump.exists():
                print(proc.stderr[-3000:], file=sys.stderr)
                rows.append({"variant": name, "rc": proc.returncode, "error": (proc.stderr.strip().splitlines() or ["?"])[-1][:300]})
                continue
            rows.append(summarise(name, json.loads(dump.read_text()), folder))
            print(json.dumps(rows[-1]), flush=True)
    device = "cpu"
    try:
        import torch

        if torch.cuda.is_available() and args.device != "cpu":
            device = torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001
        pass
    env = {"device": device, "model": args.model, "task": args.task, "knobs": args.knobs, "limit": args.limit,
           "cpu_count": os.cpu_count(), "repeat": not args.no_repeat, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "host_in_run.json").write_text(json.dumps({"env": env, "rows": rows}, indent=1))
    md = [f"# Host time inside the main command: {args.model}, {args.task}, {args.knobs}, batch 1, {device}", "",
          "Per step, mean over its calls: wall ms / CPU ms of the calling thread / involuntary context switches.", "",
          "| variant | torch threads | loop s | model s | overhead share | host_inputs | first 10 host_inputs ms | prepare_detached | repeat | preprocess | _generate_batch | _record_batch | child processes: first batch / end (procs, CPU s) | throttled | top threads (CPU s) |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def cell(r, k):
        p = r.get("parts", {}).get(k)
        return f"{p['wall_ms']} / {p['cpu_ms']} / {p['invol_cs']}" if p else "-"
    def kids(r):
        c = r.get("child_processes") or {}
        a, b = c.get("at_first_batch") or {}, c.get("at_end") or {}
        return f"{a.get('procs', '-')}, {a.get('cpu_s', '-')} (at {a.get('t_s', '-')} s) / {b.get('procs', '-')}, {b.get('cpu_s', '-')}"
    for r in rows:
        share = r.get("overhead_share")
        first10 = (r.get("parts", {}).get("host_inputs") or {}).get("wall_ms_first10", "-")
        md.append(f"| {r['variant']} | {r.get('torch_threads')} | {r.get('loop_s')} | {r.get('model_s')} | "
                  f"{'-' if share is None else f'{100 * share:.1f}%'} | {cell(r, 'host_inputs')} | {first10} | {cell(r, 'prepare_detached')} | "
                  f"{cell(r, 'prepare_detached_repeat')} | {cell(r, 'preprocess')} | {cell(r, '_generate_batch')} | "
                  f"{cell(r, '_record_batch')} | {kids(r)} | {r.get('throttled')} | {r.get('top_threads')} |")
    (out / "host_in_run.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
