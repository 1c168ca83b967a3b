"""The torch half of the sprint (PROTOCOL.md section 3): seeded nonce inputs, permutations, target, distances, mining.

Random inputs, permutations and the target come from a counter-based generator (the splitmix64
finaliser over int64 tensors) keyed by SHA-256 of the block hash and public key: a whole batch of
nonces is generated in a few tensor ops on the model's device, and any single nonce is reproducible
alone. Integer ops are exact on every device (the permutation's float64 step has a wide margin), so
only Box-Muller and the model itself may round differently on CPU and GPU. On CPU the integer steps and the
permuting gather run in C (compute/_streams.c: one pass each, the same bits as the torch ops here).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

from gonka_pipelines.compute import _streams
from gonka_pipelines.compute.profiles import ModelProfile
from gonka_pipelines.compute.runner import ModelRunner
from gonka_pipelines.protocol.sprint import POC_DOMAIN

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
    digest = hashlib.sha256("|".join((POC_DOMAIN, purpose, *parts)).encode()).digest()
    return _int64(int.from_bytes(digest[:8], "little"))


@lru_cache(maxsize=32)
def _positions(count: int, device: torch.device, dtype: torch.dtype = torch.int64) -> Tensor:
    """0..count-1 on the device (cached: the same few sizes recur every batch)."""
    return torch.arange(count, dtype=dtype, device=device)


@lru_cache(maxsize=32)
def _counters(count: int, device: torch.device) -> Tensor:
    """1..count times the stream increment: the splitmix64 states of a stream relative to its key."""
    return (_positions(count, device) + 1) * _GAMMA


def _uniforms(keys: Tensor, half: int) -> tuple[Tensor, Tensor]:
    """(B, half) float32 Box-Muller inputs of each row's stream: radius uniforms in (0, 1) and angles in (0, 2 pi).

    Word j of row b is mix64(keys[b] + (j + 1) * gamma); its high 24 bits give the radius uniform, its low 24 bits
    the angle. On CPU the C kernel makes the same bits in one pass (torch's ops take about twenty).
    """
    if keys.device.type != "cpu":
        return _uniforms_in_torch(keys, half)
    radius, angle = torch.empty((keys.numel(), half)), torch.empty((keys.numel(), half))
    step = 2.0**-_UNIFORM_BITS
    _streams.uniforms(keys.contiguous().numpy(), half, radius.numpy(), angle.numpy(), 2 * math.pi * step, math.pi * step)
    return radius, angle


def _uniforms_in_torch(keys: Tensor, half: int) -> tuple[Tensor, Tensor]:
    """_uniforms on any device, in torch ops: the definition the C kernel reproduces."""
    step = 2.0**-_UNIFORM_BITS
    words = mix64(keys[:, None] + _counters(half, keys.device))
    radius = _shr(words, 64 - _UNIFORM_BITS).float().mul_(step).add_(step / 2)
    angle = words.bitwise_and_((1 << _UNIFORM_BITS) - 1).float().mul_(2 * math.pi * step).add_(math.pi * step)
    return radius, angle


def _normals(keys: Tensor, count: int) -> Tensor:
    """(B, count) float32 standard normals: Box-Muller on the splitmix64 stream of each row's key.

    A row depends on its key alone; each word gives two normals (radius times cosine, then times sine).
    """
    half = (count + 1) // 2
    radius, angle = _uniforms(keys, half)
    radius = radius.log_().mul_(-2.0).sqrt_()
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


def _nonce_keys(purpose: str, prev_hash: str, public_key: str, nonces: Tensor) -> Tensor:
    """One 64-bit key per nonce: the splitmix64 stream of the (purpose, block, host) root at the nonce."""
    root = _root_key(purpose, prev_hash, public_key)
    if nonces.device.type == "cpu":
        keys = torch.empty(nonces.shape, dtype=torch.int64)
        _streams.keys(root, nonces.contiguous().numpy(), keys.numpy())
        return keys
    return mix64(root + nonces * _GAMMA)


def nonce_inputs(
    profile: ModelProfile, prev_hash: str, public_key: str, nonces: Sequence[int] | Tensor, device: torch.device | str
) -> Tensor:
    """(B, seq_len, dim) float32 standard-normal model inputs, one per nonce, keyed by (block, host, nonce)."""
    keys = _nonce_keys("input", prev_hash, public_key, _nonce_tensor(nonces, device))
    return _normals(keys, profile.seq_len * profile.dim).reshape(-1, profile.seq_len, profile.dim)


@lru_cache(maxsize=8)
def _units(vocab: int, device: torch.device) -> Tensor:
    """Residues a with gcd(a, vocab) = 1: the multipliers that make i -> a*i + b a bijection mod vocab."""
    return torch.tensor([a for a in range(vocab) if math.gcd(a, vocab) == 1], dtype=torch.int64, device=device)


def _affine_parameters(vocab: int, prev_hash: str, public_key: str, nonces: Tensor) -> tuple[Tensor, Tensor]:
    """Each nonce's map i -> (a*i + b) mod vocab as (a, b): a unit a and an offset b keyed by (block, host, nonce)."""
    words = _nonce_keys("permutation", prev_hash, public_key, nonces)
    units = _units(vocab, nonces.device)
    return units[torch.remainder(_shr(words, 32), units.numel())], torch.remainder(words.bitwise_and_(0xFFFFFFFF), vocab)


def nonce_permutations(
    vocab: int, prev_hash: str, public_key: str, nonces: Sequence[int] | Tensor, device: torch.device | str
) -> Tensor:
    """(B, vocab) index maps i -> (a*i + b) mod vocab, with a unit a and offset b keyed by (block, host, nonce).

    An affine bijection is computed elementwise (no sort, which costs as much as a tiny model's forward
    pass). Logit coordinates of a random decoder have no index structure, so it decorrelates the output
    from the target as a uniform permutation does; two nonces' maps agree on few positions.
    """
    nonce_tensor = _nonce_tensor(nonces, device)
    multipliers, offsets = _affine_parameters(vocab, prev_hash, public_key, nonce_tensor)
    # floor(vocab * frac((a*i + b + 1/2) / vocab)) is (a*i + b) mod vocab: the half keeps every value
    # 1/(2 vocab) from an integer, far beyond float64 rounding, and it is cheaper than integer remainder.
    positions = _positions(vocab, nonce_tensor.device, torch.float64)
    starts, steps = (offsets.double() + 0.5) / vocab, multipliers.double() / vocab
    scaled = steps[:, None] * positions + starts[:, None]
    return scaled.frac_().mul_(vocab).long()


def permuted_logits(logits: Tensor, prev_hash: str, public_key: str, nonces: Tensor) -> Tensor:
    """(B, vocab) logits, row b permuted by nonce b's map: gathered through nonce_permutations, or for float32 on CPU
    in C without writing the maps out (1 MiB of int64 for a poc-tiny batch)."""
    if logits.device.type != "cpu" or logits.dtype != torch.float32:
        return torch.gather(logits, 1, nonce_permutations(logits.shape[1], prev_hash, public_key, nonces, logits.device))
    multipliers, offsets = _affine_parameters(logits.shape[1], prev_hash, public_key, _nonce_tensor(nonces, "cpu"))
    permuted = torch.empty_like(logits)
    _streams.affine_gather(multipliers.contiguous().numpy(), offsets.contiguous().numpy(), logits.contiguous().numpy(), permuted.numpy())
    return permuted


def target_vector(prev_hash: str, vocab: int, device: torch.device | str = "cpu") -> Tensor:
    """(vocab,) float32 random unit vector keyed by the block hash alone: the direction hits must approach."""
    key = torch.tensor([_root_key("target", prev_hash)], dtype=torch.int64, device=device)
    return torch.nn.functional.normalize(_normals(key, vocab)[0], dim=0)


@lru_cache(maxsize=4)
def _shared_target(prev_hash: str, vocab: int, device: torch.device) -> Tensor:
    """target_vector, made once per block and device (mining calls come one model batch at a time): read, never written."""
    return target_vector(prev_hash, vocab, device)


def _batch_distances(
    runner: ModelRunner, target: Tensor, prev_hash: str, public_key: str, nonces: Tensor
) -> Tensor:
    """Distances of up to batch_size nonces, always run as a full batch (short ones repeat the last nonce).

    BLAS and reduction kernels choose their summation order by shape, so a fixed shape is what makes a
    nonce's distance bit-identical whether it was mined in a batch or is recomputed alone.
    """
    profile = runner.profile
    count = nonces.numel()
    padded = torch.cat([nonces, nonces[-1:].expand(profile.batch_size - count)])
    logits = runner.last_logits(nonce_inputs(profile, prev_hash, public_key, padded, runner.device))
    permuted = permuted_logits(logits, prev_hash, public_key, padded)
    return torch.linalg.vector_norm(torch.nn.functional.normalize(permuted, dim=1) - target, dim=1)[:count]


def _distances(runner: ModelRunner, prev_hash: str, public_key: str, batches: Iterable[Tensor]) -> np.ndarray:
    """float64 distances of batches of nonces, copied off the device once at the end (no sync per batch)."""
    target = _shared_target(prev_hash, runner.profile.vocab, runner.device)
    parts = [_batch_distances(runner, target, prev_hash, public_key, batch) for batch in batches]
    return torch.cat(parts).cpu().numpy().astype(np.float64) if parts else np.empty(0, dtype=np.float64)


def compute_distances(
    runner: ModelRunner, prev_hash: str, public_key: str, nonces: Sequence[int] | np.ndarray
) -> np.ndarray:
    """float64 array of each nonce's distance ||permuted normalised last logits - target||, in input order."""
    batches = torch.split(_nonce_tensor(nonces, runner.device), runner.profile.batch_size)
    return _distances(runner, prev_hash, public_key, (batch for batch in batches if batch.numel()))


def mine(
    runner: ModelRunner, prev_hash: str, public_key: str, nonce_start: int, n_nonces: int, r_target: float, stride: int = 1
) -> tuple[list[int], list[float]]:
    """Score the n_nonces nonces nonce_start, nonce_start + stride, ... in batches; return the hits (distance < r_target).
    A stride of n gives one of a host's n ML nodes its own stream (PROTOCOL section 3)."""
    end, size = nonce_start + n_nonces * stride, runner.profile.batch_size * stride
    if nonce_start < 0 or n_nonces < 0 or stride < 1 or end > _MAX_NONCE:
        raise ValueError(f"nonce range [{nonce_start}, {end}) step {stride} must lie within [0, 2**63)")
    starts = range(nonce_start, end, size)
    batches = (torch.arange(start, min(start + size, end), stride, device=runner.device) for start in starts)
    distances = _distances(runner, prev_hash, public_key, batches)
    hits = np.flatnonzero(distances < r_target)
    return (nonce_start + hits * stride).tolist(), distances[hits].tolist()
