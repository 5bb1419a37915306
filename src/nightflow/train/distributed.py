"""Process-group plumbing for ``torchrun``: one process per device, gloo on CPU and NCCL on CUDA.

Why a small context object: the trainer asks "am I rank 0?" and "average this across ranks" in many places;
with a single process every helper degrades to a no-op, so one code path serves both cases.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from ..errors import UserError


@dataclass
class DistContext:
    """Where this process sits in the job and which device it trains on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def all_reduce_mean(self, values: torch.Tensor) -> torch.Tensor:
        """Mean over ranks of a 1-D float tensor (a copy; the input is untouched)."""
        out = values.detach().clone()
        if self.distributed:
            dist.all_reduce(out, op=dist.ReduceOp.SUM)
            out /= self.world_size
        return out

    def all_gather_cat(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenate equally-shaped tensors from every rank along dim 0, in rank order."""
        if not self.distributed:
            return tensor
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=0)

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's value of ``obj`` on every rank (e.g. a run directory chosen with a timestamp)."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def max_param_difference(self, module: torch.nn.Module) -> float:
        """Largest |p_rank - p_rank0| over all parameters and ranks: 0 when DDP kept the replicas in sync."""
        if not self.distributed:
            return 0.0
        worst = torch.zeros(1, device=self.device, dtype=torch.float64)
        for p in module.state_dict().values():
            if not p.is_floating_point():
                continue
            ref = p.detach().clone()
            dist.broadcast(ref, src=0)
            worst = torch.maximum(worst, (p.detach() - ref).abs().max().to(torch.float64).reshape(1))
        dist.all_reduce(worst, op=dist.ReduceOp.MAX)
        return float(worst.item())


def pick_device(preference: str, local_rank: int = 0) -> torch.device:
    """``auto`` picks CUDA when present; asking for ``cuda`` without one is a user error, not a crash."""
    if preference == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device is 'cuda' but no CUDA device is available; use --set train.device=cpu")
    if preference in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
    return torch.device("cpu")


def init_distributed(device_preference: str = "auto") -> DistContext:
    """Join the torchrun process group when launched by torchrun (WORLD_SIZE > 1), else one process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_preference, local_rank)
    if world_size <= 1:
        return DistContext(device=device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    initialized_here = False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, **({"device_id": device} if device.type == "cuda" else {}))
        initialized_here = True
    return DistContext(rank, world_size, local_rank, device, initialized_here)


def shutdown_distributed(ctx: DistContext) -> None:
    """Leave the process group if this module created it."""
    if ctx.initialized_here and dist.is_initialized():
        dist.destroy_process_group()
