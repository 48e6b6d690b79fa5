"""Several workers: PyTorch's elastic launcher (torchrun's engine, c10d rendezvous) and DistributedDataParallel.

`tenfold train --devices N` launches N copies of the same `tenfold train` command (each told its RANK,
LOCAL_RANK and WORLD_SIZE), exactly as `torchrun --nproc-per-node N -m tenfold train ...` does; either way each
worker joins the process group here. The global batch is `--batch-size`, split evenly: with the same flags, N
workers take the same optimiser steps on the same number of images as one device, so the learning rate needs no
change. Each worker keeps 1/N of the training images on its device; losses and accuracies are summed across
workers, so the epoch line reads as on one device. Only rank 0 prints and writes the run directory.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from tenfold.data import ImageSet
from tenfold.errors import ConfigError


@dataclass(frozen=True)
class Place:
    """Where this process stands among the workers."""
    rank: int = 0        # 0 .. world-1, across every machine
    world: int = 1       # how many workers in all
    local_rank: int = 0  # index on this machine: the GPU it uses

    @property
    def main(self) -> bool:
        return self.rank == 0


ALONE = Place()


def launched() -> Place | None:
    """This worker's place when a launcher (tenfold's or torchrun) started it, else None."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    env = os.environ
    return Place(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", env["RANK"])))


def worker_device(name: str, place: Place) -> torch.device:
    """A launched worker's device: its own GPU (LOCAL_RANK) for auto/cuda, else the CPU."""
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: no CUDA GPU is available here (use --device cpu for CPU workers)")
    if place.local_rank >= torch.cuda.device_count():
        raise ConfigError(f"worker {place.local_rank} has no GPU: this machine has {torch.cuda.device_count()}")
    torch.cuda.set_device(place.local_rank)
    torch.backends.cudnn.benchmark = True
    return torch.device("cuda", place.local_rank)


def join(place: Place, device: torch.device) -> None:
    """Join the process group: NCCL between GPUs, gloo between CPU workers."""
    if dist.is_initialized():
        return
    if device.type == "cpu" and os.environ.get("MASTER_ADDR", "").startswith(("127.", "localhost")):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # one machine: gloo over loopback, whatever the hostname
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", store=attempt_store(place),
                            rank=place.rank, world_size=place.world)


def attempt_store(place: Place) -> dist.Store:
    """The launcher's key-value store, with keys of this attempt only: after a restart the workers must not read
    the addresses their failed predecessors published there (they would connect to dead ports)."""
    agent_hosts_it = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"  # else rank 0 hosts it, as torch does
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), place.world,
                          is_master=place.main and not agent_hosts_it)
    return dist.PrefixStore(f"tenfold/attempt-{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)


def leave(finished: bool) -> None:
    """Leave the group; a worker that finished waits for the others first (gloo aborts a process whose peer
    closes the connection under it). After a failure, nobody waits or tears down: the launcher stops everyone."""
    if dist.is_initialized() and finished:
        dist.barrier()
        dist.destroy_process_group()


def shard(data: ImageSet, place: Place, equal: bool) -> ImageSet:
    """Every world-th image from rank; `equal` trims the remainder so every worker takes the same number of
    steps (training: an image or a few per epoch sit out, as DistributedSampler's drop_last does)."""
    if place.world == 1:
        return data
    index = np.arange(place.rank, len(data), place.world)
    if equal:
        index = index[: len(data) // place.world]
    return data.subset(index)


def local_batch(batch_size: int, world: int) -> int:
    if batch_size % world:
        raise ConfigError(f"--batch-size {batch_size} must be a multiple of the {world} workers (it is the global batch)")
    return batch_size // world


def all_sum(t: torch.Tensor) -> torch.Tensor:
    """The sum over every worker (the tensor itself when there is one)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        t = t.clone()
        dist.all_reduce(t)
    return t


def from_rank0(obj):
    """Rank 0's `obj` on every worker (one broadcast), e.g. its measured fast path, so that all workers compute
    alike; `obj` itself on a process on its own."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def wrap(model: torch.nn.Module, device: torch.device, place: Place) -> torch.nn.Module:
    """DistributedDataParallel: gradients averaged across workers in buckets, overlapped with the backward pass;
    rank 0's parameters and buffers are broadcast first, so every worker starts from the same weights."""
    from torch.nn.parallel import DistributedDataParallel
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
