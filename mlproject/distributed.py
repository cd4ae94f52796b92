"""World: which process of a (possibly distributed) run this is, and whether it writes.

Every side effect of a run (the run folder, checkpoints, TensorBoard, the sacred run, the
progress display) happens only where ``World.writes`` is true: the one place that switches
them off on all but one process.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class World:
    """This process's place among the run's processes.

    Attributes:
        rank: this process's index among all processes, from 0.
        world_size: how many processes train together (1 without torchrun).
        local_rank: this process's index on its own machine (picks its GPU).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def writes(self) -> bool:
        """True on the one process that writes files, events, sacred records and progress."""
        return self.rank == 0
