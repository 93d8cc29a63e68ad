"""Sharding a results table over processes: which rows this process computes.

Every study that writes a :class:`~toycode.experiments.results.ResultsTable` (sd-sweep, the
leaderboard) takes every ``count``-th job from ``index`` under ``accelerate launch``; the table's
leases make any overlap harmless and a resumed run skips what is done.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch

__all__ = ["Shard", "process_shard"]


class Shard(NamedTuple):
    """This process's share of a sweep: every ``count``-th job from ``index``, on ``device``;
    ``wait`` returns when every process has reached it."""

    index: int = 0
    count: int = 1
    device: str | None = None
    wait: Callable[[], None] = lambda: None


def process_shard(device: str | None = None) -> Shard:
    """This process's shard from accelerate's ``PartialState`` (one process, ``device`` or the
    default, where accelerate is not installed). A CPU-only machine, ``device="cpu"`` or
    ``ACCELERATE_USE_CPU=1`` make the processes CPU ones (gloo)."""
    try:
        from accelerate import PartialState
        from accelerate.utils import parse_flag_from_env
    except ImportError:
        return Shard(device=device)
    cpu = (
        str(device).startswith("cpu")
        or parse_flag_from_env("ACCELERATE_USE_CPU")
        or not torch.cuda.is_available()
    )
    state = PartialState(cpu=cpu)
    mine = device or ("cpu" if state.device.type == "cpu" else str(state.device))
    return Shard(state.process_index, state.num_processes, mine, state.wait_for_everyone)
