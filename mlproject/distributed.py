"""World: which process of a run this is, whether it writes, and what its processes agree on.

Under ``torchrun`` (its variables RANK, WORLD_SIZE, LOCAL_RANK in the environment) each process
is one member of the run: ``World.from_env`` says which, ``Collective`` joins the process group
(nccl on CUDA, gloo on the CPU, plus a gloo group on the CPU for small agreements) and ``wrap``
puts the Model's trainable networks under DistributedDataParallel, in place. Without torchrun
the World is one process and every ``Collective`` operation is the identity.

Every side effect of a run (the run folder, checkpoints, TensorBoard, the sacred run, the
progress display) happens only where ``World.writes`` is true: the one place that switches
them off on all but one process. Decisions are made together: rank 0 decides where a run
starts and broadcasts it; stop signals and NaN losses seen by one process are exchanged on the
CPU group every ``AGREE_EVERY`` optimizer steps and at every save, never on a timer.
"""

from __future__ import annotations

import atexit
import dataclasses
import datetime
import os
from typing import Any

import torch
from torch import nn

AGREE_EVERY = 10  # optimizer steps between exchanges of stop and NaN flags (and at every save)
TIMEOUT = datetime.timedelta(minutes=10)  # a collective that waits longer fails (not hangs)


@dataclasses.dataclass(frozen=True)
class World:
    """This process's place among the run's processes.

    Attributes:
        rank: this process's index among all processes, from 0.
        world_size: how many processes train together (1 without torchrun).
        local_rank: this process's index on its own machine (picks its GPU).
        launched: started by torchrun (also with one process): the training data is then
            sharded in one global order drawn from (seed, epoch), whatever the world size.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    launched: bool = False

    @classmethod
    def from_env(cls) -> World:
        """The World torchrun describes in the environment, else one plain process."""
        env = os.environ
        if "WORLD_SIZE" not in env or "RANK" not in env:
            return cls()
        return cls(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)), True)

    @property
    def writes(self) -> bool:
        """True on the one process that writes files, events, sacred records and progress."""
        return self.rank == 0

    @property
    def restarted(self) -> bool:
        """True when torchrun restarted this run's processes after a failure."""
        return self.launched and int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0


class Collective:
    """What the processes of a run do together; with one process, every call is the identity.

    Example:
        >>> collective = Collective(World.from_env(), torch.device("cpu"))
        >>> config = collective.broadcast(config)  # rank 0's config on every process
        >>> seen = collective.gather(local_stop_signal)  # every process's, on every process
    """

    def __init__(self, world: World, device: torch.device):
        import torch.distributed as dist

        self.world = world
        self.active = world.world_size > 1
        self.owns_group = False
        self._cpu_group: Any = None
        self._store: Any = None
        if not self.active:
            return
        if not dist.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            if device.type == "cuda":
                torch.cuda.set_device(device)
            # torchrun's own store outlives a restart (--max-restarts), with the addresses the
            # failed attempt's processes published in it: keys of this attempt only.
            store, rank, size = next(dist.rendezvous("env://", timeout=TIMEOUT))
            attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
            store = dist.PrefixStore(f"mlproject/attempt-{attempt}/", store)
            self._store = store
            dist.init_process_group(
                backend, store=store, rank=rank, world_size=size, timeout=TIMEOUT
            )
            self.owns_group = True
        if dist.get_backend() != "gloo":
            self._cpu_group = dist.new_group(backend="gloo", timeout=TIMEOUT)

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` (any picklable object), on every process."""
        if not self.active:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0, group=self._cpu_group)
        return box[0]

    def gather(self, value: Any) -> list[Any]:
        """Every process's ``value`` in rank order (on every process)."""
        if not self.active:
            return [value]
        import torch.distributed as dist

        values: list[Any] = [None] * self.world.world_size
        dist.all_gather_object(values, value, group=self._cpu_group)
        return values

    def close(self, together: bool = False) -> None:
        """Leave the process group if this object joined it.

        ``together``: every process ended the run at the same agreed step (completed, or
        stopped there). The processes that write nothing then wait at exit until rank 0 has
        exited too: torchrun stops every process as soon as one exits with a non-zero code
        (143 after a stop), and that must not cut rank 0's sacred record short.
        """
        if self.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.owns_group = False
            if together:
                _hold_exit(self._store, self.world.writes)


_exit_store: list[Any] = []  # the store of the last run that ended together, for atexit


def _hold_exit(store: Any, writes: bool) -> None:
    if not _exit_store:
        atexit.register(_exit_in_order, writes)
    _exit_store[:] = [store]


def _exit_in_order(writes: bool) -> None:
    """At exit: rank 0 says it is done (its records are written); the others wait for it."""
    try:
        if writes:
            _exit_store[0].set("exited", "1")
        else:
            _exit_store[0].wait(["exited"], TIMEOUT)
    except Exception:  # noqa: BLE001 - rank 0 or the store is gone: nothing is left to wait for
        pass


def local_device(world: World, wanted: Any) -> torch.device | None:
    """Each process's own GPU under torchrun (``cuda:LOCAL_RANK``) when the config asks for
    CUDA or leaves the device to mlproject; None where the plain rules apply."""
    if not world.launched or not torch.cuda.is_available():
        return None
    if wanted in (None, "auto", "cuda"):
        return torch.device("cuda", world.local_rank)
    return None


def wrap(model: nn.Module, device: torch.device) -> list[str]:
    """Put each trainable child of ``model`` under DistributedDataParallel, in place.

    ``train_batch`` calls ``self.net(x)`` as in one process and gradients are averaged across
    processes in backward; the model's state_dict keys stay those of one process (no
    ``.module``), so checkpoints are the same. Returns the names of the wrapped children.
    """
    from torch.nn.parallel import DistributedDataParallel

    names = []
    for name, child in list(model.named_children()):
        if any(p.requires_grad for p in child.parameters()):
            ids = [device.index] if device.type == "cuda" else None
            setattr(model, name, DistributedDataParallel(child, device_ids=ids))
            names.append(name)
    prefixes = tuple(f"{name}.module." for name in names)

    def plain_keys(module: nn.Module, state: dict, prefix: str, local: Any) -> None:
        wrapped = tuple(prefix + p for p in prefixes)
        for key in [k for k in state if k.startswith(wrapped)]:
            # a child's name has no dot: the first ".module." after the prefix is DDP's
            state[prefix + key[len(prefix) :].replace(".module.", ".", 1)] = state.pop(key)

    def wrapped_keys(state: dict, prefix: str, *args: Any) -> None:
        for key in list(state):
            for name in names:
                start = f"{prefix}{name}."
                if key.startswith(start) and not key.startswith(f"{start}module."):
                    state[f"{start}module.{key[len(start) :]}"] = state.pop(key)

    model._register_state_dict_hook(plain_keys)
    model._register_load_state_dict_pre_hook(wrapped_keys)
    return names
