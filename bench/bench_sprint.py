"""Sprint throughput: the full mining path against a bare forward loop of the same model and batch size.

    .venv/bin/python bench/bench_sprint.py [--profile poc-tiny] [--seconds 10] [--cpu-clock]

(a) bare: `model(x, last_only=True)` on one pre-generated batch, nothing else;
(b) mine: `compute.sprint.mine` (inputs, forward, permutation, distance, hit filtering).
The ratio mine/bare (median over alternating rounds, with its range) is the share of the time that
proof-of-compute bookkeeping leaves to the model.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import gonka_pipelines  # noqa: F401  (first: it sets the numerics blocks depend on before torch loads)

# isort: split
import torch

from gonka_pipelines.compute.profiles import load_profile
from gonka_pipelines.compute.runner import ModelRunner
from gonka_pipelines.compute.sprint import mine
from gonka_pipelines.local.config import load_genesis
from gonka_pipelines.protocol.sprint import calibrate_r_target

BLOCK_HASH = "5e" * 32
PUBLIC_KEY = "c0" * 32
ROUNDS = 7  # the two paths alternate; medians over rounds shrug off bursts of background load
BATCHES_PER_MINE_CALL = 4


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(
    step: Callable[[], int], seconds: float, device: torch.device, clock: Callable[[], float]
) -> tuple[int, float]:
    """Run step (returns nonces done) until `seconds` pass on the clock; (nonces, elapsed seconds)."""
    done, start = 0, clock()
    while clock() - start < seconds:
        done += step()
    _sync(device)
    return done, clock() - start


def bench_profile(
    name: str, seconds: float, hit_rate: float, device: str | None, clock: Callable[[], float]
) -> dict[str, object]:
    """Nonces per second of both paths on one profile, plus the measured hit rate of the mined nonces."""
    profile = load_profile(name)
    runner = ModelRunner(profile, bytes.fromhex(BLOCK_HASH), device)
    r_target = calibrate_r_target(profile.vocab, hit_rate)
    batch = profile.batch_size
    x = torch.randn(batch, profile.seq_len, profile.dim, device=runner.device, dtype=runner.dtype)
    next_nonce = 0
    hits = 0

    @torch.inference_mode()
    def bare() -> int:
        runner.model(x, last_only=True)
        return batch

    def mined() -> int:
        nonlocal next_nonce, hits
        count = batch * BATCHES_PER_MINE_CALL
        hits += len(mine(runner, BLOCK_HASH, PUBLIC_KEY, next_nonce, count, r_target)[0])
        next_nonce += count
        return count

    bare()  # warm-up: kernels, caches, lazy initialisation
    mined()
    next_nonce = hits = 0
    rates: dict[str, list[float]] = {"bare": [], "mine": []}
    for _ in range(ROUNDS):
        for key, step in (("bare", bare), ("mine", mined)):
            nonces, elapsed = _timed(step, seconds / (2 * ROUNDS), runner.device, clock)
            rates[key].append(nonces / elapsed)
    ratios = [mine / bare for bare, mine in zip(rates["bare"], rates["mine"], strict=True)]
    return {
        "profile": name,
        "device": str(runner.device),
        "batch": batch,
        "bare nonces/s": f"{statistics.median(rates['bare']):,.0f}",
        "mine nonces/s": f"{statistics.median(rates['mine']):,.0f}",
        "ratio": f"{statistics.median(ratios):.3f} ({min(ratios):.2f}-{max(ratios):.2f})",
        "hit rate": f"{hits / next_nonce:.4f} (want {hit_rate:.4f})",
    }


def print_table(rows: list[dict[str, object]]) -> None:
    columns = list(rows[0])
    widths = [max(len(column), *(len(str(row[column])) for row in rows)) for column in columns]
    print("  ".join(column.ljust(width) for column, width in zip(columns, widths, strict=True)))
    print("  ".join("-" * width for width in widths))
    for row in rows:
        print("  ".join(str(row[column]).ljust(width) for column, width in zip(columns, widths, strict=True)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", action="append", help="model profile (repeatable); default poc-tiny and poc-small")
    parser.add_argument("--seconds", type=float, default=10.0, help="measuring time per profile, split over both paths")
    parser.add_argument("--hit-rate", type=float, default=None, help="wanted hit rate; default: genesis.yaml's")
    parser.add_argument("--device", default=None, help="e.g. cpu or cuda; default: accelerate's choice")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads; default: torch's choice")
    parser.add_argument(
        "--cpu-clock", action="store_true",
        help="time by this thread's CPU time on one torch thread: steadier on a shared machine (CPU only)",
    )
    args = parser.parse_args()
    if args.threads or args.cpu_clock:
        torch.set_num_threads(1 if args.cpu_clock else args.threads)
    clock = time.thread_time if args.cpu_clock else time.perf_counter
    hit_rate = args.hit_rate or load_genesis().sprint.wanted_hit_rate
    clock_name = "CPU" if args.cpu_clock else "wall"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, {clock_name} clock")
    profiles = args.profile or ["poc-tiny", "poc-small"]
    print_table([bench_profile(name, args.seconds, hit_rate, args.device, clock) for name in profiles])


if __name__ == "__main__":
    main()
