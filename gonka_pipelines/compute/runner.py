"""Places a seeded decoder on a device (via accelerate) and runs inference-only forward passes."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

import torch
from accelerate import PartialState
from torch import Tensor

from gonka_pipelines.compute.decoder import Decoder, build_seeded_decoder
from gonka_pipelines.compute.profiles import ModelProfile
from gonka_pipelines.protocol.crypto import sha256_hex

log = logging.getLogger(__name__)

TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_device(device: str | None) -> torch.device:
    """The named device, else accelerate's choice (CUDA when present, else CPU).

    An explicit device bypasses accelerate on purpose: its state is process-wide and refuses `cpu=True` once it has
    picked a GPU. The choice asks PartialState (the device alone), so the mixed precision a training run's Accelerator
    sets is still free.
    """
    return torch.device(device) if device is not None else PartialState().device


def compute_dtype(profile: ModelProfile, device: torch.device) -> torch.dtype:
    """The profile's dtype; half precision falls back to float32 on CPU, where it is slow or unsupported."""
    dtype = TORCH_DTYPES[profile.dtype]
    if device.type == "cpu" and dtype != torch.float32:
        log.info("%s: %s is not used on CPU; running in float32", profile.name, profile.dtype)
        return torch.float32
    return dtype


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters (malloc.h)
MMAP_THRESHOLD = 32 << 20  # glibc's ceiling for it on 64-bit: blocks below 32 MiB come from the heap and are reused
TRIM_THRESHOLD = 1 << 30  # give the heap's free top back to the kernel only beyond 1 GiB


@cache
def keep_freed_memory() -> bool:
    """Keep memory torch frees in the process instead of handing it back to the kernel after every pass.

    By default glibc returns large freed blocks (munmap, heap trimming), so every forward pass faults its activations'
    pages in again: about 2,000 page faults per poc-tiny batch of 128, a quarter of its time. Arithmetic is unchanged;
    the cost is that RSS stays at its peak. False where the C library has no mallopt (not glibc)."""
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


class ModelRunner:
    """A profile's decoder, seeded from `seed` (or given: a trained version's), on one device; forward passes return
    float32 logits."""

    def __init__(self, profile: ModelProfile, seed: bytes, device: str | None = None, decoder: Decoder | None = None) -> None:
        keep_freed_memory()
        self.profile = profile
        self.device = resolve_device(device)
        self.dtype = compute_dtype(profile, self.device)
        model = decoder if decoder is not None else build_seeded_decoder(profile, seed)
        self.model: Decoder = model.eval().requires_grad_(False).to(device=self.device, dtype=self.dtype)

    def _prepare(self, inputs: Tensor) -> Tensor:
        """Embeddings are cast to the model's dtype; token ids stay integers; both move to the device."""
        dtype = self.dtype if inputs.is_floating_point() else None
        return inputs.to(device=self.device, dtype=dtype)

    @torch.inference_mode()
    def logits(self, inputs: Tensor) -> Tensor:
        """Logits at every position, (B, T, vocab) float32."""
        return self.model(self._prepare(inputs)).float()

    @torch.inference_mode()
    def last_logits(self, inputs: Tensor) -> Tensor:
        """Logits at the last position only, (B, vocab) float32: what a sprint nonce is scored on."""
        return self.model(self._prepare(inputs), last_only=True).float()


CPU_THREADS = 1
"""CPU kernels sum in an order that depends on the thread count; whatever enters a block is computed on one thread,
so every machine derives the same hits, outputs and blocks (it also keeps a shared 2-core machine from stalling)."""


@contextmanager
def reproducible_threads(device: torch.device) -> Iterator[None]:
    """Run CPU compute on CPU_THREADS threads (freed memory kept: keep_freed_memory), restoring the thread setting afterwards."""
    if device.type != "cpu":
        yield
        return
    keep_freed_memory()
    before = torch.get_num_threads()
    torch.set_num_threads(CPU_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def served_model_seed(model: str) -> bytes:
    """A served model's version: its weights are seeded from its name (no checkpoint is trained yet)."""
    return bytes.fromhex(sha256_hex(f"served-model|{model}".encode()))
