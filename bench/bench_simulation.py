"""Simulation mode at length: many epochs of a generated network with the tiny models, against the model's own floor.

    .venv/bin/python bench/bench_simulation.py [--hosts 100] [--epochs 1000] [--tasks 20] [--out DIR]

Runs one chain of `--hosts` hosts (capacities Pareto 1..10, the lab's population generator) for `--epochs` epochs
through every stage (lab.sweep.run_chain: resumable, so a cut-short run continues from its last block when started
again with the same --out), logging progress every 50 epochs. Prints the epochs' median and range in seconds and the
floor measured in the same run: a bare forward of the sprint model over one epoch's nonce budget (the compute no
epoch can avoid), so epoch / floor says how many times the unavoidable model compute an epoch costs.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from gonka_pipelines.compute.profiles import load_profile
from gonka_pipelines.compute.runner import ModelRunner
from gonka_pipelines.lab.sweep import SweepDefinition, population_network, run_chain
from gonka_pipelines.local.config import changed_params, load_genesis

FLOOR_ROUNDS = 5


def definition_for(hosts: int, epochs: int, tasks: int, nonces_per_capacity: int) -> SweepDefinition:
    return SweepDefinition(name="simulation-bench", grid={"sprint.nonces_per_capacity": [nonces_per_capacity]},
                           population={"hosts": hosts, "capacity": {"distribution": "pareto", "alpha": 1.2, "min": 1, "max": 10}},
                           epochs=epochs, tasks=tasks)


def bare_forward_seconds(definition: SweepDefinition) -> list[float]:
    """Seconds of a bare forward of the sprint model over one epoch's nonce budget (capacity sum × nonces per capacity),
    in batches of the profile's size, FLOOR_ROUNDS times."""
    genesis = changed_params(load_genesis(definition.profile), [f"{k}={v}" for k, v in definition.points()[0].items()])
    profile = load_profile(genesis.sprint.model)
    nonces = sum(h.capacity for h in population_network(definition.population, 0).hosts) * genesis.sprint.nonces_per_capacity
    runner = ModelRunner(profile, bytes(32), "cpu")
    batch = torch.randn(profile.batch_size, profile.seq_len, profile.dim)
    rounds = []
    with torch.inference_mode():
        for _ in range(FLOOR_ROUNDS):
            started = time.perf_counter()
            for _ in range(-(-nonces // profile.batch_size)):
                runner.last_logits(batch)
            rounds.append(time.perf_counter() - started)
    return rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=100, help="hosts in the network (default 100)")
    parser.add_argument("--epochs", type=int, default=1000, help="epochs to run (default 1000)")
    parser.add_argument("--tasks", type=int, default=20, help="inference tasks per epoch (default 20)")
    parser.add_argument("--nonces-per-capacity", type=int, default=64, help="sprint nonce budget per capacity unit (default 64)")
    parser.add_argument("--out", default="/tmp/gonka-bench-simulation", help="the chain's folder; a run cut short resumes from it")
    args = parser.parse_args()
    definition = definition_for(args.hosts, args.epochs, args.tasks, args.nonces_per_capacity)
    torch.set_num_threads(1)
    floor = bare_forward_seconds(definition)
    timings = Path(args.out) / "epoch-seconds.csv"  # every epoch's seconds, kept across a resumed run

    def record(epoch: int, seconds: float) -> None:
        with timings.open("a") as out:
            out.write(f"{epoch},{seconds:.4f}\n")

    started = time.perf_counter()
    outcome, ran = run_chain(definition, definition.points()[0], 0, Path(args.out),
                             lambda line: print(line, flush=True) if line.startswith("sweep ") else None, record)
    elapsed = time.perf_counter() - started
    if not ran:
        print(f"{args.out} already holds all {args.epochs} epochs; remove it to measure again")
    by_epoch = dict(tuple(map(float, line.split(","))) for line in timings.read_text().splitlines()) if timings.exists() else {}
    seconds = [by_epoch[e] for e in sorted(by_epoch)]
    if not seconds:
        return
    median, floor_median = statistics.median(seconds), statistics.median(floor)
    print(f"{args.hosts} hosts, {len(seconds)} epochs ({len(ran)} in this call, {elapsed:.0f}s): epoch median {median:.2f}s "
          f"(range {min(seconds):.2f}-{max(seconds):.2f}), total {sum(seconds) / 60:.1f} min; sprint model floor "
          f"{floor_median:.2f}s (range {min(floor):.2f}-{max(floor):.2f}); epoch / floor {median / floor_median:.2f}")
    window = -(-len(seconds) // 10)  # ten windows at most
    print("median seconds per tenth of the run: "
          + ", ".join(f"{statistics.median(seconds[i:i + window]):.2f}" for i in range(0, len(seconds), window)))
    print(f"outcome over all epochs: {outcome}")


if __name__ == "__main__":
    main()
