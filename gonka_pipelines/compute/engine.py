"""The model compute an epoch needs, behind one seam: torch models through accelerate, or a stand-in for benchmarks."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, lru_cache, partial
from pathlib import Path
from typing import Protocol

import numpy as np
import pyarrow as pa
import torch

from gonka_pipelines.compute.llm import (
    EOS,
    encode,
    generate_greedy,
    generations_table,
    score_forced,
    scores_table,
)
from gonka_pipelines.compute.profiles import cheaper_profile, load_profile
from gonka_pipelines.compute.runner import ModelRunner, reproducible_threads, resolve_device, served_model_seed
from gonka_pipelines.compute.sprint import compute_distances, mine
from gonka_pipelines.compute.training import TrainingRun, TrainingSpec, evaluate, read_checkpoint, restore, train
from gonka_pipelines.protocol.crypto import sha256_hex
from gonka_pipelines.protocol.params import Behaviour


def _timed(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


@lru_cache(maxsize=8)
def _runner(model: str, seed: bytes, device: str | None) -> ModelRunner:
    return ModelRunner(load_profile(model), seed, device)


@lru_cache(maxsize=4)
def _cheaper_runner(model: str, device: str | None) -> ModelRunner:
    profile = cheaper_profile(load_profile(model))
    return ModelRunner(profile, served_model_seed(profile.name), device)


class Compute(Protocol):
    """The model compute an epoch needs: mine and recompute sprint nonces, generate and judge served tasks."""

    @property
    def sprint_batch_size(self) -> int: ...

    def mine(self, public_key: str, nonce_start: int, count: int, r_target: float, stride: int = 1) -> tuple[list[int], list[float]]: ...

    def distances(self, public_key: str, nonces: list[int]) -> np.ndarray: ...

    def generate(self, model: str, version: str, executor: str, behaviour: str, prompts: list[str],
                 max_tokens: int) -> pa.Table:
        """The executor's completions of the prompts as columns (compute.llm.GENERATION_SCHEMA, a row per prompt)."""
        ...

    @property
    def eos_token(self) -> int: ...

    def score(self, model: str, version: str, prompts: pa.Array, outputs: pa.Array) -> pa.Table:
        """Honest re-runs of the model version forcing each output (prompts a string column, outputs a column of token
        id lists: a validator re-runs a million outputs, which need not become Python lists on the way), as columns
        (compute.llm.SCORE_SCHEMA, a row per output)."""
        ...

    def train(self, model: str, base: bytes | None, data: bytes, spec: TrainingSpec, first_step: int = 0,
              last_step: int | None = None) -> TrainingRun: ...

    def evaluate(self, model: str, checkpoint: bytes | None, data: bytes, windows: int) -> float: ...

    @property
    def bit_exact(self) -> bool:
        """Whether a re-run reproduces training bytes exactly (CPU), so validators compare checkpoint hashes; else
        (CUDA) they compare weights and losses within the params' tolerances."""
        ...


class TorchCompute:
    """Real compute: the sprint model seeded from the epoch's block hash, model versions restored from checkpoints."""

    def __init__(self, sprint_model: str, prev_hash: str, device: str | None = None,
                 checkpoints: Callable[[str], bytes] | None = None):
        """checkpoints: the checkpoint of a model version by hash (the chain's artifacts); without it, or for version
        '', a model runs its genesis weights, seeded from its name."""
        self.sprint_model, self.prev_hash, self.device = sprint_model, prev_hash, device
        self.checkpoints = checkpoints

    @property
    def bit_exact(self) -> bool:
        return resolve_device(self.device).type == "cpu"

    @cached_property
    def sprint_runner(self) -> ModelRunner:
        return ModelRunner(load_profile(self.sprint_model), bytes.fromhex(self.prev_hash), self.device)

    @property
    def sprint_batch_size(self) -> int:
        return self.sprint_runner.profile.batch_size

    def mine(self, public_key: str, nonce_start: int, count: int, r_target: float, stride: int = 1) -> tuple[list[int], list[float]]:
        with reproducible_threads(self.sprint_runner.device):
            return mine(self.sprint_runner, self.prev_hash, public_key, nonce_start, count, r_target, stride)

    def nonce_rate(self, batches: int = 3) -> float:
        """Nonces per second this machine mines with the sprint model (the best of a few batches, after a warm-up):
        what a real-mode sprint of a given duration can expect. A measurement, used only to check a configuration."""
        size = self.sprint_batch_size
        self.mine("00" * 32, 0, size, 0.0)
        best = min(_timed(lambda: self.mine("00" * 32, 0, size, 0.0)) for _ in range(batches))
        return size / max(best, 1e-9)

    def distances(self, public_key: str, nonces: list[int]) -> np.ndarray:
        with reproducible_threads(self.sprint_runner.device):
            return compute_distances(self.sprint_runner, self.prev_hash, public_key, nonces)

    def served(self, model: str, version: str = "", executor: str = "", behaviour: str = Behaviour.HONEST) -> ModelRunner:
        """What an executor runs: the model version ('' or no checkpoint source: the genesis weights), or for
        garbled_output another seeded model of the same shape, for cheaper_model a much smaller one."""
        if behaviour == Behaviour.GARBLED_OUTPUT:
            return _runner(model, bytes.fromhex(sha256_hex(f"garbled|{model}|{executor}".encode())), self.device)
        if behaviour == Behaviour.CHEAPER_MODEL:
            return _cheaper_runner(model, self.device)
        if not version or self.checkpoints is None:
            return _runner(model, served_model_seed(model), self.device)
        if (model, version) not in self._version_runners:  # restored once per environment
            self._version_runners[(model, version)] = self._restored(model, self.checkpoints(version))
        return self._version_runners[(model, version)]

    def _restored(self, model: str, checkpoint: bytes) -> ModelRunner:
        """A runner of the model with a checkpoint's weights."""
        profile = load_profile(model)
        decoder, _, _ = restore(profile, checkpoint, served_model_seed(model), 1e-3, torch.device("cpu"), weights_only=True)
        return ModelRunner(profile, served_model_seed(model), self.device, decoder=decoder)

    @cached_property
    def _version_runners(self) -> dict[tuple[str, str], ModelRunner]:
        return {}

    def generate(self, model: str, version: str, executor: str, behaviour: str, prompts: list[str],
                 max_tokens: int) -> pa.Table:
        runner = self.served(model, version, executor, behaviour)
        with reproducible_threads(runner.device):
            return generations_table(generate_greedy(runner, [encode(p) for p in prompts], max_tokens))

    @property
    def eos_token(self) -> int:
        return EOS

    def score(self, model: str, version: str, prompts: pa.Array, outputs: pa.Array) -> pa.Table:
        """Honest re-runs of the model version forcing the executors' tokens: top-5 ids and log-probs per position."""
        runner = self.served(model, version)
        with reproducible_threads(runner.device):
            return scores_table([score_forced(runner, encode(prompt), output)
                                 for prompt, output in zip(prompts.to_pylist(), outputs.to_pylist(), strict=True)])

    def train(self, model: str, base: bytes | None, data: bytes, spec: TrainingSpec, first_step: int = 0,
              last_step: int | None = None) -> TrainingRun:
        """Fine-tune a served model's version (base: its checkpoint; None: the genesis weights) through accelerate."""
        return train(load_profile(model), served_model_seed(model), base, data, spec, first_step, last_step, self.device)

    def evaluate(self, model: str, checkpoint: bytes | None, data: bytes, windows: int) -> float:
        """A version's mean next-byte loss on `windows` held-out windows (drawn with seed 0, the same for everyone)."""
        return evaluate(load_profile(model), served_model_seed(model), checkpoint, data, windows, seed=0, device=self.device)


@dataclass(frozen=True)
class TorchComputeSpec:
    """What builds an epoch's TorchCompute anywhere (a Ray worker, another machine sharing the checkpoint folder):
    small, picklable, and hashable so each worker builds it once and reuses its models."""

    sprint_model: str
    prev_hash: str
    device: str | None
    checkpoints: str | None
    """The folder of content-addressed checkpoints (the chain's artifacts); None: model versions run genesis weights."""

    def build(self) -> TorchCompute:
        reader = partial(read_checkpoint, Path(self.checkpoints)) if self.checkpoints is not None else None
        return TorchCompute(self.sprint_model, self.prev_hash, self.device, reader)
