"""Seeds derived from the config's root seed: one SeedSequence per purpose, never shared.

A key is a tuple of ints and names (names enter as their crc32), so the streams of, say, the
fine-tuning run (root, 3) and the MLM run (root, 3, "mlm/small/adamw") never coincide.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np


def _words(parts) -> list[int]:
    return [p if isinstance(p, int) else zlib.crc32(str(p).encode()) for p in parts]


def derive_seed(*parts: int | str) -> int:
    """One non-negative 31-bit seed from a key."""
    return int(np.random.SeedSequence(_words(parts)).generate_state(1)[0] >> 1)


def spawn_seeds(names: Sequence[str], *parts: int | str) -> dict[str, int]:
    """Independent 31-bit seeds, one per name, spawned from the key's SeedSequence."""
    children = np.random.SeedSequence(_words(parts)).spawn(len(names))
    return {n: int(c.generate_state(1)[0] >> 1) for n, c in zip(names, children)}


RUN_STREAMS = ("model", "data", "dropout")


def run_seeds(
    root_seed: int, seed: int, name: str, streams: Sequence[str] = RUN_STREAMS
) -> dict[str, int]:
    """The independent seeds of one training run (model init, data order, dropout, ...) from
    (root seed, run seed, run name)."""
    return spawn_seeds(streams, root_seed, seed, name)
