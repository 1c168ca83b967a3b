"""Compute engines: what Ray costs and what it buys on this machine, against the local engine in the same run.

    .venv/bin/python bench/bench_engines.py [--rounds 3] [--hosts 50] [--nonces 128] [--cpus N]

(1) start-up: ray.init of a local cluster on N CPUs plus one HostWorker actor per CPU, ready (a call answered);
(2) per-epoch overhead: one demo epoch (shipped genesis and network, the demo workload) with engine local and with
    engine ray on the warm cluster, alternating; ratio ray / local;
(3) a stage large enough to pay: the sprint (sprint_batches) of --hosts honest hosts mining --nonces nonces each on
    poc-small, local and ray alternating; speed-up local / ray. Its floor, measured in the same rounds: the same
    mining with no chain and no Ray, in one process and split over N plain processes (multiprocessing): the
    speed-up N processes get on this machine at all.
Every row gives the median and range over --rounds rounds; both engines must give the same block (or batches) hash.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import ray
import yaml

from gonka_pipelines.chain.store import ChainStore
from gonka_pipelines.cluster.ray_engine import RayEngine
from gonka_pipelines.compute.engine import TorchComputeSpec
from gonka_pipelines.local.config import ComputeSettings, RaySettings, load_genesis, load_network
from gonka_pipelines.local.paths import RESOURCES, DataLayout
from gonka_pipelines.protocol.crypto import hash_value
from gonka_pipelines.simulation.workload import submit_demo_workload
from gonka_pipelines.stages.environment import build_environment, holding
from gonka_pipelines.stages.genesis import init_chain
from gonka_pipelines.stages.pipeline import run_stages

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_epoch import write_network  # bench/bench_epoch.py, beside this script

LOCAL = ComputeSettings(engine="local")
SPRINT_MODEL = "poc-small"


def spread(values: list[float], unit: str = "s") -> str:
    return f"{statistics.median(values):.2f} {unit} ({min(values):.2f}-{max(values):.2f})"


def start_up(rounds: int, cpus: int) -> list[float]:
    """Seconds from nothing to a cluster whose actors answer (the first epoch on Ray pays this once per process)."""
    seconds = []
    spec = TorchComputeSpec("poc-tiny", "00" * 32, "cpu", None)
    for _ in range(rounds):
        ray.shutdown()
        started = time.perf_counter()
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
        RayEngine(RaySettings(), spec).worker_pids()
        seconds.append(time.perf_counter() - started)
    return seconds


def mine_hosts(order: tuple[list[str], int, str]) -> int:
    """Bare mining of some hosts' nonces on the sprint model (no chain, no engine): the floor's work, per process."""
    keys, nonces, prev_hash = order
    compute = TorchComputeSpec(SPRINT_MODEL, prev_hash, "cpu", None).build()
    return sum(len(compute.mine(key, 0, nonces, 0.5)[0]) for key in keys)


def bare_mining(keys: list[str], nonces: int, prev_hash: str, pool, processes: int) -> tuple[float, float]:
    """Seconds to mine every key's nonces in this process, and split over the pool's processes."""
    started = time.perf_counter()
    mine_hosts((keys, nonces, prev_hash))
    alone = time.perf_counter() - started
    shares = [(keys[i::processes], nonces, prev_hash) for i in range(processes)]
    started = time.perf_counter()
    pool.map(mine_hosts, shares)
    return alone, time.perf_counter() - started


def genesis_chain(root: Path, genesis_file: Path, network_file: Path) -> DataLayout:
    layout = DataLayout(root)
    with ChainStore.open(layout.database) as store:
        init_chain(store, layout, load_genesis(path=genesis_file), load_network(network_file))
    return layout


def timed_epoch(template: Path, workdir: Path, settings: ComputeSettings, through: str, workload: bool) -> tuple[float, str]:
    """Seconds of the epoch's stages up to `through` (the demo workload submitted first when asked, not timed) on a
    copy of the template chain; and a hash of what the last stage produced (the block, or the batches)."""
    shutil.rmtree(workdir, ignore_errors=True)
    shutil.copytree(template, workdir)
    layout = DataLayout(workdir)
    with ChainStore.open(layout.database) as store:
        if workload:
            submit_demo_workload(store, layout, load_network(), 1)
        started = time.perf_counter()
        env = build_environment(store, layout, 1, settings=settings)
        results = run_stages(env, holding(store), through=through)
        seconds = time.perf_counter() - started
        digest = results["block"] if through == "block" else hash_value(
            [r for r in store._query("SELECT host, sequence, nonces, distances FROM poc_batches ORDER BY host, sequence")])
    return seconds, str(digest)


def compare(label: str, template: Path, workdir: Path, ray_settings: ComputeSettings, rounds: int, through: str,
            workload: bool) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"local": [], "ray": []}
    digests = set()
    for round_ in range(rounds):
        for name, settings in (("local", LOCAL), ("ray", ray_settings)):
            seconds, digest = timed_epoch(template, workdir, settings, through, workload)
            times[name].append(seconds)
            digests.add(digest)
            print(f"  {label} round {round_ + 1}: {name} {seconds:.2f} s", flush=True)
    if len(digests) != 1:
        raise SystemExit(f"{label}: the engines disagree ({len(digests)} different results)")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--hosts", type=int, default=50, help="hosts mining in the sprint comparison")
    parser.add_argument("--nonces", type=int, default=128, help="nonces each host mines on poc-small (batches of 64)")
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 1, help="CPUs of the local Ray cluster")
    args = parser.parse_args()
    print(f"bench_engines: {args.cpus} CPUs for Ray, {args.rounds} rounds; torch on one thread per task (both engines)")
    ray_settings = ComputeSettings(engine="ray")
    work = Path(tempfile.mkdtemp(prefix="gonka-engines-"))
    try:
        startup = start_up(args.rounds, args.cpus)
        demo = genesis_chain(work / "demo", RESOURCES / "genesis.yaml", RESOURCES / "network.yaml")
        epoch = compare("demo epoch", demo.root, work / "run", ray_settings, args.rounds, "block", workload=True)
        genesis = yaml.safe_load((RESOURCES / "genesis.yaml").read_text())
        local = genesis["profiles"]["local"]
        local["sprint"]["model"], local["sprint"]["nonces_per_capacity"] = SPRINT_MODEL, args.nonces
        (work / "genesis.yaml").write_text(yaml.safe_dump(genesis, sort_keys=False))
        write_network(work / "network.yaml", args.hosts, 2)
        sprint = genesis_chain(work / "sprint", work / "genesis.yaml", work / "network.yaml")
        mining = compare("sprint", sprint.root, work / "run", ray_settings, args.rounds, "sprint_batches", workload=False)
        with ChainStore.open(sprint.database, read_only=True) as store:
            keys, prev_hash = [host.public_key for host in store.hosts()], store.head().hash
        floor: dict[str, list[float]] = {"alone": [], "split": []}
        with multiprocessing.get_context("forkserver").Pool(args.cpus) as pool:
            pool.map(mine_hosts, [([], 0, prev_hash)] * args.cpus)  # start the processes and import torch first
            for round_ in range(args.rounds):
                alone, split = bare_mining(keys, args.nonces, prev_hash, pool, args.cpus)
                floor["alone"].append(alone)
                floor["split"].append(split)
                print(f"  bare mining round {round_ + 1}: one process {alone:.2f} s, {args.cpus} processes {split:.2f} s", flush=True)
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    ratios = [r / loc for loc, r in zip(epoch["local"], epoch["ray"])]
    speedups = [loc / r for loc, r in zip(mining["local"], mining["ray"])]
    print()
    print(f"Ray start-up (cluster + {args.cpus} actors ready): {spread(startup)}")
    print(f"demo epoch: local {spread(epoch['local'])}, ray {spread(epoch['ray'])}; ray / local {spread(ratios, 'x')}")
    print(f"sprint, {args.hosts} hosts x {args.nonces} nonces on {SPRINT_MODEL} (collect + sprint_batches): "
          f"local {spread(mining['local'])}, ray {spread(mining['ray'])}; speed-up local / ray {spread(speedups, 'x')}")
    parallel = [alone / split for alone, split in zip(floor["alone"], floor["split"])]
    print(f"floor: the same mining bare, one process {spread(floor['alone'])}, {args.cpus} processes {spread(floor['split'])}; "
          f"speed-up {spread(parallel, 'x')}; Ray's speed-up / the floor's {spread([r / p for r, p in zip(speedups, parallel)], 'x')}; "
          f"the Ray stage / {args.cpus} bare processes {spread([r / s for r, s in zip(mining['ray'], floor['split'])], 'x')}")
    print("the same blocks and batches on both engines: yes")


if __name__ == "__main__":
    main()
