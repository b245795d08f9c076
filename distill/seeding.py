"""Seeds derive from (global seed, stage, record id): never from worker count, batch or order.

Record ids are global (a passage's index, a sentence's place in it), so a resumed or re-sharded
run draws exactly the same random numbers for every record.
"""

from __future__ import annotations

import hashlib


def derive_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed from the global seed and any identifying parts (stage name, record id, sample index)."""
    h = hashlib.blake2b(digest_size=8)
    h.update(str(int(seed)).encode())
    for p in parts:
        h.update(b"\x1f")
        h.update(str(p).encode())
    return int.from_bytes(h.digest(), "little") & ((1 << 63) - 1)
