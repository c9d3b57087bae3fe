"""Every collective of the codebase goes through here, and refuses a tensor that is not on the accelerator's device.

Under NCCL a CPU tensor handed to a collective fails deep inside the process group (or hangs the other ranks); under
gloo, where the CPU tests run, it passes silently. So every call checks first, on every backend, and says which
tensor was where: the 2-process CPU test then proves no collective ever receives a tensor from another device
(tests/tuner/test_tune_multiprocess.py also fails any torch.distributed collective made outside this module).

    from vrlhf import collectives
    everyone = collectives.gather(accelerator, rewards)          # instead of accelerator.gather(rewards)
"""

from __future__ import annotations

from collections import Counter
from contextlib import contextmanager

import torch

# DDP's default bucket: big enough that the per-call latency is amortised, small enough that the flat copy is cheap
BUCKET_BYTES = 25 * 2**20

CALLS: Counter = Counter()  # collective name -> calls in this process (the multi-process test reads it)
_depth = 0  # > 0 while a collective of this module runs (a test's tripwire on torch.distributed reads it)


class CollectiveDeviceError(RuntimeError):
    """A tensor on another device than the accelerator's was about to enter a collective."""


def check_device(accelerator, tensors, what: str) -> None:
    """Raise CollectiveDeviceError unless every tensor in `tensors` (a tensor or a nested tuple/list/dict of them) is
    on `accelerator.device`."""
    want = torch.device(accelerator.device)
    for tensor in _tensors(tensors):
        here = tensor.device  # CPU tensors carry no index, where Accelerate names a CPU process's device cpu:0
        if here.type != want.type or (here.index is not None and want.index is not None and here.index != want.index):
            raise CollectiveDeviceError(
                f"{what}: a {tuple(tensor.shape)} tensor on {tensor.device} was handed to a collective, but the "
                f"accelerator's device is {accelerator.device}: build it there, or .to(accelerator.device) first")


def inside() -> bool:
    """Whether a collective of this module is running now (what a test's tripwire on torch.distributed checks)."""
    return _depth > 0


def gather(accelerator, tensor: torch.Tensor) -> torch.Tensor:
    """`accelerator.gather`: every rank's tensor, concatenated along dim 0."""
    with _guarded(accelerator, "gather", tensor):
        return accelerator.gather(tensor)


def gather_for_metrics(accelerator, data):
    """`accelerator.gather_for_metrics`: as gather, less the samples a prepared loader duplicated to even the ranks."""
    with _guarded(accelerator, "gather_for_metrics", data):
        return accelerator.gather_for_metrics(data)


def reduce(accelerator, tensor: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """`accelerator.reduce`: the sum or mean over ranks (a new tensor)."""
    with _guarded(accelerator, "reduce", tensor):
        return accelerator.reduce(tensor, reduction=reduction)


def broadcast_object(accelerator, obj, src: int = 0):
    """Rank `src`'s picklable `obj` on every rank (torch puts the pickled bytes on the right device itself)."""
    if accelerator.num_processes == 1:
        return obj
    with _guarded(accelerator, "broadcast_object", None):
        holder = [obj]
        torch.distributed.broadcast_object_list(holder, src=src)
        return holder[0]


def all_reduce_mean_(accelerator, tensors: list[torch.Tensor], bucket_bytes: int = BUCKET_BYTES) -> None:
    """Average `tensors` over ranks in place, in buckets of about `bucket_bytes` (DDP's scheme without its wrapper).

    A tensor as big as a bucket is reduced in place (no copy); smaller ones are flattened into one buffer per bucket,
    so at most two buckets' copies exist at once, not a copy of every gradient. Reductions run asynchronously: the
    next bucket is flattened while the previous one is on the wire."""
    world = accelerator.num_processes
    if world == 1 or not tensors:
        return
    with _guarded(accelerator, "all_reduce", tensors):
        in_flight = []
        for bucket in buckets(tensors, bucket_bytes):
            alone = len(bucket) == 1 and bucket[0].is_contiguous()
            flat = bucket[0] if alone else torch._utils._flatten_dense_tensors(bucket)
            in_flight.append((torch.distributed.all_reduce(flat, async_op=True), flat, bucket, alone))
            if len(in_flight) > 2:
                _finish(*in_flight.pop(0), world)
        for pending in in_flight:
            _finish(*pending, world)


def buckets(tensors: list[torch.Tensor], bucket_bytes: int = BUCKET_BYTES) -> list[list[torch.Tensor]]:
    """Consecutive tensors grouped into lists of one dtype and at most `bucket_bytes` (a bigger tensor: alone)."""
    out, size = [], 0
    for tensor in tensors:
        nbytes = tensor.numel() * tensor.element_size()
        if not out or out[-1][0].dtype != tensor.dtype or size + nbytes > bucket_bytes:
            out.append([])
            size = 0
        out[-1].append(tensor)
        size += nbytes
    return out


def _finish(work, flat: torch.Tensor, bucket: list[torch.Tensor], alone: bool, world: int) -> None:
    work.wait()
    flat.div_(world)
    if not alone:
        for tensor, averaged in zip(bucket, torch._utils._unflatten_dense_tensors(flat, bucket)):
            tensor.copy_(averaged)


@contextmanager
def _guarded(accelerator, name: str, tensors):
    global _depth
    check_device(accelerator, tensors, name)
    CALLS[name] += 1
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1


def _tensors(data):
    if torch.is_tensor(data):
        yield data
    elif isinstance(data, (list, tuple)):
        for item in data:
            yield from _tensors(item)
    elif isinstance(data, dict):
        for item in data.values():
            yield from _tensors(item)
