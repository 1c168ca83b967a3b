"""Sprint (proof of compute), PROTOCOL.md section 3: hit rate, nonce sampling, fraud test, acceptance, weights.

The statistics and weight rules only; scoring nonces on the model is compute/sprint.py.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from statistics import NormalDist

import numpy as np

from gonka_pipelines.protocol import _sha256

POC_DOMAIN = "gonka/poc"
"""Domain tag of every hash the sprint derives (nonce inputs, permutations, target, samples)."""


def hit_probability(vocab: int, r_target: float) -> float:
    """P(distance < r) for a random output direction: cos(o, t) ~ N(0, 1/vocab), so P(Z > (2 - r^2)/2 * sqrt(vocab))."""
    return 1.0 - NormalDist().cdf((2.0 - r_target**2) / 2.0 * math.sqrt(vocab))


def calibrate_r_target(vocab: int, hit_rate: float) -> float:
    """The r_target at which a nonce is a hit with probability `hit_rate` (inverse of hit_probability)."""
    if not 0.0 < hit_rate < 1.0:
        raise ValueError(f"hit_rate must lie in (0, 1), got {hit_rate}")
    z = NormalDist().inv_cdf(1.0 - hit_rate)
    return math.sqrt(2.0 - 2.0 * z / math.sqrt(vocab))


def sample_nonces(
    validator_public_key: str, prev_hash: str, epoch: int, nonces: Sequence[int], n_max: int = 200
) -> list[int]:
    """The min(n_max, len(nonces)) nonces a validator recomputes, ascending.

    Each nonce is ranked by SHA-256 of (validator key, block hash, epoch, nonce), so the sample is
    deterministic, differs per validator, and does not depend on the order the host listed its nonces.
    """
    if len(nonces) <= n_max:
        return sorted(int(nonce) for nonce in nonces)
    seed = hashlib.sha256("|".join((POC_DOMAIN, "sample", validator_public_key, prev_hash, str(epoch))).encode()).digest()
    ranked = sorted(
        (int(nonce) for nonce in nonces),
        key=lambda nonce: (hashlib.sha256(seed + nonce.to_bytes(8, "little")).digest(), nonce),
    )
    return sorted(ranked[:n_max])


def sample_nonces_each(validator_public_keys: Sequence[str], prev_hash: str, epoch: int, nonces: Sequence[int],
                       n_max: int = 200) -> list[list[int]]:
    """sample_nonces for each validator; one list for all of them when every nonce is sampled (a committee of a host
    with few hits: the usual case, drawn once instead of per validator)."""
    if len(nonces) <= n_max:
        return [sample_nonces("", prev_hash, epoch, nonces, n_max)] * len(validator_public_keys)  # whoever draws it
    return [sample_nonces(key, prev_hash, epoch, nonces, n_max) for key in validator_public_keys]


COMMITTEE_DRAWS_PER_SEAT = 64
"""Committee draws by weight with replacement, at most this many per seat; past it the seats left go by exponential keys."""

BULK_DRAW_WEIGHT = 2**32
"""CommitteeDraw.many reduces draws in 32-bit limbs with numpy, exact for total weights up to this; past it every
committee is drawn one at a time."""


class CommitteeDraw:
    """Committees for one epoch's sprints (ours, after Gonka's validator slots): `size` distinct validators per host,
    drawn by weight from the hosts with weight other than the host itself, seeded by (block hash, epoch, host); everyone
    eligible when there are no more than `size`. The eligible hosts and their cumulative weights are computed once, so
    a committee costs O(size log n): weighted draws with replacement, repeats and the host itself skipped."""

    def __init__(self, weights: Mapping[str, int]):
        self.weights = weights
        self.eligible = sorted(address for address, weight in weights.items() if weight > 0)
        self.cumulative = list(itertools.accumulate(weights[address] for address in self.eligible))

    def __call__(self, prev_hash: str, epoch: int, host: str, size: int) -> list[str]:
        if self._everyone_sits(host, size):
            return [address for address in self.eligible if address != host]
        seed = _committee_seed(prev_hash, epoch, host)
        chosen: set[str] = set()
        for digests in _draw_digests(seed, size):
            for start in range(0, len(digests), 32):
                point = int.from_bytes(digests[start:start + 16], "little") % self.cumulative[-1]
                candidate = self.eligible[bisect.bisect_right(self.cumulative, point)]
                if candidate != host:
                    chosen.add(candidate)
                if len(chosen) == size:
                    return sorted(chosen)
        # a few validators hold nearly all the weight: the seats left go by Efraimidis-Spirakis keys
        rest = [a for a in self.eligible if a not in chosen and a != host]
        keyed = sorted(rest, key=lambda a: -_uniform(seed, a) ** (1.0 / self.weights[a]))
        return sorted(chosen | set(keyed[:size - len(chosen)]))

    def many(self, prev_hash: str, epoch: int, hosts: Sequence[str], size: int) -> list[tuple[str, ...]]:
        """Each host's committee, the same as __call__'s: the first block of every host's draws at once in numpy (points
        reduced in 32-bit limbs, bisected by searchsorted, the first `size` distinct ones other than the host taken);
        a host whose first block falls short, or whose committee is everyone, is drawn alone."""
        if not self.eligible or self.cumulative[-1] > BULK_DRAW_WEIGHT or not hosts:
            return [tuple(self(prev_hash, epoch, host, size)) for host in hosts]
        draws = _first_block(size)
        counters = _draw_counters(COMMITTEE_DRAWS_PER_SEAT * size)[:draws]
        digests = b"".join(_sha256.digests(_committee_seed(prev_hash, epoch, host), counters) for host in hosts)
        limbs = np.frombuffer(digests, "<u4").reshape(len(hosts), draws, 8)[:, :, :4].astype(np.uint64)
        total = np.uint64(self.cumulative[-1])
        points = limbs[:, :, 3] % total
        for limb in (2, 1, 0):
            points = ((points << np.uint64(32)) | limbs[:, :, limb]) % total
        candidates = np.searchsorted(np.array(self.cumulative, np.uint64), points, side="right")
        position = {address: index for index, address in enumerate(self.eligible)}
        own = np.array([position.get(host, -1) for host in hosts])
        order = np.argsort(candidates, axis=1, kind="stable")
        ranked = np.take_along_axis(candidates, order, axis=1)
        first = np.empty_like(candidates, dtype=bool)
        np.put_along_axis(first, order, np.concatenate(
            [np.ones((len(hosts), 1), bool), ranked[:, 1:] != ranked[:, :-1]], axis=1), axis=1)
        first &= candidates != own[:, None]
        seated = first & (np.cumsum(first, axis=1) <= size)
        chosen = np.sort(np.where(seated, candidates, len(self.eligible)), axis=1)[:, :size].tolist()
        filled = (seated.sum(axis=1) == size).tolist()
        return [tuple(map(self.eligible.__getitem__, seats)) if full and not self._everyone_sits(host, size)
                else tuple(self(prev_hash, epoch, host, size)) for host, seats, full in zip(hosts, chosen, filled)]

    def _everyone_sits(self, host: str, size: int) -> bool:
        return len(self.eligible) - (self.weights.get(host, 0) > 0) <= size


def _committee_seed(prev_hash: str, epoch: int, host: str) -> bytes:
    return hashlib.sha256("|".join((POC_DOMAIN, "committee", prev_hash, str(epoch), host)).encode()).digest()


def _first_block(size: int) -> int:
    """How many draws the first block of a committee's holds: the seats and a few repeats."""
    return size + 8


def _draw_digests(seed: bytes, size: int) -> Iterator[bytes]:
    """SHA-256(seed ‖ draw, 8 bytes little-endian) of draws 0, 1, ... up to COMMITTEE_DRAWS_PER_SEAT * size, hashed in C
    a block at a time (the first covers the seats and a few repeats, each next one twice as many draws)."""
    counters, start, block = _draw_counters(COMMITTEE_DRAWS_PER_SEAT * size), 0, _first_block(size)
    while start < len(counters):
        yield _sha256.digests(seed, counters[start:start + block])
        start, block = start + block, block * 2


@lru_cache(maxsize=8)
def _draw_counters(count: int) -> list[bytes]:
    """The committee draws' counters 0 to count - 1 as 8 bytes little-endian, made once per committee size."""
    return [draw.to_bytes(8, "little") for draw in range(count)]


def drawn_committees(prev_hash: str, epoch: int, hosts: Sequence[str], weights: Mapping[str, int],
                     size: int) -> dict[str, Sequence[str]]:
    """Each host's committee (CommitteeDraw, as a tuple), each remembered for the last few epochs' weights: sprint
    validation and then the weights' denominators ask for the same committees."""
    remembered = _remembered_draws(prev_hash, epoch, tuple(sorted(weights.items())), size)
    missing = [host for host in dict.fromkeys(hosts) if host not in remembered.committees]
    remembered.committees.update(zip(missing, remembered.draw.many(prev_hash, epoch, missing, size)))
    return {host: remembered.committees[host] for host in hosts}


@dataclass
class _Remembered:
    """One epoch's committee draw and the committees drawn with it so far, by host."""

    draw: CommitteeDraw
    committees: dict[str, tuple[str, ...]]


@lru_cache(maxsize=4)
def _remembered_draws(prev_hash: str, epoch: int, weights: tuple[tuple[str, int], ...], size: int) -> _Remembered:
    """The committees drawn so far under these inputs (they are a pure function of them)."""
    return _Remembered(CommitteeDraw(dict(weights)), {})


def _uniform(seed: bytes, address: str) -> float:
    """A uniform draw in (0, 1) per (seed, address)."""
    return (int.from_bytes(hashlib.sha256(seed + address.encode()).digest()[:8], "little") + 1) / (2**64 + 1)


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), summed term by term from the first (no normal approximation)."""
    if k <= 0:
        return 1.0
    if k > n or p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    log_choose = math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
    term = math.exp(log_choose + k * math.log(p) + (n - k) * math.log1p(-p))
    total = 0.0
    odds = p / (1.0 - p)
    for i in range(k, n + 1):
        total += term
        term *= (n - i) / (i + 1) * odds
    return min(total, 1.0)


def is_fraud(mismatches: int, n: int, p: float = 5e-4, threshold: float = 1e-7) -> bool:
    """Fraud iff k mismatches out of n recomputed nonces are too unlikely from honest noise alone."""
    return binomial_tail(mismatches, n, p) < threshold


def mismatches_each(recomputed_distances: np.ndarray, sizes: np.ndarray, r_target: float) -> np.ndarray:
    """Per recomputation (given end to end, `sizes` their lengths), the claimed hits whose recomputed distance is above
    r_target (Gonka's fraud test: `>`, so a tie is no mismatch): one pass over all of them."""
    sizes = np.asarray(sizes, dtype=np.int64)
    ends = np.cumsum(sizes)
    if (ends[-1] if len(ends) else 0) != len(recomputed_distances):
        raise ValueError(f"{len(recomputed_distances)} recomputed distances for samples of {int(sizes.sum())} nonces in all")
    above = np.concatenate([[0], np.cumsum(np.asarray(recomputed_distances, dtype=np.float64) > r_target)])
    return above[ends] - above[ends - sizes]


def sprint_accepted(valid_weight: int, total_weight: int) -> bool:
    """A host's sprint stands iff validators voting "valid" hold more than half the weight (floored)."""
    return valid_weight > total_weight // 2


def cap_fraction(n_hosts: int, c: float, small_network_caps: Sequence[float]) -> float:
    """The power-cap fraction for a network of n_hosts: c, raised to small_network_caps[n - 1] for small networks
    (Gonka: 1.0, 0.5, 0.4 for 1, 2, 3 hosts). c = 0 (no cap) stays 0."""
    if c == 0:
        return 0.0
    floor = small_network_caps[n_hosts - 1] if 1 <= n_hosts <= len(small_network_caps) else c
    return max(c, floor)


def power_cap(weights: Sequence[int], c: float) -> list[int]:
    """Cap every weight so no host holds more than fraction c of the capped total; input order is kept.

    PROTOCOL.md's walk over the ascending weights, in exact rational arithmetic with c at its
    decimal value (0.4 is 2/5), so boundary cases do not depend on float rounding. c = 0 means no cap (as in Gonka).
    """
    if c == 0:
        return list(weights)
    fraction = Fraction(str(c))
    ascending = sorted(weights)
    n = len(ascending)
    below = 0
    for k, weight in enumerate(ascending):
        if weight > fraction * (below + weight * (n - k)):
            cap = math.floor(fraction * below / (1 - fraction * (n - k)))
            return [min(w, cap) for w in weights]
        below += weight
    return list(weights)


def collateral_adjust(
    weight: int,
    collateral: int,
    price_per_weight_unit: int,
    epochs_since_genesis: int,
    grace_epochs: int,
    base_fraction: float,
) -> int:
    """After the grace period only base_fraction of a weight is free; the rest must be backed by collateral.

    w' = floor(0.2*w + min(0.8*w, collateral / price)), exact; during the grace period w is unchanged.
    """
    if price_per_weight_unit <= 0:
        raise ValueError(f"price_per_weight_unit must be positive, got {price_per_weight_unit}")
    if epochs_since_genesis < grace_epochs:
        return weight
    free = Fraction(str(base_fraction)) * weight
    return math.floor(free + min(weight - free, Fraction(collateral, price_per_weight_unit)))
