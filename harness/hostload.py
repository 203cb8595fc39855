"""How busy the CPU was while a run measured latency on it.

On a CPU, measured latency is wall time: when other processes want more CPUs than the machine
has (the load average above the number of usable CPUs), a run's samples wait for a CPU and every
measured figure grows, while the estimator, fitted on a quieter machine, does not. The run then
reports an estimator error (MAPE) that says more about the neighbours than about the estimator.
A run records the load around its measurements and, when the machine was busy, says so in a note
next to the figures instead of presenting them as the machine's speed.
"""

from __future__ import annotations

import os


def cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def load_1m() -> float | None:
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return None


def host_load(start: float | None, end: float | None, device: str) -> dict:
    """``{"load_1m": [start, end], "cpus", "busy"}``; ``busy`` when the device is the CPU and the
    1-minute load average exceeded the usable CPUs at either end of the measurements."""
    n = cpus()
    seen = [x for x in (start, end) if x is not None]
    busy = str(device).startswith("cpu") and bool(seen) and max(seen) > n
    return {"load_1m": [start, end], "cpus": n, "busy": busy}


def busy_note(load: dict) -> str | None:
    if not load.get("busy"):
        return None
    peak = max(x for x in load["load_1m"] if x is not None)
    return (f"the CPU was busy during this run (load average {peak:.1f} on {load['cpus']} CPUs): measured latency "
            "includes waiting for a CPU, so it and the estimator error overstate what this machine does when idle; "
            "re-run on an idle machine for latency figures (scores are unaffected)")
