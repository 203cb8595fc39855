"""One harness job on many processes: the torchrun world, its process group and the few messages
the ranks exchange.

``torchrun`` (``python -m torch.distributed.run``) starts the processes and sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``; on several
nodes its c10d rendezvous finds the peers. :func:`setup` joins the process group through ``env://``:
``cuda:nccl`` for device tensors plus ``cpu:gloo`` on GPU, ``gloo`` on CPU. Everything the harness
exchanges is a small Python object (a plan, a summary, a status), so it goes through gloo on the CPU,
where a collective that waits longer than ``--dist-timeout`` raises a clean error instead of aborting
the process. Each rank uses ``cuda:LOCAL_RANK``.

A job of one process (no torchrun, or ``--nproc-per-node 1``) has no world: every function here is
then a no-op and the harness runs exactly as a plain ``harness run``.

Failures: a rank that dies makes torchrun stop the others (SIGTERM), which rank 0 reports as one
line; a message that does not come within ``--dist-timeout`` (a plan, a merge, a summary) or a
collective that fails becomes a :class:`DistributedError` naming the rank, the step and the fix.
Waiting for another rank to finish its share of the work is not bounded by ``--dist-timeout``
(shares may take hours), only by WORK_TIMEOUT_S. Nothing is lost either way: finished samples are on disk and the same command,
with any number of processes, resumes.
"""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable

from harness.errors import HarnessError

DEFAULT_TIMEOUT_MIN = 30.0
WORK_TIMEOUT_S = 7 * 24 * 3600.0  # how long a rank that finished its share waits for the others
RESUME_HINT = "finished samples are kept: re-run the same command (with any number of processes) to resume"


class DistributedError(HarnessError):
    """A failure of the job as a whole. ``shared`` errors are rank 0's, re-raised on the other ranks
    so that every process stops; only rank 0 prints those."""

    def __init__(self, message: str, shared: bool = False):
        super().__init__(message)
        self.shared = shared


@dataclass
class World:
    rank: int
    size: int
    local_rank: int
    local_size: int
    timeout_s: float
    device: str = "cpu"  # this rank's device (cuda:LOCAL_RANK on GPU)
    group: Any = None  # the gloo group for objects
    wait_group: Any = None  # the gloo group in which ranks wait for each other's work (WORK_TIMEOUT)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # -- messages -------------------------------------------------------------------------------
    def _call(self, what: str, fn: Callable[[], Any]):
        try:
            return fn()
        except HarnessError:
            raise
        except (RuntimeError, ValueError, ConnectionError, OSError) as exc:
            first = _first_line(exc)
            # rank 0 says it; another rank only when it waited in vain (a rank 0 that died said why itself)
            raise DistributedError(f"rank {self.rank} of {self.size}: {what} failed ({first}); another rank failed or "
                                   f"stopped responding within --dist-timeout {self.timeout_s / 60:g} min; {RESUME_HINT}",
                                   shared=not self.is_main and "timed out" not in first.lower())

    def from_main(self, what: str, fn: Callable[[], Any]):
        """Rank 0 computes ``fn()`` and every rank returns its value; an error on rank 0 (a
        ``HarnessError`` or a crash) is raised on every rank, so no rank waits for a message that
        never comes. A value that cannot be pickled (an estimator holding a closure) is computed
        by every other rank itself, after rank 0."""
        import torch.distributed as dist

        box: list[Any] = [None]
        failure, mine = None, None
        if self.is_main:
            try:
                mine = fn()
                box[0] = ("ok", mine) if _picklable(mine) else ("local", None)
            except HarnessError as exc:
                failure, box[0] = exc, ("error", str(exc))
            except Exception as exc:
                failure, box[0] = exc, ("error", f"rank 0: {what} failed: {type(exc).__name__}: {exc}")
        self._call(what, lambda: dist.broadcast_object_list(box, src=0, group=self.group))
        status, value = box[0]
        if status == "error":
            if failure is not None:
                raise failure
            raise DistributedError(value, shared=True)
        if status == "local":
            return mine if self.is_main else fn()
        return value

    def gather(self, what: str, obj: Any, after_work: bool = False) -> list[Any] | None:
        """Every rank's ``obj`` on rank 0 (in rank order); None elsewhere. ``after_work``: ranks
        that finished their share wait for the slowest one (bounded by WORK_TIMEOUT, not
        --dist-timeout: a share may take hours; a rank that dies ends the job through torchrun)."""
        import torch.distributed as dist

        out = [None] * self.size if self.is_main else None
        group = self.wait_group if after_work else self.group
        self._call(what, lambda: dist.gather_object(obj, out, dst=0, group=group))
        return out

    def barrier(self, what: str) -> None:
        import torch.distributed as dist

        self._call(what, lambda: dist.barrier(group=self.group))


def main_first(world: World | None, what: str, fn: Callable[[], Any]) -> None:
    """``fn()`` on rank 0 first (its error stops every rank), then on the other ranks; without a
    world just ``fn()``."""
    if world is not None:
        world.from_main(what, fn)
        if world.is_main:
            return
    fn()


_WORLD: World | None = None
_REPORTED = False  # this process has reported why the job ends


def _picklable(obj: Any) -> bool:
    import pickle

    try:
        pickle.dumps(obj)
        return True
    except Exception:
        return False


def _first_line(exc: BaseException) -> str:
    """The gist of a torch.distributed error: its first sentence, without gloo's source location."""
    import re

    text = re.sub(r"\[[^\]]*\.(cc|cpp|h):\d+\]\s*", "", str(exc).strip()) or type(exc).__name__
    text = text.splitlines()[0]
    return (text.split(". ")[0] if ". " in text else text)[:160]


def current() -> World | None:
    return _WORLD


def is_main_process() -> bool:
    """True outside torchrun and on rank 0 (read from the environment: valid before :func:`setup`)."""
    return int(os.environ.get("RANK", "0") or 0) == 0


def _env_int(name: str, default: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        if default is None:
            raise HarnessError(f"WORLD_SIZE is set but {name} is not; start the job with torchrun "
                               f"(python -m torch.distributed.run) or set {name}")
        return default
    try:
        return int(raw)
    except ValueError:
        raise HarnessError(f"environment variable {name}={raw!r} is not an integer; start the job with torchrun")


def rank_device(device: str, local_rank: int, local_size: int) -> str:
    """The device a rank uses: ``cuda`` -> ``cuda:LOCAL_RANK``; CPU stays CPU."""
    if not device.startswith("cuda"):
        return device
    if ":" in device:
        if local_size > 1:
            raise HarnessError(f"--device {device} under torchrun with {local_size} processes per node would put them all "
                               "on one GPU; pass --device cuda (each rank uses cuda:LOCAL_RANK)")
        return device
    return f"cuda:{local_rank}"


def setup(device: str, timeout_min: float | None = None) -> World | None:
    """Join the torchrun job (once per process); None for a job of one process."""
    global _WORLD
    size = _env_int("WORLD_SIZE", 1)
    if size <= 1:
        return None
    if _WORLD is not None:
        return _WORLD
    import torch
    import torch.distributed as dist

    rank, local_rank = _env_int("RANK"), _env_int("LOCAL_RANK")
    local_size = _env_int("LOCAL_WORLD_SIZE", size)
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(name):
            raise HarnessError(f"WORLD_SIZE={size} but {name} is not set; start the job with torchrun "
                               "(python -m torch.distributed.run)")
    timeout_s = float(timeout_min if timeout_min is not None else DEFAULT_TIMEOUT_MIN) * 60.0
    dev = rank_device(device, local_rank, local_size)
    timeout = timedelta(seconds=timeout_s)
    if dev.startswith("cuda"):
        if local_rank >= torch.cuda.device_count():
            raise HarnessError(f"LOCAL_RANK {local_rank} but this node has {torch.cuda.device_count()} GPU(s); "
                               "pass --nproc-per-node at most the number of GPUs")
        torch.cuda.set_device(int(dev.split(":")[1]))
        backend = "cpu:gloo,cuda:nccl"
    else:
        backend = "gloo"
    try:
        if not dist.is_initialized():
            dist.init_process_group(backend, init_method="env://", timeout=timeout)
        group = dist.new_group(backend="gloo", timeout=timeout) if "nccl" in backend else None
        wait_group = dist.new_group(backend="gloo", timeout=timedelta(seconds=max(WORK_TIMEOUT_S, timeout_s)))
    except (RuntimeError, ValueError, ConnectionError) as exc:
        first = _first_line(exc)
        raise HarnessError(f"rank {rank}: joining the torchrun job failed ({first}); check MASTER_ADDR/--rdzv-endpoint "
                           "and that every node runs the same command")
    _WORLD = World(rank, size, local_rank, local_size, timeout_s, dev, group, wait_group)
    _install_sigterm(_WORLD)
    import atexit

    atexit.register(teardown)
    return _WORLD


def teardown() -> None:
    global _WORLD
    if _WORLD is None:
        return
    _WORLD = None
    try:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
    except Exception:  # tearing down after a failed peer: nothing left to save
        pass


def _install_sigterm(world: World) -> None:
    """torchrun stops the surviving workers with SIGTERM when one fails: rank 0 says so in one line
    (the failed rank's own error is printed by that rank and torchrun names it). The exit is a
    SystemExit, which no per-sample error handling catches; open files are closed on the way out."""
    def handler(signum, frame):
        global _REPORTED
        if world.is_main and not _REPORTED:  # one line: not after rank 0 has said why it stops
            _REPORTED = True
            print(f"error: stopped by torchrun: another rank of this job failed, or timed out waiting for this one "
                  f"(torchrun names it); {RESUME_HINT}",
                  file=sys.stderr, flush=True)
        raise SystemExit(128 + signum)

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (e.g. an embedding application): keep the default
        pass


def should_report(exc: BaseException) -> bool:
    """Whether this process prints ``exc``: rank 0 always; another rank only its own failures once it
    has joined the job (before that every rank validates the same command, and rank 0 says it)."""
    global _REPORTED
    if is_main_process():
        _REPORTED = True
        return True
    return _WORLD is not None and not getattr(exc, "shared", False)


def error_prefix(exc: BaseException) -> str:
    return "" if is_main_process() or str(exc).startswith("rank ") else f"rank {os.environ.get('RANK')}: "
