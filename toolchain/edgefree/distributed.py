"""Synthesis, refit and distillation over several processes with ``torch.distributed``.

A build launched by ``torchrun`` (or by ``edgefree build --workers N``, which starts
torchrun's launcher on this machine) runs the same stages on every rank:

* synthesis: a fixed number of shards, set by the config and not by the world size; rank r
  dreams shards r, r + N, ...; the shards are gathered to every rank;
* refit: each rank accumulates the Gram matrices over its share of the images; an all-reduce
  sums them, so every rank solves the same system;
* distillation: DistributedDataParallel over the synthetic set, a distributed sampler, the
  masks re-applied on every rank, BatchNorm frozen (no SyncBatchNorm is needed: nothing
  updates its statistics); the final student is checked to be the same on every rank.

Rank 0 alone writes outputs. Every function here is a no-op, or the one-process answer,
when the process group is not initialized, so a plain ``edgefree build`` is unchanged.

Fault injection for tests only: ``EDGEFREE_FAULT=RANK:STAGE:KIND`` makes rank RANK, on
entering STAGE ("synthesize", "reconstruct", "distill"), raise (KIND "raise"), exit at once
without cleanup ("exit") or sleep forever ("hang").
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
import signal
import time
import uuid
from dataclasses import dataclass
from typing import Callable

import torch
import torch.distributed as dist
from torch import nn

from edgefree.digests import state_sha256
from edgefree.errors import EdgefreeError, Interrupted, first_line, raise_interrupted

DEFAULT_TIMEOUT_S = 1800  # PyTorch's default process-group timeout


@dataclass(frozen=True)
class World:
    """Where this process stands: its rank among ``size`` processes, and on its machine."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    backend: str | None = None

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes outputs."""
        return self.rank == 0


def world() -> World:
    """This process's ``World`` (rank 0 of 1 when no process group is initialized)."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)),
                 int(os.environ.get("LOCAL_WORLD_SIZE", 1)), dist.get_backend())


def _launched() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def threads_per_rank(threads: int | None = None, ranks_here: int | None = None) -> int:
    """``threads`` if set, else this machine's cores shared out among its ranks (``LOCAL_WORLD_SIZE``)."""
    if threads:
        return threads
    from edgefree.resources import cores

    return max(1, cores() // (ranks_here or int(os.environ.get("LOCAL_WORLD_SIZE", 1))))


def check_device(device: str, processes: int = 1) -> None:
    """Refuse ``device`` "cuda" where PyTorch sees no GPU, or fewer GPUs than ``processes`` (one each)."""
    if not device.startswith("cuda"):
        return
    found = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if found == 0:
        raise EdgefreeError("--device cuda: PyTorch sees no CUDA GPU on this machine (torch.cuda.is_available() is "
                            "False): leave --device out to compute on the CPU, or run where a GPU and a CUDA build "
                            "of torch are")
    if found < processes:
        raise EdgefreeError(f"--device cuda with {processes} processes needs a GPU each, and PyTorch sees {found}: "
                            f"pass --workers {found} or fewer")


@contextlib.contextmanager
def session(device: str = "cpu", threads: int | None = None, timeout_s: float = DEFAULT_TIMEOUT_S):
    """Join the process group when launched by torchrun (gloo on CPU, nccl on CUDA; each rank on
    ``cuda:LOCAL_RANK``), use this rank's share of the cores; left on exit.

    Yields ``(World, device)``: the device this rank computes on. Outside torchrun (one process)
    nothing is initialized and ``device`` is returned as given.
    """
    check_device(device, int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
    before = torch.get_num_threads()
    if _launched() or threads:
        torch.set_num_threads(threads_per_rank(threads))
    joined = _launched() and not dist.is_initialized()
    if joined:
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    try:
        yield world(), _rank_device(device)
    finally:
        if joined:
            dist.destroy_process_group()
        torch.set_num_threads(before)


def _rank_device(device: str) -> str:
    if device == "cuda" and _launched():
        return f"cuda:{os.environ.get('LOCAL_RANK', 0)}"
    return device


@contextlib.contextmanager
def stage(name: str, timeout_s: float = DEFAULT_TIMEOUT_S):
    """Around one pipeline stage: the test-only fault hook, and a process-group timeout told as one
    clear line (the other ranks stopped answering: one hangs or died)."""
    _maybe_fail(name)
    try:
        yield
    except (RuntimeError, dist.DistError) as exc:
        timeout = _is_timeout(exc)
        if world().size > 1 and (timeout or _is_lost(exc)):
            said = first_line(exc) or type(exc).__name__
            if timeout:
                raise EdgefreeError(
                    f"rank {world().rank} waited over {timeout_s:g} s for the other ranks in stage {name}: one of "
                    f"them hangs or died. If the stage is merely slow, raise --dist-timeout. ({said})") from exc
            raise EdgefreeError(f"rank {world().rank} lost the other ranks in stage {name}: one of them died or "
                                f"stopped ({said})") from exc
        raise


def _is_timeout(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "timed out" in text or "timeout" in text


def _is_lost(exc: BaseException) -> bool:
    """A process group's error that is no timeout: a peer's connection closed or reset (it died, or stopped)."""
    return isinstance(exc, dist.DistError) or "connection closed" in str(exc).lower()


def _maybe_fail(stage_name: str) -> None:
    fault = os.environ.get("EDGEFREE_FAULT")
    if not fault:
        return
    rank, where, kind = fault.split(":")
    if int(rank) != world().rank or where != stage_name:
        return
    if kind == "exit":
        os._exit(3)
    if kind == "hang":
        while True:
            time.sleep(1)
    raise RuntimeError(f"fault injected by EDGEFREE_FAULT={fault}")


# --- collectives (one process: the value itself) -----------------------------------------

def all_reduce_sum(*tensors: torch.Tensor) -> None:
    """Sum each tensor over the ranks, in place."""
    if world().size > 1:
        for t in tensors:
            dist.all_reduce(t)


def sum_over_ranks(value: float) -> float:
    """A number summed over the ranks."""
    if world().size == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(t)
    return t.item()


def all_gather(value) -> list:
    """Every rank's ``value`` (any picklable object), in rank order, on every rank."""
    if world().size == 1:
        return [value]
    gathered = [None] * world().size
    dist.all_gather_object(gathered, value)
    return gathered


def broadcast(value):
    """Rank 0's ``value``, on every rank."""
    if world().size == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _collective_device() -> str:
    return f"cuda:{torch.cuda.current_device()}" if world().backend == "nccl" else "cpu"


# --- work sharing ------------------------------------------------------------------------

def my_shards(count: int) -> range:
    """The shards (of ``count``) this rank works on: r, r + N, ..."""
    w = world()
    return range(w.rank, count, w.size)


def shard_seed(seed: int, shard: int) -> int:
    """A seed for shard ``shard`` of a job seeded ``seed``: the same whatever the world size."""
    return int.from_bytes(hashlib.sha256(f"edgefree:{seed}:{shard}".encode()).digest()[:8], "little") >> 1


def rank_batches(images: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """This rank's batches of ``images``: batches r, r + N, ... (smaller batches where there would
    be fewer batches than ranks, so that every rank gets one)."""
    w = world()
    if w.size > 1:
        batch_size = max(1, min(batch_size, -(-len(images) // w.size)))
    return list(images.split(batch_size))[w.rank::w.size]


class EpochBatches:
    """Index batches for one epoch of distillation over ``n`` images, ``batch_size`` per step in all.

    One process: a random permutation from ``generator``, split into batches. Several: each rank
    draws its part of a permutation shared by all ranks (``DistributedSampler``), in batches of
    ``batch_size / N``, so a step still sees ``batch_size`` images and the schedule is unchanged.
    """

    def __init__(self, n: int, batch_size: int, generator: torch.Generator, seed: int = 0):
        from torch.utils.data import DistributedSampler

        w = world()
        self.n, self.generator = n, generator
        self.batch_size = batch_size if w.size == 1 else max(1, -(-batch_size // w.size))
        self.sampler = DistributedSampler(range(n), w.size, w.rank, shuffle=True, seed=seed) if w.size > 1 else None
        self.per_rank = len(self.sampler) if self.sampler else n  # images this rank sees per epoch

    def __len__(self) -> int:
        return -(-self.per_rank // self.batch_size)

    def epoch(self, epoch: int) -> list[torch.Tensor]:
        if self.sampler is None:
            return list(torch.randperm(self.n, generator=self.generator).split(self.batch_size))
        self.sampler.set_epoch(epoch)
        return list(torch.tensor(list(self.sampler)).split(self.batch_size))

    def mean(self, total: float) -> float:
        """An epoch's mean loss over every rank's images, from this rank's ``total`` (loss x images)."""
        return sum_over_ranks(total) / (self.per_rank * world().size)


def rank_seed(seed: int) -> int:
    """``seed`` in one process; a seed of its own on each rank of several (augmentations differ)."""
    return seed if world().size == 1 else shard_seed(seed, -1 - world().rank)


def data_parallel(model: nn.Module) -> nn.Module:
    """``model`` wrapped in DistributedDataParallel when several ranks train it (gradients averaged
    at every step), else ``model`` itself. Buffers are not broadcast: BatchNorm is frozen."""
    w = world()
    if w.size == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device = next(model.parameters()).device
    # frozen BatchNorm: no buffer changes, nothing to send at each step
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                   forward_sync_buffers=False)


def checksum(model: nn.Module) -> str:
    """A short hash of every tensor in ``model``'s state."""
    return state_sha256(model.state_dict(), ordered=True).hexdigest()[:16]


def require_same_model(model: nn.Module, what: str = "student") -> None:
    """Raise ``EdgefreeError`` unless ``model`` is bit for bit the same on every rank."""
    if world().size == 1:
        return
    sums = all_gather(checksum(model))
    if len(set(sums)) > 1:
        raise EdgefreeError(f"the {what} differs between ranks (checksums {', '.join(sums)}): the ranks did not "
                            "train in step; run with one process and report this")


# --- launching ---------------------------------------------------------------------------

def launch(fn: Callable, *args, workers: int, threads: int | None = None):
    """Run ``fn(*args)`` in ``workers`` processes on this machine through torchrun's launcher (one node,
    no restarts) and return rank 0's result.

    Raises ``EdgefreeError`` naming the rank that failed first and its error, or its signal when it died.
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if workers < 1:
        raise EdgefreeError(f"--workers must be >= 1, got {workers}")
    if _launched():
        raise EdgefreeError("--workers starts its own processes, and this one already runs under torchrun: "
                            "leave --workers out (torchrun's --nproc-per-node says how many)")
    per_rank = threads_per_rank(threads, workers)
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=workers, run_id=f"edgefree-{uuid.uuid4().hex[:8]}",
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.1,
                          start_method="spawn")
    saved = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(per_rank)  # the children's OpenMP pools, sized at start
    handlers = {sig: signal.getsignal(sig) for sig in _LAUNCHER_SIGNALS}  # the launcher replaces them for good
    try:
        results = elastic_launch(config, _interruptible)(fn, *args)
    except SignalException as exc:  # Ctrl-C or SIGTERM: the launcher passed it on to every rank, which cleaned up
        raise Interrupted(signal.Signals(exc.sigval)) from None
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        raise EdgefreeError(f"rank {rank} of {workers} failed: {describe_failure(failure)}") from None
    finally:
        if saved is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = saved
        for sig, handler in handlers.items():
            if handler is not None:  # None: a handler not set from Python, which Python cannot put back
                signal.signal(sig, handler)
    return results[0]


_LAUNCHER_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


def _interruptible(fn: Callable, *args):
    """``fn(*args)`` in a rank; rank 0, which holds the output folder's lock and staging folder, ends on SIGTERM
    as on Ctrl-C (KeyboardInterrupt), through its cleanup (the launcher sends each rank the signal that stopped
    it, or SIGTERM when another rank failed). The other ranks keep SIGTERM's default: they end at once."""
    if int(os.environ.get("RANK", "0")) == 0:
        signal.signal(signal.SIGTERM, raise_interrupted)
    return fn(*args)


def describe_failure(failure) -> str:
    """One line for a torchrun ``ProcessFailure``: the rank's exception, or how it ended."""
    message = failure.message
    if isinstance(message, dict):
        message = message.get("message", "")
    if failure.exitcode < 0:
        return f"it died on signal {failure.signal_name()}"
    if not message or message.startswith("To enable traceback"):
        return f"it exited with status {failure.exitcode} (its own output above says why)"
    message = message.strip().splitlines()[-1]
    return message.removeprefix("EdgefreeError: ")  # its own text already names the rank
