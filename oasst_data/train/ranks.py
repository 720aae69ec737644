"""What one rank finds before training, made known to every rank.

A check that fails on one rank only (its copy of the shards damaged, a file it cannot read, a
folder another job holds) stopped that rank with its error, while the others went on into the
next collective and waited there for it: for the process group's timeout (30 minutes on gloo),
deaf to SIGTERM, when no launcher kills the rest (srun without --kill-on-bad-exit, a hand-made
launch). Each rank now reports the block's outcome to all, and all stop together.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import OasstDataError


def _process_group():
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist
    return None


def _gather(dist, value: Any) -> list[Any]:
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


class Agreement:
    """What the ranks must agree on: set `value` inside the block (compared by its repr)."""

    value: Any = None


@contextmanager
def on_every_rank(what: str) -> Iterator[Agreement]:
    """Run a block of checks on every rank; if it fails on any, it fails on all (each rank its
    own error, the others naming the rank that stopped). The `Agreement` it yields takes a value
    every rank must reach alike (the checkpoint it resumes), else all stop. Without a process
    group: just the block."""
    dist = _process_group()
    agreement = Agreement()
    try:
        yield agreement
    except Exception as error:
        if dist is not None:
            try:
                _gather(dist, (str(error) or type(error).__name__, None))
            except Exception:  # a peer already gone: this rank's own error is the one to report
                pass
        raise
    if dist is None:
        return
    outcomes = _gather(dist, (None, repr(agreement.value)))
    failed = next(((rank, message) for rank, (message, _) in enumerate(outcomes) if message is not None), None)
    if failed is not None:
        raise OasstDataError(f"rank {failed[0]} stopped while {what}: {failed[1]}")
    seen = {rank: value for rank, (_, value) in enumerate(outcomes)}
    if len(set(seen.values())) > 1:
        differing = ", ".join(f"rank {rank}: {value}" for rank, value in seen.items())
        raise OasstDataError(f"the ranks disagree while {what} ({differing}): do they see the same files?")
