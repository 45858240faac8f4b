"""Running under torchrun: ranks, devices, sharing work out, and agreeing on success.

A plain ``python script.py`` is a world of one: every helper here then does the obvious
single-process thing, so the scripts have one code path.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist

from utils.device import prepare_device, resolve_device
from utils.errors import UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class World:
    """This process's place among the ranks (rank 0 of 1 without torchrun)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


SINGLE = World()


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_world(device_name: str = "auto", gpu: int | None = None) -> tuple[World, torch.device]:
    """Join the torchrun process group (if any) and pick this rank's device.

    Under torchrun each rank takes the GPU of its LOCAL_RANK (NCCL) unless ``--device cpu``
    asks for the CPU (gloo). Without torchrun: ``resolve_device(device_name, gpu)``.
    """
    if not launched_by_torchrun():
        return World(), resolve_device(device_name, gpu)
    world = World(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", "0")))
    wants_cpu = (device_name or "auto").lower() == "cpu" or not torch.cuda.is_available()
    if wants_cpu:
        device = torch.device("cpu")
    else:
        if world.local_rank >= torch.cuda.device_count():
            raise UserError(
                f"torchrun started {os.environ.get('LOCAL_WORLD_SIZE', '?')} processes on this machine but only "
                f"{torch.cuda.device_count()} GPUs are visible; use --nproc_per_node {torch.cuda.device_count()}"
            )
        device = torch.device("cuda", world.local_rank)
    if not dist.is_initialized():
        dist.init_process_group(
            backend="gloo" if device.type == "cpu" else "nccl",
            timeout=datetime.timedelta(hours=2),
            **({"device_id": device} if device.type == "cuda" else {}),
        )
    return world, device


def finish_world() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def gather(world: World, item: object) -> list[object]:
    """Every rank's ``item``, in rank order (on every rank)."""
    if not world.distributed:
        return [item]
    items: list[object] = [None] * world.size
    dist.all_gather_object(items, item)
    return items


def share_by_load(loads: Sequence[int], ranks: int) -> list[list[int]]:
    """Indices of ``loads`` for each rank, balanced by total load (longest first, greedy).

    Deterministic: every rank computes the same plan. Each rank's indices are sorted.
    """
    shares: list[list[int]] = [[] for _ in range(ranks)]
    totals = [0] * ranks
    for index in sorted(range(len(loads)), key=lambda i: (-loads[i], i)):
        rank = min(range(ranks), key=lambda r: (totals[r], r))
        shares[rank].append(index)
        totals[rank] += loads[index]
    return [sorted(share) for share in shares]


def agree_on_success(world: World, error: BaseException | None) -> None:
    """After each rank's own work: raise on every rank if any rank failed.

    A rank's UserError is re-raised as it is; another rank's failure is reported by rank.
    """
    outcomes = gather(world, None if error is None else f"{type(error).__name__}: {error}")
    if error is not None:
        raise error
    failed = [(rank, text) for rank, text in enumerate(outcomes) if text is not None]
    if failed:
        rank, text = failed[0]
        raise UserError(f"rank {rank} failed ({text}); see its messages above")


@contextlib.contextmanager
def world_on_device(device_flag: str, gpu: int | None, system=None) -> Iterator[tuple[World, torch.device]]:
    """The one way a command joins the world and prepares its device: ``init_world`` (torchrun or
    a world of one), ``prepare_device`` with the config's SYSTEM switches, and ``finish_world``
    on the way out, whatever happens inside."""
    world, device = init_world(device_flag, gpu)
    prepare_device(device, system)
    try:
        yield world, device
    finally:
        finish_world()
