"""Several processes (``accelerate launch``, ``torchrun``): data parallel over the step's prompts.

Every process builds the same model and computes the same global batch; each takes its
contiguous :func:`shard` of the prompts (a prompt's ``k`` samples stay on one process, so
group and leave-one-out baselines stay local). Gradients are averaged across processes before
clipping (:func:`all_reduce_mean`, called by :func:`lab.runtime.guards.finite_update`), and a skip is
decided together (:func:`all_finite`). State that lives across steps is computed from
gathered values (:func:`gather`, :func:`mean_value`) so it is identical everywhere; logged
numbers are the mean over processes (:func:`mean_row`). Only the main process writes files.

One process (no launcher, ``WORLD_SIZE`` unset or 1): every function is a no-op and returns
its input, so the trainer runs exactly as it does without this module. The trainer and the
objective call them through a few hooks named for what the step needs (:class:`OneProcess`,
whose methods return their input; :class:`Processes` across several; :func:`hooks` picks).

>>> world_size(), rank(), is_main()
(1, 0, True)
>>> shard([1, 2, 3])
[1, 2, 3]
"""

from __future__ import annotations

import math
import os
import random
import sys

import torch
import torch.distributed as dist


def launched() -> bool:
    """True when a launcher started several processes (``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: torch.device) -> torch.device:
    """Join the launcher's process group (once, through ``accelerate.PartialState``: gloo on
    CPU, NCCL on GPUs) and return this process's device: ``cuda`` becomes ``cuda:LOCAL_RANK``.
    Under a DeepSpeed or FSDP accelerate config it says that nothing is sharded (the model is
    never handed to them). Without a launcher: ``device`` unchanged."""
    if not launched():
        return device
    from accelerate import PartialState

    state = PartialState(cpu=device.type != "cuda")
    if is_main():  # a run under a launcher says so once, not only through [rankN] prefixes
        print(f"data parallel: {world_size()} processes, backend {dist.get_backend()}, each with the whole model",
              flush=True)
    sharding = [name for name in ("DEEPSPEED", "FSDP") if os.environ.get(f"ACCELERATE_USE_{name}", "") == "true"]
    if sharding and is_main():
        print(f"note: lab train does not shard under {sharding[0]}: it runs data parallel with the whole model on "
              f"every process, as under configs/accelerate/ddp.yaml; lab.integrations.trl (TRL) shards "
              f"(README 'Scaling out')", file=sys.stderr)
    return state.device if device.type == "cuda" and device.index is None else device


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's index, 0 .. world_size() - 1."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """True on the process that prints and writes files (rank 0)."""
    return rank() == 0


def check_divisible(prompts_per_step: int, minibatches: int = 1) -> None:
    """``ValueError`` unless the global batch splits evenly across the processes, into shares
    of at least ``minibatches`` prompts (PPO's minibatches are cut from each share)."""
    if prompts_per_step % world_size():
        raise ValueError(f"prompts_per_step={prompts_per_step} does not divide by the {world_size()} processes; "
                         f"set prompts_per_step to a multiple of {world_size()} or launch fewer processes")
    if prompts_per_step // world_size() < minibatches:
        raise ValueError(f"ppo_minibatches={minibatches} exceeds the {prompts_per_step // world_size()} prompts of "
                         f"each of the {world_size()} processes (prompts_per_step={prompts_per_step}); lower "
                         f"ppo_minibatches or raise prompts_per_step")


def shard(items: list) -> list:
    """This process's contiguous share of the step's ``items`` (the global batch of B prompts):
    process r gets ``items[r * B / W : (r + 1) * B / W]``."""
    check_divisible(len(items))
    size = len(items) // world_size()
    return list(items[rank() * size:(rank() + 1) * size])


def _device() -> torch.device:
    """Where collective tensors live: the current GPU under NCCL, else the CPU."""
    nccl = "nccl" in str(dist.get_backend())
    return torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")


def all_true(flag: bool) -> bool:
    """True when ``flag`` is True on every process (one process: ``flag``)."""
    if world_size() == 1:
        return flag
    votes = torch.tensor([float(not flag)], device=_device())
    dist.all_reduce(votes)
    return votes.item() == 0


def any_true(flag: bool) -> bool:
    """True when ``flag`` is True on some process (one process: ``flag``)."""
    return not all_true(not flag)


def all_finite(finite: bool) -> bool:
    """The collective skip decision: True only when every process's loss was finite, so all
    processes skip an update together and none waits in an all-reduce alone."""
    return all_true(finite)


def all_reduce_mean(params: list[torch.nn.Parameter]) -> None:
    """Replace each parameter's gradient by its mean over processes (DDP's reduction), in one
    flat all-reduce. A parameter without a gradient counts as zero where others have one, and
    stays without one where no process has one (the optimizer then skips it, as in one process)."""
    if world_size() == 1:
        return
    params = list(params)
    grads = [torch.zeros(p.numel(), device=_device()) if p.grad is None
             else p.grad.detach().reshape(-1).float().to(_device()) for p in params]  # (numel_i,) each
    present = torch.tensor([float(p.grad is not None) for p in params], device=_device())  # (P,)
    flat = torch.cat(grads + [present])  # (sum numel + P,)
    dist.all_reduce(flat)
    flat[:-len(params)] /= world_size()
    for p, grad, seen in zip(params, flat[:-len(params)].split([p.numel() for p in params]), flat[-len(params):]):
        p.grad = grad.view_as(p).to(p.device, p.dtype) if seen.item() > 0 else None


def mean(value: torch.Tensor) -> torch.Tensor:
    """The mean over processes of a detached tensor, in float32 (one process: ``value``)."""
    if world_size() == 1:
        return value
    out = value.detach().float().to(_device())
    dist.all_reduce(out)
    return (out / world_size()).to(value.device)


def pooled(shard_mean: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """A per-token mean over this process's ``count`` tokens, rescaled so that its mean over
    processes is the mean over all their tokens pooled, what one process computes on the whole
    batch (and so is the averaged gradient). One process: ``shard_mean`` unchanged."""
    if world_size() == 1:
        return shard_mean
    return shard_mean * count.clamp(min=1) / mean(count.float()).clamp(min=1)


def gather(values: torch.Tensor) -> torch.Tensor:
    """Every process's ``values`` (same shape everywhere), concatenated in rank order along
    dim 0: (W * N, ...). One process: ``values``."""
    if world_size() == 1:
        return values
    parts = [torch.empty_like(values, device=_device()) for _ in range(world_size())]
    dist.all_gather(parts, values.to(_device()))
    return torch.cat(parts).to(values.device)


def gather_objects(items: list) -> list:
    """Every process's list ``items`` (picklable), concatenated in rank order. One process: ``items``."""
    if world_size() == 1:
        return items
    lists = [None] * world_size()
    dist.all_gather_object(lists, items)
    return [item for part in lists for item in part]


def mean_value(value: float | None) -> float | None:
    """The mean over processes of those that have a value (None where none has); the value
    itself when all agree. One process: ``value``."""
    known = [v for v in gather_objects([value]) if v is not None]
    if not known or all(v == known[0] for v in known):
        return known[0] if known else None
    return sum(known) / len(known)


def mean_row(row: dict) -> dict:
    """A history row whose numbers are the mean over processes (NaN ones left out, NaN when
    all are; kept as they are when every process agrees); other entries (text) and keys only
    some processes logged are this process's. One process: ``row``."""
    if world_size() == 1:
        return row
    rows = gather_objects([row])
    out = dict(row)
    for key, value in row.items():
        values = [r.get(key) for r in rows]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            continue
        if all(v == values[0] for v in values):
            continue
        finite = [float(v) for v in values if not math.isnan(v)]
        out[key] = sum(finite) / len(finite) if finite else float("nan")
    return out


def seed_process(seed: int) -> None:
    """Several processes: seed this process's torch stream with ``seed + rank`` so that the
    shards draw different samples (the build before this used the same seed everywhere)."""
    if world_size() > 1:
        torch.manual_seed(seed + rank())


def agree(value, what: str) -> None:
    """``ValueError`` unless every process holds the same ``value`` (e.g. the model each built)."""
    values = gather_objects([value])
    if any(v != values[0] for v in values):
        raise ValueError(f"the processes disagree on {what}: {values}; give every process the same "
                         f"config and files (e.g. an explicit --model instead of 'auto')")


def finish() -> None:
    """Wait for every process (the main one writes the run's outputs), then leave the group."""
    if world_size() > 1:
        dist.barrier()
        dist.destroy_process_group()


def from_main(make):
    """``make()`` run on the main process only, its result sent to every process (e.g. the new
    rows of a growing stream file, which processes polling it themselves could read apart)."""
    if world_size() == 1:
        return make()
    box = [make() if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class OneProcess:
    """The collectives a training step needs, named for what it needs, as ONE process runs
    them: each returns its input, so a reader of the step can read them as the identity.
    :class:`Processes` is the same hooks across several processes; :func:`hooks` picks one.

    >>> one = OneProcess()
    >>> one.shard_batch([1, 2, 3]), one.all_finite(False), one.mean_row({"loss": 1.0})
    ([1, 2, 3], False, {'loss': 1.0})
    """

    count, rank, is_main = 1, 0, True  # processes, this one's index, whether it writes files

    def shard_batch(self, batch: list) -> list:
        """This process's prompts of the step's batch: all of them."""
        return batch

    def from_main(self, make):
        """The main process's ``make()``, the same on every process (e.g. a stream's new rows)."""
        return make()

    def all_finite(self, finite: bool) -> bool:
        """True when every process's values were finite: all skip an update together."""
        return finite

    def any_true(self, flag: bool) -> bool:
        """True when some process says so (e.g. stop after this step)."""
        return flag

    def gather(self, values: torch.Tensor) -> torch.Tensor:
        """Every process's ``values`` (N, ...), as (W * N, ...): state that all share (the EMA)."""
        return values

    def gather_rows(self, rows: list) -> list:
        """Every process's list, in rank order (the samples log, the RNG streams)."""
        return rows

    def mean_value(self, value: float | None) -> float | None:
        """The mean over processes of a running value (the critic's accuracy, SRFT's entropy)."""
        return value

    def mean_row(self, row: dict) -> dict:
        """A history row, its numbers averaged over processes."""
        return row

    def pooled_mean(self, shard_mean: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        """A per-token mean over this process's ``count`` tokens, scaled so that the mean over
        processes is the mean over all their tokens (:func:`pooled`)."""
        return shard_mean

    def average_gradients(self, params: list[torch.nn.Parameter]) -> None:
        """Each gradient becomes its mean over processes, before clipping."""

    def agree(self, value, what: str) -> None:
        """``ValueError`` unless every process holds the same ``value``."""

    def check_share(self, prompts_per_step: int, minibatches: int = 1) -> None:
        """``ValueError`` unless each process gets an equal share of at least ``minibatches`` prompts."""

    def seed_own_stream(self, seed: int) -> None:
        """Seed this process's torch stream apart from the others' (``seed + rank``)."""

    def own_streams(self, junk: random.Random) -> list[dict] | None:
        """Every process's own random streams (torch, its GPU's, ``junk``), for a checkpoint;
        one process has none besides the global ones."""
        return None

    def restore_own_streams(self, saved: list[dict] | None, junk: random.Random, seed: int) -> None:
        """Take this process's streams back from ``saved`` (:meth:`own_streams`)."""


class Processes(OneProcess):
    """The hooks of :class:`OneProcess` across the launcher's processes (module functions above)."""

    count = property(lambda self: world_size())
    rank = property(lambda self: rank())
    is_main = property(lambda self: is_main())
    shard_batch = staticmethod(shard)
    from_main = staticmethod(from_main)
    all_finite = staticmethod(all_finite)
    any_true = staticmethod(any_true)
    gather = staticmethod(gather)
    gather_rows = staticmethod(gather_objects)
    mean_value = staticmethod(mean_value)
    mean_row = staticmethod(mean_row)
    pooled_mean = staticmethod(pooled)
    average_gradients = staticmethod(all_reduce_mean)
    agree = staticmethod(agree)
    check_share = staticmethod(check_divisible)
    seed_own_stream = staticmethod(seed_process)

    def own_streams(self, junk: random.Random) -> list[dict]:
        own = {"torch": torch.get_rng_state(), "junk": junk.getstate()}
        if torch.cuda.is_available():
            own["cuda"] = torch.cuda.get_rng_state()
        return gather_objects([own])

    def restore_own_streams(self, saved: list[dict] | None, junk: random.Random, seed: int) -> None:
        """Each process takes back its own streams when ``saved`` holds one per process; else
        (another process count) fresh ones from ``seed``, so that the shards still differ."""
        if saved is None or len(saved) != world_size():
            seed_process(seed)
            junk.seed(seed + rank())
            return
        own = saved[rank()]
        torch.set_rng_state(own["torch"])
        junk.setstate(own["junk"])
        if "cuda" in own and torch.cuda.is_available():
            torch.cuda.set_rng_state(own["cuda"])


def hooks() -> OneProcess:
    """The collectives of this launch: :class:`Processes` once :func:`setup` joined several
    processes, else :class:`OneProcess`."""
    return Processes() if world_size() > 1 else OneProcess()
