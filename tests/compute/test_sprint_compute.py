"""Sprint compute against PROTOCOL.md section 3: the counter-based generator, nonce distances, mining and calibration."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gonka_pipelines.compute import _streams
from gonka_pipelines.compute import sprint as poc
from gonka_pipelines.compute.profiles import load_profile
from gonka_pipelines.compute.runner import ModelRunner
from gonka_pipelines.protocol import sprint

TINY = load_profile("poc-tiny")
BLOCK = "9f" * 32
HOST = "a1" * 32
CALIBRATION_NONCES = 8192


@pytest.fixture(scope="module")
def runner() -> ModelRunner:
    return ModelRunner(TINY, bytes.fromhex(BLOCK), device="cpu")


@pytest.fixture(scope="module")
def distances(runner: ModelRunner) -> np.ndarray:
    return poc.compute_distances(runner, BLOCK, HOST, range(CALIBRATION_NONCES))


def splitmix64_reference(z: int) -> int:
    mask = 2**64 - 1
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return z ^ (z >> 31)


# --- the counter-based generator ----------------------------------------------------------------


def test_mix64_is_splitmix64_with_wrapping_int64_arithmetic() -> None:
    words = [0, 1, 2**63 - 1, 2**63, 2**64 - 1, 0x0123456789ABCDEF]
    signed = torch.tensor([w - 2**64 if w >= 2**63 else w for w in words], dtype=torch.int64)
    assert [v % 2**64 for v in poc.mix64(signed).tolist()] == [splitmix64_reference(w) for w in words]


def test_nonce_inputs_are_standard_normal_and_keyed_by_block_host_and_nonce() -> None:
    x = poc.nonce_inputs(TINY, BLOCK, HOST, range(64), "cpu")
    assert x.shape == (64, TINY.seq_len, TINY.dim) and x.dtype == torch.float32
    assert abs(x.mean().item()) < 0.01 and x.std().item() == pytest.approx(1.0, abs=0.01)
    assert ((x**4).mean() / (x**2).mean() ** 2).item() == pytest.approx(3.0, abs=0.05)  # normal kurtosis
    assert torch.equal(poc.nonce_inputs(TINY, BLOCK, HOST, [37], "cpu")[0], x[37])
    for other in ((TINY, "00" * 32, HOST, [37]), (TINY, BLOCK, "b2" * 32, [37]), (TINY, BLOCK, HOST, [38])):
        assert not torch.equal(poc.nonce_inputs(*other, "cpu")[0], x[37])


@pytest.mark.parametrize("vocab", [1024, 8196, 260])
def test_nonce_permutations_are_bijections_that_differ_per_nonce(vocab: int) -> None:
    perms = poc.nonce_permutations(vocab, BLOCK, HOST, range(32), "cpu")
    assert torch.equal(perms.sort(dim=1).values, torch.arange(vocab).expand(32, vocab))
    assert len({tuple(row.tolist()) for row in perms}) == 32
    assert torch.equal(poc.nonce_permutations(vocab, BLOCK, HOST, [5], "cpu")[0], perms[5])


def test_target_is_a_unit_vector_keyed_by_the_block_hash_alone() -> None:
    target = poc.target_vector(BLOCK, TINY.vocab)
    assert target.shape == (TINY.vocab,) and torch.linalg.vector_norm(target).item() == pytest.approx(1.0, abs=1e-6)
    assert torch.equal(target, poc.target_vector(BLOCK, TINY.vocab))
    assert not torch.equal(target, poc.target_vector("00" * 32, TINY.vocab))


# --- the C kernels (compute/_streams.c) against the torch ops that define them ---------------------------


EDGE_WORDS = [0, 1, -1, 2**63 - 1, -(2**63), 0x0123456789ABCDEF]


def _words(count: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    random = torch.randint(-(2**63), 2**63 - 1, (count,), dtype=torch.int64, generator=generator)
    return torch.cat([torch.tensor(EDGE_WORDS, dtype=torch.int64), random])


def test_nonce_keys_in_c_equal_the_torch_definition() -> None:
    nonces = torch.cat([torch.tensor([0, 1, 2**63 - 1]), torch.randint(0, 2**62, (200,))])
    for purpose in ("input", "permutation"):
        root = poc._root_key(purpose, BLOCK, HOST)
        assert torch.equal(poc._nonce_keys(purpose, BLOCK, HOST, nonces), poc.mix64(root + nonces * poc._GAMMA))


@pytest.mark.parametrize("half", [1, 3, 17, 512, 1000])
def test_box_muller_uniforms_in_c_equal_the_torch_definition(half: int) -> None:
    keys = _words(100, seed=half)
    radius, angle = poc._uniforms(keys, half)
    torch_radius, torch_angle = poc._uniforms_in_torch(keys, half)
    assert torch.equal(radius, torch_radius) and torch.equal(angle, torch_angle)
    assert 0 < radius.min().item() and radius.max().item() < 1
    assert 0 < angle.min().item() and angle.max().item() < 2 * math.pi


@pytest.mark.parametrize("vocab", [1, 2, 7, 260, 1024, 8196])
def test_logits_permuted_in_c_equal_a_gather_through_the_index_maps(vocab: int) -> None:
    nonces = torch.cat([torch.arange(40), torch.tensor([2**63 - 1])])
    logits = torch.randn(nonces.numel(), vocab, generator=torch.Generator().manual_seed(vocab))
    maps = poc.nonce_permutations(vocab, BLOCK, HOST, nonces, "cpu")
    assert torch.equal(poc.permuted_logits(logits, BLOCK, HOST, nonces), torch.gather(logits, 1, maps))
    assert torch.equal(poc.permuted_logits(logits.double(), BLOCK, HOST, nonces), torch.gather(logits.double(), 1, maps))


def test_the_c_kernels_refuse_buffers_of_the_wrong_size() -> None:
    keys = torch.zeros(4, dtype=torch.int64).numpy()
    with pytest.raises(ValueError, match="radius holds 60 bytes, expected 64"):
        _streams.uniforms(keys, 4, np.zeros(15, np.float32), np.zeros(16, np.float32), 0.1, 0.1)
    with pytest.raises(ValueError, match="out holds 24 bytes, expected 32"):
        _streams.keys(7, keys, np.zeros(3, np.int64))
    ones = np.ones(4, np.int64)
    with pytest.raises(ValueError, match="row 2's multiplier or offset lies outside \\[0, 5\\)"):
        _streams.affine_gather(ones, np.array([0, 1, 5, 2]), np.zeros(20, np.float32), np.zeros(20, np.float32))
    with pytest.raises(ValueError, match="logits that many non-empty float32 rows"):
        _streams.affine_gather(ones, ones, np.zeros(21, np.float32), np.zeros(21, np.float32))


# --- distances and mining -----------------------------------------------------------------------


def test_a_nonce_recomputed_alone_has_the_bit_identical_distance(runner: ModelRunner, distances: np.ndarray) -> None:
    for nonce in (0, 1, 127, 128, 4095, CALIBRATION_NONCES - 1):
        assert poc.compute_distances(runner, BLOCK, HOST, [nonce])[0] == distances[nonce]
    sampled = [8000, 3, 129, 4000]
    assert poc.compute_distances(runner, BLOCK, HOST, sampled).tolist() == distances[sampled].tolist()


def test_a_rebuilt_model_gives_the_same_distances(distances: np.ndarray) -> None:
    rebuilt = ModelRunner(TINY, bytes.fromhex(BLOCK), device="cpu")
    assert poc.compute_distances(rebuilt, BLOCK, HOST, range(256)).tolist() == distances[:256].tolist()


def test_distances_spread_around_sqrt2_like_random_directions(distances: np.ndarray) -> None:
    assert distances.dtype == np.float64
    assert distances.mean() == pytest.approx(math.sqrt(2), abs=1e-3)
    assert distances.std() == pytest.approx(1 / math.sqrt(2 * TINY.vocab), rel=0.05)  # sd of sqrt(2 - 2 cos)


def test_mine_keeps_exactly_the_hits(runner: ModelRunner, distances: np.ndarray) -> None:
    r_target = sprint.calibrate_r_target(TINY.vocab, 0.05)
    nonces, hit_distances = poc.mine(runner, BLOCK, HOST, 100, 300, r_target)
    expected = [n for n in range(100, 400) if distances[n] < r_target]
    assert nonces == expected and len(expected) > 0
    assert hit_distances == distances[expected].tolist()
    assert poc.mine(runner, BLOCK, HOST, 0, 0, r_target) == ([], [])
    with pytest.raises(ValueError, match="nonce range"):
        poc.mine(runner, BLOCK, HOST, -1, 10, r_target)


def test_ml_nodes_mine_disjoint_interleaved_streams(runner: ModelRunner, distances: np.ndarray) -> None:
    """Node i of n mines i, i + n, i + 2n, ... (Gonka's NonceIterator): n nodes cover 0 .. n * count - 1 exactly once."""
    r_target = sprint.calibrate_r_target(TINY.vocab, 0.2)
    streams = [poc.mine(runner, BLOCK, HOST, node, 100, r_target, stride=3) for node in range(3)]
    for node, (nonces, hit_distances) in enumerate(streams):
        assert nonces == [n for n in range(node, 300, 3) if distances[n] < r_target] and nonces
        assert all(n % 3 == node for n in nonces) and hit_distances == distances[nonces].tolist()
    assert sorted(n for nonces, _ in streams for n in nonces) == [n for n in range(300) if distances[n] < r_target]
    with pytest.raises(ValueError, match="step 0"):
        poc.mine(runner, BLOCK, HOST, 0, 10, r_target, stride=0)


def test_nonces_outside_int64_range_are_refused(runner: ModelRunner) -> None:
    with pytest.raises(ValueError, match=r"nonces must be integers in \[0, 2\*\*63\), got -1"):
        poc.compute_distances(runner, BLOCK, HOST, [3, -1])
    with pytest.raises(ValueError, match="nonces must be integers"):
        poc.compute_distances(runner, BLOCK, HOST, [2**64])
    assert poc.compute_distances(runner, BLOCK, HOST, []).shape == (0,)
    as_array = poc.compute_distances(runner, BLOCK, HOST, np.array([5, 9]))
    assert as_array.tolist() == poc.compute_distances(runner, BLOCK, HOST, [5, 9]).tolist()


# --- calibration --------------------------------------------------------------------------------


@pytest.mark.parametrize("hit_rate", [0.05, 0.01])
def test_calibrated_r_target_gives_the_wanted_hit_rate(distances: np.ndarray, hit_rate: float) -> None:
    r_target = sprint.calibrate_r_target(TINY.vocab, hit_rate)
    measured = float(np.mean(distances < r_target))
    sigma = math.sqrt(hit_rate * (1 - hit_rate) / CALIBRATION_NONCES)
    assert abs(measured - hit_rate) < 4.5 * sigma  # a wrong formula would be off by far more

