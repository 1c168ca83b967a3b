"""The explorer's page loads, idle and while an epoch runs on the same chain, in one run.

    .venv/bin/python bench/bench_explorer.py [--epochs 3] [--rounds 5]

Builds the demo chain (`gonka demo --epochs N`) in a temporary folder, starts `gonka explorer` on it, and times a GET
of each page type (overview, block, host, account, task, search) --rounds times with nothing else running. Then it
submits the demo workload again and starts `gonka run` (one epoch, its stages holding the chain's write lock in
turn) and times the same pages, round after round, until the run ends. Printed per page: median and range idle,
median and range during the run, and the ratio of the medians. The floor beside them: a GET of the static
stylesheet (the server's own overhead, no chain read) in the same rounds.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from gonka_pipelines.chain.store import ChainStore
from gonka_pipelines.local.config import load_network
from gonka_pipelines.local.paths import DataLayout
from gonka_pipelines.simulation.workload import submit_demo_workload

GONKA = Path(sys.executable).parent / "gonka"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(url: str) -> float:
    """Seconds to fetch a page whole."""
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as response:
        response.read()
    return time.perf_counter() - started


def spread(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:7.1f} ms ({min(values) * 1000:.1f}-{max(values) * 1000:.1f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="demo epochs to build before measuring")
    parser.add_argument("--rounds", type=int, default=5, help="idle rounds per page")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-explorer-"))
    layout = DataLayout(root / "chain")
    env = {**os.environ, "GONKA_DATA_DIR": str(layout.root), "DAGSTER_HOME": str(root / "dagster_home")}
    subprocess.run([str(GONKA), "demo", "--epochs", str(args.epochs)], env=env, check=True, stdout=subprocess.DEVNULL)
    with ChainStore.open(layout.database, read_only=True) as store:
        head = store.head().height
        task = next(f["task_id"] for f in store.submission_fates("") if f["task_id"])
        developer = next(a for a, n in store.account_names().items() if n == "dev-ada")
    pages = {"overview": "/", "block": f"/block/{head}", "host": "/host/host-alpha", "account": f"/account/{developer}",
             "task": f"/task/{task[:12]}", "search": "/search?q=host-bravo", "static (floor)": "/static/explorer.css"}
    port = free_port()
    server = subprocess.Popen([str(GONKA), "explorer", "--port", str(port)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert "explorer:" in server.stdout.readline()
        base = f"http://127.0.0.1:{port}"
        for path in pages.values():
            get(base + path)  # warm
        idle = {name: [get(base + path) for _ in range(args.rounds)] for name, path in pages.items()}
        with ChainStore.open(layout.database, read_only=True) as store:
            submit_demo_workload(store, layout, load_network(), epoch=head + 1)
        run = subprocess.Popen([str(GONKA), "run", "-q"], env=env, stdout=subprocess.PIPE, text=True)
        busy: dict[str, list[float]] = {name: [] for name in pages}
        busy_rounds = 0
        while run.poll() is None:
            for name, path in pages.items():
                busy[name].append(get(base + path))
            busy_rounds += 1
        print(run.stdout.read().strip())
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    print(f"\nexplorer page loads on the demo chain at height {head}: {args.rounds} idle rounds, {busy_rounds} rounds "
          "while `gonka run` ran the next epoch\n")
    print(f"{'page':<16} {'idle: median (range)':>30} {'epoch running: median (range)':>34} {'ratio':>6}")
    for name in pages:
        ratio = statistics.median(busy[name]) / statistics.median(idle[name]) if busy[name] else float("nan")
        print(f"{name:<16} {spread(idle[name]):>30} {spread(busy[name]) if busy[name] else '-':>34} {ratio:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
