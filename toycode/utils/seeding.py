"""Seeded randomness that leaves the caller's global generator alone.

Every draw in toycode takes an explicit ``torch.Generator``. The one exception is parameter
initialisation of ``torch.nn`` modules, which only reads the global generator; ``seeded`` gives
it a fixed seed for the duration of a ``with`` block and restores the caller's state afterwards,
so building a model never changes what a user's own ``torch.randn`` calls return.
"""

from __future__ import annotations

import contextlib

import torch

__all__ = ["seeded"]


@contextlib.contextmanager
def seeded(seed: int):
    """Run the block with the global CPU generator seeded to ``seed``; restore it on exit."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
