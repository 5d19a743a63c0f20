"""Seeded identity split into a development half and a test half, and the pairs of each half.

An identity's side depends only on (seed, identity name): a keyed hash mapped to [0, 1) is compared with
`test_fraction`. So the split is disjoint by construction, the same for the same seed, and stable: adding or
removing other identities never moves one (the halves are therefore about, not exactly, the asked fraction).
A pair belongs to a half when both of its images do; non-mated pairs across the halves are dropped.

API (what a recipe fitter calls: fit on `dev`, report on `test`):

    from fiqa_trt.evaluation import protocols, split
    pairs = protocols.all_mated_pairs(root, max_images=20, nonmated=2_000_000, seed=0)
    halves = split.identity_split(pairs.identities(), seed=0, test_fraction=0.5)   # -> IdentitySplit
    dev, test = split.split_pairs(pairs, halves)                                    # -> (Pairs, Pairs)
    halves.side("Aaron_Peirsol")                                                    # -> "dev" or "test"
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from fiqa_trt.errors import FiqaError
from fiqa_trt.evaluation.protocols import Pairs

SIDES = ("dev", "test")


def _unit(seed: int, name: str) -> float:
    digest = hashlib.blake2b(f"identity-split\x1f{seed}\x1f{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


@dataclass(frozen=True)
class IdentitySplit:
    """Two disjoint sets of identity names."""

    dev: frozenset[str]
    test: frozenset[str]
    seed: int
    test_fraction: float

    def side(self, identity: str) -> str:
        """"dev" or "test" for any identity name, also one not seen when the split was made."""
        return "test" if _unit(self.seed, identity) < self.test_fraction else "dev"

    def describe(self) -> str:
        return (f"identity split seed {self.seed}: {len(self.dev)} dev / {len(self.test)} test identities "
                f"(test fraction {self.test_fraction:g})")


def identity_split(identities: Iterable[str], seed: int = 0, test_fraction: float = 0.5) -> IdentitySplit:
    """Split identity names (repeats are fine: one per image) into dev and test halves, as the module says."""
    if not 0 < test_fraction < 1:
        raise FiqaError(f"the test fraction {test_fraction:g} must be strictly between 0 and 1")
    names = set(identities)
    test = frozenset(n for n in names if _unit(seed, n) < test_fraction)
    return IdentitySplit(frozenset(names - test), test, seed, test_fraction)


def split_pairs(pairs: Pairs, split: IdentitySplit) -> tuple[Pairs, Pairs]:
    """(dev pairs, test pairs): the pairs whose two images both belong to that half's identities."""
    names = set(pairs.identities())
    halves = []
    for side in SIDES:
        members = {n for n in names if split.side(n) == side}
        half = pairs.restrict(members, f"{side} half of {split.describe()}")
        if len(half) == 0 or half.mated.all() or not half.mated.any():
            raise FiqaError(f"the {side} half of the identity split has {int(half.mated.sum())} mated and "
                            f"{int((~half.mated).sum())} non-mated pairs; an EDC needs both (more identities?)")
        halves.append(half)
    return halves[0], halves[1]
