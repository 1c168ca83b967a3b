"""Sprint (proof of compute), PROTOCOL.md section 3: seeded nonce scoring, fraud test, acceptance, weights.

Random inputs, permutations and the target come from a counter-based generator (the splitmix64
finaliser over int64 tensors) keyed by SHA-256 of the block hash and public key: a whole batch of
nonces is generated in a few tensor ops on the model's device, and any single nonce is reproducible
alone. Integer ops are exact on every device (the permutation's float64 step has a wide margin), so
only Box-Muller and the model itself may round differently on CPU and GPU.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from fractions import Fraction
from functools import lru_cache
from statistics import NormalDist

import numpy as np
import torch
from torch import Tensor

from gonka_pipelines.models.profiles import ModelProfile
from gonka_pipelines.models.runner import ModelRunner

SMALL_NETWORK_CAP = {1: 1.0, 2: 0.5, 3: 0.4}  # cap fraction floor for networks of fewer than 4 hosts
_DOMAIN = "gonka/poc"
_MAX_NONCE = 2**63 - 1
_UNIFORM_BITS = 24  # float32 mantissa: each Box-Muller uniform takes 24 bits of a 64-bit hash


def _int64(value: int) -> int:
    """The signed int64 with the same 64 bits as an unsigned constant (torch has no uint64 arithmetic)."""
    return value - 2**64 if value >= 2**63 else value


_GAMMA = _int64(0x9E3779B97F4A7C15)  # splitmix64 stream increment (golden ratio)
_MIX1 = _int64(0xBF58476D1CE4E5B9)
_MIX2 = _int64(0x94D049BB133111EB)


def _shr(x: Tensor, bits: int) -> Tensor:
    """Logical right shift of int64 words (torch's >> is arithmetic, so mask off the sign copies)."""
    return (x >> bits).bitwise_and_((1 << (64 - bits)) - 1)


def mix64(z: Tensor) -> Tensor:
    """splitmix64 finaliser: a bijective 64-bit hash, elementwise, with wrapping int64 arithmetic."""
    z = z ^ _shr(z, 30)  # a new tensor: the in-place steps below never touch the caller's
    z *= _MIX1
    z ^= _shr(z, 27)
    z *= _MIX2
    z ^= _shr(z, 31)
    return z


def _root_key(purpose: str, *parts: str) -> int:
    """64-bit key from SHA-256 of a domain-separated purpose and the protocol values it depends on."""
    digest = hashlib.sha256("|".join((_DOMAIN, purpose, *parts)).encode()).digest()
    return _int64(int.from_bytes(digest[:8], "little"))


@lru_cache(maxsize=32)
def _positions(count: int, device: torch.device, dtype: torch.dtype = torch.int64) -> Tensor:
    """0..count-1 on the device (cached: the same few sizes recur every batch)."""
    return torch.arange(count, dtype=dtype, device=device)


@lru_cache(maxsize=32)
def _counters(count: int, device: torch.device) -> Tensor:
    """1..count times the stream increment: the splitmix64 states of a stream relative to its key."""
    return (_positions(count, device) + 1) * _GAMMA


def _normals(keys: Tensor, count: int) -> Tensor:
    """(B, count) float32 standard normals: Box-Muller on the splitmix64 stream of each row's key.

    Word j of row b is mix64(keys[b] + (j + 1) * gamma), so a row depends on its key alone; each word
    gives two 24-bit uniforms (the high bits for the radius, the low bits for the angle).
    """
    half = (count + 1) // 2
    words = mix64(keys[:, None] + _counters(half, keys.device))
    step = 2.0**-_UNIFORM_BITS
    radius = _shr(words, 64 - _UNIFORM_BITS).float().mul_(step).add_(step / 2).log_().mul_(-2.0).sqrt_()
    angle = words.bitwise_and_((1 << _UNIFORM_BITS) - 1).float().mul_(2 * math.pi * step).add_(math.pi * step)
    out = torch.empty((keys.numel(), 2, half), device=keys.device)
    torch.cos(angle, out=out[:, 0])
    torch.sin(angle, out=out[:, 1])
    return out.mul_(radius[:, None]).view(keys.numel(), 2 * half)[:, :count]


def _nonce_tensor(nonces: Sequence[int] | np.ndarray | Tensor, device: torch.device | str) -> Tensor:
    """Nonces as an int64 tensor on the device; values given outside a tensor must lie in [0, 2**63)."""
    if isinstance(nonces, Tensor):
        return nonces.to(device=device, dtype=torch.int64)
    try:
        tensor = torch.as_tensor(nonces, dtype=torch.int64)
    except (OverflowError, RuntimeError, TypeError, ValueError) as error:
        raise ValueError(f"nonces must be integers in [0, 2**63): {error}") from error
    if tensor.numel() and int(tensor.min()) < 0:
        raise ValueError(f"nonces must be integers in [0, 2**63), got {int(tensor.min())}")
    return tensor.to(device)


def _nonce_keys(purpose: str, block_hash: str, public_key: str, nonces: Tensor) -> Tensor:
    """One 64-bit key per nonce: the splitmix64 stream of the (purpose, block, host) root at the nonce."""
    return mix64(_root_key(purpose, block_hash, public_key) + nonces * _GAMMA)


def nonce_inputs(
    profile: ModelProfile, block_hash: str, public_key: str, nonces: Sequence[int] | Tensor, device: torch.device | str
) -> Tensor:
    """(B, seq_len, dim) float32 standard-normal model inputs, one per nonce, keyed by (block, host, nonce)."""
    keys = _nonce_keys("input", block_hash, public_key, _nonce_tensor(nonces, device))
    return _normals(keys, profile.seq_len * profile.dim).reshape(-1, profile.seq_len, profile.dim)


@lru_cache(maxsize=8)
def _units(vocab: int, device: torch.device) -> Tensor:
    """Residues a with gcd(a, vocab) = 1: the multipliers that make i -> a*i + b a bijection mod vocab."""
    return torch.tensor([a for a in range(vocab) if math.gcd(a, vocab) == 1], dtype=torch.int64, device=device)


def nonce_permutations(
    vocab: int, block_hash: str, public_key: str, nonces: Sequence[int] | Tensor, device: torch.device | str
) -> Tensor:
    """(B, vocab) index maps i -> (a*i + b) mod vocab, with a unit a and offset b keyed by (block, host, nonce).

    An affine bijection is computed elementwise (no sort, which costs as much as a tiny model's forward
    pass). Logit coordinates of a random decoder have no index structure, so it decorrelates the output
    from the target as a uniform permutation does; two nonces' maps agree on few positions.
    """
    nonce_tensor = _nonce_tensor(nonces, device)
    words = _nonce_keys("permutation", block_hash, public_key, nonce_tensor)
    units = _units(vocab, nonce_tensor.device)
    multipliers = units[torch.remainder(_shr(words, 32), units.numel())]
    offsets = torch.remainder(words.bitwise_and_(0xFFFFFFFF), vocab)
    # floor(vocab * frac((a*i + b + 1/2) / vocab)) is (a*i + b) mod vocab: the half keeps every value
    # 1/(2 vocab) from an integer, far beyond float64 rounding, and it is cheaper than integer remainder.
    positions = _positions(vocab, nonce_tensor.device, torch.float64)
    starts, steps = (offsets.double() + 0.5) / vocab, multipliers.double() / vocab
    scaled = steps[:, None] * positions + starts[:, None]
    return scaled.frac_().mul_(vocab).long()


def target_vector(block_hash: str, vocab: int, device: torch.device | str = "cpu") -> Tensor:
    """(vocab,) float32 random unit vector keyed by the block hash alone: the direction hits must approach."""
    key = torch.tensor([_root_key("target", block_hash)], dtype=torch.int64, device=device)
    return torch.nn.functional.normalize(_normals(key, vocab)[0], dim=0)


def _batch_distances(
    runner: ModelRunner, target: Tensor, block_hash: str, public_key: str, nonces: Tensor
) -> Tensor:
    """Distances of up to batch_size nonces, always run as a full batch (short ones repeat the last nonce).

    BLAS and reduction kernels choose their summation order by shape, so a fixed shape is what makes a
    nonce's distance bit-identical whether it was mined in a batch or is recomputed alone.
    """
    profile = runner.profile
    count = nonces.numel()
    padded = torch.cat([nonces, nonces[-1:].expand(profile.batch_size - count)])
    logits = runner.last_logits(nonce_inputs(profile, block_hash, public_key, padded, runner.device))
    permuted = torch.gather(logits, 1, nonce_permutations(profile.vocab, block_hash, public_key, padded, runner.device))
    return torch.linalg.vector_norm(torch.nn.functional.normalize(permuted, dim=1) - target, dim=1)[:count]


def _distances(runner: ModelRunner, block_hash: str, public_key: str, batches: Iterable[Tensor]) -> np.ndarray:
    """float64 distances of batches of nonces, copied off the device once at the end (no sync per batch)."""
    target = target_vector(block_hash, runner.profile.vocab, runner.device)
    parts = [_batch_distances(runner, target, block_hash, public_key, batch) for batch in batches]
    return torch.cat(parts).cpu().numpy().astype(np.float64) if parts else np.empty(0, dtype=np.float64)


def compute_distances(
    runner: ModelRunner, block_hash: str, public_key: str, nonces: Sequence[int] | np.ndarray
) -> np.ndarray:
    """float64 array of each nonce's distance ||permuted normalised last logits - target||, in input order."""
    batches = torch.split(_nonce_tensor(nonces, runner.device), runner.profile.batch_size)
    return _distances(runner, block_hash, public_key, (batch for batch in batches if batch.numel()))


def mine(
    runner: ModelRunner, block_hash: str, public_key: str, nonce_start: int, n_nonces: int, r_target: float
) -> tuple[list[int], list[float]]:
    """Score nonces nonce_start .. nonce_start + n_nonces - 1 in batches; return the hits (distance < r_target)."""
    end, size = nonce_start + n_nonces, runner.profile.batch_size
    if nonce_start < 0 or n_nonces < 0 or end > _MAX_NONCE:
        raise ValueError(f"nonce range [{nonce_start}, {end}) must lie within [0, 2**63)")
    starts = range(nonce_start, end, size)
    batches = (torch.arange(start, min(start + size, end), device=runner.device) for start in starts)
    distances = _distances(runner, block_hash, public_key, batches)
    hits = np.flatnonzero(distances < r_target)
    return (nonce_start + hits).tolist(), distances[hits].tolist()


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
    validator_public_key: str, block_hash: str, epoch: int, nonces: Sequence[int], n_max: int = 200
) -> list[int]:
    """The min(n_max, len(nonces)) nonces a validator recomputes, ascending.

    Each nonce is ranked by SHA-256 of (validator key, block hash, epoch, nonce), so the sample is
    deterministic, differs per validator, and does not depend on the order the host listed its nonces.
    """
    if len(nonces) <= n_max:
        return sorted(int(nonce) for nonce in nonces)
    seed = hashlib.sha256("|".join((_DOMAIN, "sample", validator_public_key, block_hash, str(epoch))).encode()).digest()
    ranked = sorted(
        (int(nonce) for nonce in nonces),
        key=lambda nonce: (hashlib.sha256(seed + nonce.to_bytes(8, "little")).digest(), nonce),
    )
    return sorted(ranked[:n_max])


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


def count_mismatches(recomputed_distances: Sequence[float] | np.ndarray, r_target: float) -> int:
    """Claimed hits whose recomputed distance is not below r_target."""
    return int(np.count_nonzero(np.asarray(recomputed_distances, dtype=np.float64) >= r_target))


def sprint_accepted(valid_weight: int, total_weight: int) -> bool:
    """A host's sprint stands iff validators voting "valid" hold more than half the weight (floored)."""
    return valid_weight > total_weight // 2


def cap_fraction(n_hosts: int, c: float) -> float:
    """The power-cap fraction for a network of n_hosts: c, raised for networks of fewer than 4 hosts."""
    return max(c, SMALL_NETWORK_CAP.get(n_hosts, c))


def power_cap(weights: Sequence[int], c: float) -> list[int]:
    """Cap every weight so no host holds more than fraction c of the capped total; input order is kept.

    PROTOCOL.md's walk over the ascending weights, in exact rational arithmetic with c at its
    decimal value (0.4 is 2/5), so boundary cases do not depend on float rounding.
    """
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
    base_fraction: float = 0.2,
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
