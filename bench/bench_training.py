"""Training throughput: the project's training path against a bare torch loop of the same model and batch.

    .venv/bin/python bench/bench_training.py [--profile llm-tiny] [--steps 24] [--batch 16] [--rounds 5] [--device cpu]

(a) bare: the seeded decoder, AdamW, pre-built batches; forward (under bf16 autocast on CUDA, as the project's path),
    cross-entropy, backward, step. Nothing else.
(b) project: `compute.training.train` for the same steps and batch on the shipped corpus: accelerate's prepared model
    and optimizer, windows drawn from the seed, checkpoints serialized and hashed every 8 steps and after the last, and
    its one-off setup (model build, Accelerator) inside the timing, as a training task pays it.
The two alternate for --rounds rounds; the table gives tokens per second (median and range) and the ratio
project / bare per round (median and range). Goal: >= 0.95.
"""

from __future__ import annotations

import argparse
import statistics
import time

import gonka_pipelines  # noqa: F401  (first: it sets the numerics blocks depend on before torch loads)

# isort: split
import torch

from gonka_pipelines.compute.decoder import build_seeded_decoder
from gonka_pipelines.compute.profiles import load_profile
from gonka_pipelines.compute.runner import reproducible_threads, resolve_device, served_model_seed
from gonka_pipelines.compute.training import BETAS, EPS, WEIGHT_DECAY, TrainingSpec, train
from gonka_pipelines.local.corpus import manifest, training_bytes

LEARNING_RATE = 3e-3
CHECKPOINT_EVERY = 8


def bare_loop(profile_name: str, steps: int, batch: int, device: torch.device) -> float:
    """Seconds for `steps` optimizer steps of the plainest loop: no accelerate, no data drawing, no checkpoints."""
    profile = load_profile(profile_name)
    model = build_seeded_decoder(profile, served_model_seed(profile_name)).train().requires_grad_(True).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY)
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randint(0, 256, (batch, profile.seq_len), generator=generator).to(device)
    targets = torch.randint(0, 256, (batch, profile.seq_len), generator=generator).to(device)
    loss_fn = torch.nn.CrossEntropyLoss()
    started = time.perf_counter()
    for _ in range(steps):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):  # as accelerate's bf16
            loss = loss_fn(model(inputs).float().reshape(-1, profile.vocab), targets.reshape(-1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


def project_path(profile_name: str, steps: int, batch: int, device: torch.device, data: bytes) -> float:
    """Seconds for one training task of `steps` steps through compute.training.train, setup included."""
    spec = TrainingSpec(steps=steps, batch_size=batch, learning_rate=LEARNING_RATE, seed=1, checkpoint_every=CHECKPOINT_EVERY)
    started = time.perf_counter()
    train(load_profile(profile_name), served_model_seed(profile_name), None, data, spec, device=str(device))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="llm-tiny")
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--batch", type=int, default=None, help="windows per step; default: the profile's micro-batch")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default=None, help="e.g. cpu or cuda; default: accelerate's choice")
    args = parser.parse_args()
    profile = load_profile(args.profile)
    batch = args.batch or profile.batch_size
    device = resolve_device(args.device)
    data = training_bytes([s.hash for s in manifest() if s.role == "train"][:1])
    tokens = args.steps * batch * profile.seq_len
    print(f"torch {torch.__version__}, {args.profile} on {device}, {args.steps} steps x {batch} windows of {profile.seq_len} "
          f"tokens ({tokens:,} tokens per run), {args.rounds} alternating rounds")
    with reproducible_threads(device):
        bare_loop(args.profile, 2, batch, device)  # warm-up: allocator, kernels
        bare, ours = [], []
        for _ in range(args.rounds):
            bare.append(tokens / bare_loop(args.profile, args.steps, batch, device))
            ours.append(tokens / project_path(args.profile, args.steps, batch, device, data))
    ratios = [o / b for o, b in zip(ours, bare)]
    print(f"{'path':10}{'tokens/s median':>18}{'range':>24}")
    for name, rates in (("bare", bare), ("project", ours)):
        print(f"{name:10}{statistics.median(rates):>18,.0f}{f'{min(rates):,.0f} .. {max(rates):,.0f}':>24}")
    print(f"ratio project / bare: median {statistics.median(ratios):.3f}, range {min(ratios):.3f} .. {max(ratios):.3f} "
          "(goal >= 0.95)")


if __name__ == "__main__":
    main()
