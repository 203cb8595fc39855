"""Where a run ran: the identity of the device that timed it.

``device_identity("cpu")`` names the processor (model name from ``/proc/cpuinfo``, else the
platform), its core and thread counts; ``device_identity("cuda:1")`` names the GPU of that index,
its driver and the torch/CUDA versions. ``identity_key`` turns an identity into a short stable
string (``cpu-<model>-<cores>c`` or ``cuda-<card>``): two runs, two latency fits or a gate
comparison are "the same environment" only when their keys are equal.
"""

from __future__ import annotations

import os
import platform
import re
from functools import lru_cache

IDENTITY_KEYS = ("kind", "name", "cores", "threads", "driver", "torch", "cuda")


def _slug(text) -> str:
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-") or "x"


def _cpuinfo_field(field: str) -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() == field and value.strip():
                    return value.strip()
    except OSError:
        return None
    return None


def cpu_name() -> str:
    """The processor's model name: ``/proc/cpuinfo`` (x86 ``model name``, some ARM ``Model``), then
    the platform module, then the machine architecture."""
    for field in ("model name", "Model", "Hardware", "cpu model"):
        name = _cpuinfo_field(field)
        if name:
            return " ".join(name.split())
    return platform.processor() or platform.machine() or "unknown cpu"


def cpu_cores() -> int:
    """CPUs this process may run on (the affinity mask, which containers and ``taskset`` narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _torch_versions() -> tuple[str | None, str | None]:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return None, None
    return str(torch.__version__), getattr(torch.version, "cuda", None)


def _nvidia_driver() -> str | None:
    try:
        with open("/proc/driver/nvidia/version", encoding="utf-8") as fh:
            m = re.search(r"Kernel Module\s+([0-9.]+)", fh.read())
            if m:
                return m.group(1)
    except OSError:
        pass
    try:
        import pynvml  # type: ignore[import-not-found]

        pynvml.nvmlInit()
        v = pynvml.nvmlSystemGetDriverVersion()
        return v.decode() if isinstance(v, bytes) else str(v)
    except Exception:
        return None


@lru_cache(maxsize=None)
def _identity(device: str) -> tuple:
    torch_v, cuda_v = _torch_versions()
    dev = str(device or "cpu").strip().lower()
    if dev.startswith("cuda"):
        name = "cuda"
        try:
            import torch

            index = torch.device(dev).index
            name = torch.cuda.get_device_name(torch.cuda.current_device() if index is None else index)
        except Exception:
            pass
        return (("kind", "cuda"), ("name", name), ("cores", None), ("threads", None),
                ("driver", _nvidia_driver()), ("torch", torch_v), ("cuda", cuda_v))
    threads = None
    try:
        import torch

        threads = int(torch.get_num_threads())
    except Exception:
        pass
    return (("kind", "cpu"), ("name", cpu_name()), ("cores", cpu_cores()), ("threads", threads),
            ("driver", None), ("torch", torch_v), ("cuda", cuda_v))


def device_identity(device: str) -> dict:
    """``{kind, name, cores, threads, driver, torch, cuda}`` for ``device`` (``cpu``, ``cuda``,
    ``cuda:N``). CPU: ``cores`` = CPUs this process may use, ``threads`` = torch's intra-op threads;
    GPU: ``cores``/``threads`` are None, ``driver`` the NVIDIA driver version when readable."""
    return dict(_identity(str(device or "cpu").strip().lower()))


def identity_key(ident: dict) -> str:
    """A short stable string for an identity: ``cpu-<name>-<cores>c`` for a CPU, ``cuda-<name>``
    for a GPU. Versions and thread counts are left out (they are recorded, not part of the key)."""
    kind = str(ident.get("kind") or "cpu")
    name = _slug(re.sub(r"\((r|tm)\)", " ", str(ident.get("name") or "unknown"), flags=re.I))
    if kind == "cpu":
        return f"cpu-{name}-{int(ident.get('cores') or 0)}c"
    return f"{_slug(kind)}-{name}"
