"""Fingerprint the floating-point results a block depends on, one line per operation, to find where two machines part.

Blocks commit floats torch computes on the CPU; two machines that seal different blocks from the same demo differ in
at least one of these lines. Run it on both (`.venv/bin/python tools/numerics_fingerprint.py`) and compare: the first
differing line names the operation (BLAS, MKL's vector math, ATen's own kernels, the sprint's inputs and distances, a
forward pass, four training steps). docs/performance.md ("Not yet CPU-independent") records one machine's output.
"""

from __future__ import annotations

import hashlib
import os
import platform
from collections.abc import Callable

import numpy as np
import torch

import gonka_pipelines  # noqa: F401 - the numerics environment, which MKL and ATen read when they first run
from gonka_pipelines.compute.profiles import load_profile
from gonka_pipelines.compute.runner import ModelRunner, reproducible_threads, served_model_seed
from gonka_pipelines.compute.sprint import compute_distances
from gonka_pipelines.compute.training import TrainingSpec, evaluate, train
from gonka_pipelines.local.corpus import manifest, shard_bytes

PREV_HASH = "00" * 32


def digest(value: torch.Tensor | np.ndarray | bytes) -> str:
    """The first 16 hex digits of SHA-256 of the value's bytes."""
    data = value if isinstance(value, bytes) else np.ascontiguousarray(np.asarray(value)).tobytes()
    return hashlib.sha256(data).hexdigest()[:16]


def cpu_model() -> str:
    """The CPU's model name as /proc/cpuinfo gives it (the platform's processor string elsewhere)."""
    try:
        with open("/proc/cpuinfo") as info:
            return next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()


def elementwise() -> dict[str, str]:
    """Each unary operation the models and the sprint use, on the same million float32 values (1 thread)."""
    values = torch.rand(1_000_003, generator=torch.Generator().manual_seed(0)) * 4 + 0.01
    operations: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "log (MKL VML)": torch.log, "sqrt (MKL VML)": torch.sqrt, "sin (MKL VML)": torch.sin,
        "cos (MKL VML)": torch.cos, "exp (MKL VML)": torch.exp, "tanh (MKL VML)": torch.tanh,
        "log1p (ATen)": torch.log1p, "rsqrt (ATen)": torch.rsqrt, "sigmoid (ATen)": torch.sigmoid,
        "gelu (ATen)": torch.nn.functional.gelu, "pow 1e4**-x (ATen)": lambda x: 10_000.0 ** (-x)}
    return {name: digest(operation(values)) for name, operation in operations.items()}


def main() -> None:
    torch.set_num_threads(1)
    lines = {"cpu": cpu_model(), "torch": f"{torch.__version__}, ATen {torch.backends.cpu.get_cpu_capability()}",
             "numpy": np.__version__, "MKL_CBWR": os.environ.get("MKL_CBWR", "")}
    generator = torch.Generator().manual_seed(1)
    left, right = torch.randn(64, 256, generator=generator), torch.randn(256, 192, generator=generator)
    lines["sgemm 64x256 @ 256x192 (MKL)"] = digest(left @ right)
    lines["log_softmax (ATen)"] = digest(torch.log_softmax(left, -1))
    lines |= elementwise()
    poc = ModelRunner(load_profile("poc-tiny"), bytes(32), "cpu")
    with reproducible_threads(poc.device):
        lines["poc-tiny last logits"] = digest(poc.last_logits(torch.randn(8, 16, 64, generator=generator)))
        lines["sprint distances, 256 nonces"] = digest(compute_distances(poc, PREV_HASH, "ab" * 32, range(256)))
    shards = manifest()
    train_data, eval_data = (shard_bytes(next(s.hash for s in shards if s.role == role)) for role in ("train", "eval"))
    profile, seed = load_profile("llm-tiny"), served_model_seed("llm-tiny")
    lines["llm-tiny genesis eval loss"] = repr(evaluate(profile, seed, None, eval_data, 16, seed=0))
    run = train(profile, seed, None, train_data, TrainingSpec(steps=4, batch_size=8, learning_rate=1e-3, seed=7, checkpoint_every=4))
    lines["llm-tiny 4 training steps: losses"] = " ".join(repr(loss) for loss in run.losses)
    lines["llm-tiny 4 training steps: checkpoint"] = run.final_hash[:16]
    width = max(map(len, lines))
    for name, value in lines.items():
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
