"""Seeds for every random draw of the pipeline, derived from the config's one ``seed``.

Each role (stage-1 batches, EK-FAC fit, domain-gradient samples, direct mixture measurements,
stage-2 batches, ...) gets its own stream, so that e.g. a mixture measured directly is a *fresh*
sample, disjoint in seed from the samples its prediction was built from.
"""

from __future__ import annotations

import zlib

import numpy as np


def derive_seed(seed: int, role: str, *keys: int | str) -> int:
    """A 63-bit seed determined by ``(seed, role, *keys)``; distinct roles give unrelated seeds."""
    words = [zlib.crc32(role.encode())] + [
        k if isinstance(k, int) else zlib.crc32(str(k).encode()) for k in keys
    ]
    state = np.random.SeedSequence(seed, spawn_key=tuple(words)).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)
