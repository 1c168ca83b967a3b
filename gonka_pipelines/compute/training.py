"""Training through accelerate: fine-tune a language model on corpus bytes, with content-addressed checkpoints.

A run is fully determined by (base checkpoint, shard bytes, steps, batch size, learning rate, seed): step s trains on
`batch_size` windows of the shards drawn from SHA-256(seed ‖ s), so any step range can be re-run from the checkpoint
before it and, on CPU, gives the same bytes. A checkpoint holds the model weights and the AdamW state (safetensors,
tensors in name order) plus the step it was taken after; its SHA-256 is its identity and a model version's hash.
`accelerate` places the model, runs bf16 autocast on CUDA (fp32 on CPU) and accumulates gradients when a batch is
larger than the profile's micro-batch.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch import Tensor

from gonka_pipelines.compute.decoder import Decoder, build_seeded_decoder
from gonka_pipelines.compute.llm import BOS
from gonka_pipelines.compute.profiles import ModelProfile
from gonka_pipelines.compute.runner import reproducible_threads, resolve_device

MODEL_PREFIX, STATE_PREFIX = "model.", "adam."
STEP_KEY = "step"
BETAS, EPS, WEIGHT_DECAY = (0.9, 0.95), 1e-8, 0.0


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt or not the one named: the message names the file and hash."""


@dataclass(frozen=True)
class TrainingSpec:
    """What a training task asks: how many optimizer steps, on which bytes, how."""

    steps: int
    batch_size: int
    learning_rate: float
    seed: int
    checkpoint_every: int


@dataclass(frozen=True)
class TrainingRun:
    """What an executor returns: the loss of every step, tokens processed, and the checkpoints (step, hash, bytes)
    taken every `checkpoint_every` steps and after the last one."""

    losses: list[float]
    tokens: int
    checkpoints: list[tuple[int, str, bytes]]

    @property
    def final_hash(self) -> str:
        return self.checkpoints[-1][1]


def checkpoint_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def step_windows(data_length: int, window: int, seed: int, step: int, batch_size: int) -> list[int]:
    """Start offsets of the batch_size windows step `step` trains on, from SHA-256(seed ‖ step): replayable anywhere."""
    if data_length <= window:
        raise ValueError(f"the shards hold {data_length} bytes, fewer than one window of {window + 1}")
    digest = b""
    counter = 0
    while len(digest) < 8 * batch_size:
        digest += hashlib.sha256(f"train|{seed}|{step}|{counter}".encode()).digest()
        counter += 1
    return [int.from_bytes(digest[8 * i: 8 * i + 8], "big") % (data_length - window) for i in range(batch_size)]


def _batch(data: bytes, offsets: Sequence[int], window: int) -> tuple[Tensor, Tensor]:
    """Inputs (BOS then the window's bytes) and targets (the window's bytes, then the next one)."""
    rows = [torch.tensor(list(data[o: o + window]), dtype=torch.int64) for o in offsets]
    tokens = torch.stack(rows)
    inputs = torch.cat([torch.full((len(rows), 1), BOS, dtype=torch.int64), tokens[:, :-1]], dim=1)
    return inputs, tokens


def _accelerator(device: torch.device, accumulation: int) -> Accelerator:
    """An Accelerator for this device: bf16 autocast on CUDA, fp32 on CPU. Its precision is process-wide in accelerate,
    and nothing else in the project creates one, so every training run of a process agrees with the first."""
    precision = "bf16" if device.type == "cuda" else "no"
    return Accelerator(cpu=device.type == "cpu", mixed_precision=precision, gradient_accumulation_steps=accumulation)


def serialize(model: Decoder, optimizer: torch.optim.AdamW, step: int) -> bytes:
    """A checkpoint's bytes: weights and AdamW moments in fp32, in name order, with the step it follows."""
    tensors = {MODEL_PREFIX + name: tensor.detach().float().cpu().contiguous() for name, tensor in model.state_dict().items()
               if not name.startswith("rope_")}
    names = {id(param): name for name, param in model.named_parameters()}
    for param, state in optimizer.state.items():
        for key in ("exp_avg", "exp_avg_sq"):
            tensors[f"{STATE_PREFIX}{names[id(param)]}.{key}"] = state[key].detach().float().cpu().contiguous()
    return save_tensors(dict(sorted(tensors.items())), metadata={STEP_KEY: str(step)})


def restore(profile: ModelProfile, checkpoint: bytes | None, seed: bytes, learning_rate: float,
            device: torch.device, weights_only: bool = False) -> tuple[Decoder, torch.optim.AdamW, int]:
    """The model and optimizer a checkpoint holds (None: the profile's seeded genesis weights, fresh moments). With
    weights_only the checkpoint is a model version to start from: fresh moments, step 0."""
    model = build_seeded_decoder(profile, seed).train().requires_grad_(True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY)
    if checkpoint is None:
        return model.to(device), optimizer, 0
    try:
        tensors = load_tensors(checkpoint)
        step = int(_metadata(checkpoint).get(STEP_KEY, "0"))
    except Exception as error:  # safetensors raises its own error types for any malformed file
        raise CheckpointError(f"checkpoint {checkpoint_hash(checkpoint)[:12]} is not a readable safetensors file ({error})") from error
    weights = {k[len(MODEL_PREFIX):]: v for k, v in tensors.items() if k.startswith(MODEL_PREFIX)}
    missing = set(model.state_dict()) - set(weights) - {"rope_cos", "rope_sin"}
    if missing:
        raise CheckpointError(f"checkpoint {checkpoint_hash(checkpoint)[:12]} lacks {sorted(missing)[:3]}: not a {profile.name} checkpoint")
    model.load_state_dict(weights, strict=False)
    model.to(device)
    if weights_only:
        return model, optimizer, 0
    for name, param in model.named_parameters():
        keys = [f"{STATE_PREFIX}{name}.{key}" for key in ("exp_avg", "exp_avg_sq")]
        if all(key in tensors for key in keys):
            optimizer.state[param] = {"step": torch.tensor(float(step)),
                                      "exp_avg": tensors[keys[0]].to(device), "exp_avg_sq": tensors[keys[1]].to(device)}
    return model, optimizer, step


def weight_difference(first: bytes, second: bytes) -> float:
    """The largest absolute difference between two checkpoints' weights (inf when their weights differ in name or
    shape): how a validator compares a re-run where it is not bit-identical (CUDA)."""
    try:
        a, b = ({k: v for k, v in load_tensors(c).items() if k.startswith(MODEL_PREFIX)} for c in (first, second))
    except Exception as error:  # safetensors raises its own error types for any malformed file
        raise CheckpointError(f"a checkpoint is not a readable safetensors file ({error})") from error
    if a.keys() != b.keys() or any(a[k].shape != b[k].shape for k in a):
        return math.inf
    return max((a[k] - b[k]).abs().max().item() for k in a)


def _metadata(checkpoint: bytes) -> dict[str, str]:
    """The safetensors header's metadata (the format: an 8-byte little-endian length, then that much JSON)."""
    header_length = int.from_bytes(checkpoint[:8], "little")
    return json.loads(checkpoint[8: 8 + header_length]).get("__metadata__", {})


def train(profile: ModelProfile, genesis_seed: bytes, base: bytes | None, data: bytes, spec: TrainingSpec,
          first_step: int = 0, last_step: int | None = None, device: str | None = None,
          on_step: Callable[[int, float], None] | None = None) -> TrainingRun:
    """Run optimizer steps first_step .. last_step - 1 (default: all) on `data`, checkpointing every
    spec.checkpoint_every steps and after the last one. From step 0, `base` is the model version to fine-tune (its
    weights; None: the genesis weights); from a later step, the run's own checkpoint after first_step (weights and
    AdamW moments)."""
    last = spec.steps if last_step is None else last_step
    target = resolve_device(device)
    micro = min(spec.batch_size, profile.batch_size)
    accumulation = math.ceil(spec.batch_size / micro)
    window = profile.seq_len
    losses: list[float] = []
    checkpoints: list[tuple[int, str, bytes]] = []
    with reproducible_threads(target):
        torch.manual_seed(spec.seed)
        model, optimizer, restored_step = restore(profile, base, genesis_seed, spec.learning_rate, target,
                                                  weights_only=first_step == 0)
        if restored_step != first_step:
            raise CheckpointError(f"the checkpoint follows step {restored_step}, not {first_step}")
        accelerator = _accelerator(target, accumulation)
        model, optimizer = accelerator.prepare(model, optimizer)
        loss_fn = torch.nn.CrossEntropyLoss()
        for step in range(first_step, last):
            offsets = step_windows(len(data), window, spec.seed, step, spec.batch_size)
            total = 0.0
            for start in range(0, spec.batch_size, micro):
                inputs, targets = _batch(data, offsets[start: start + micro], window)
                inputs, targets = inputs.to(accelerator.device), targets.to(accelerator.device)
                with accelerator.accumulate(model), accelerator.autocast():
                    logits = model(inputs)
                    loss = loss_fn(logits.float().reshape(-1, profile.vocab), targets.reshape(-1))
                    accelerator.backward(loss)
                    optimizer.step()
                    optimizer.zero_grad()
                total += loss.item() * len(offsets[start: start + micro])
            losses.append(total / spec.batch_size)
            if on_step is not None:
                on_step(step, losses[-1])
            done = step + 1
            if done % spec.checkpoint_every == 0 or done == last:
                data_bytes = serialize(accelerator.unwrap_model(model), optimizer.optimizer, done)
                checkpoints.append((done, checkpoint_hash(data_bytes), data_bytes))
    return TrainingRun(losses, (last - first_step) * spec.batch_size * window, checkpoints)


def evaluate(profile: ModelProfile, genesis_seed: bytes, checkpoint: bytes | None, data: bytes, windows: int, seed: int,
             device: str | None = None) -> float:
    """Mean next-byte cross-entropy of a checkpoint (None: genesis weights) on `windows` windows of held-out bytes."""
    target = resolve_device(device)
    with reproducible_threads(target), torch.inference_mode():
        model, _, _ = restore(profile, checkpoint, genesis_seed, 1e-3, target)
        model.eval()
        offsets = step_windows(len(data), profile.seq_len, seed, 0, windows)
        total = 0.0
        for start in range(0, windows, profile.batch_size):
            inputs, targets = _batch(data, offsets[start: start + profile.batch_size], profile.seq_len)
            logits = model(inputs.to(target)).float()
            total += torch.nn.functional.cross_entropy(
                logits.reshape(-1, profile.vocab), targets.to(target).reshape(-1), reduction="sum").item()
    return total / (windows * profile.seq_len)


def genesis_checkpoint(profile: ModelProfile, genesis_seed: bytes) -> bytes:
    """The checkpoint of a model's genesis version: its seeded random weights, no optimizer state, step 0."""
    model, optimizer, _ = restore(profile, None, genesis_seed, 1e-3, torch.device("cpu"))
    return serialize(model, optimizer, 0)


def write_checkpoint(folder: Path, data: bytes) -> Path:
    """Store a checkpoint under its hash (idempotent: the same bytes land in the same file)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{checkpoint_hash(data)}.safetensors"
    if not path.exists():
        temporary = path.with_suffix(".tmp")
        temporary.write_bytes(data)
        temporary.replace(path)
    return path


def read_checkpoint(folder: Path, digest: str) -> bytes:
    """The checkpoint stored under `digest`; a missing or altered file is a CheckpointError naming both."""
    path = folder / f"{digest}.safetensors"
    try:
        data = path.read_bytes()
    except OSError as error:
        raise CheckpointError(f"checkpoint {digest[:12]} is missing: {path} ({error.strerror})") from error
    if checkpoint_hash(data) != digest:
        raise CheckpointError(f"checkpoint file {path} does not hash to {digest[:12]}: it was altered or truncated")
    return data
