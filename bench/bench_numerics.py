"""What reproducible numerics cost: one-thread single-precision products under MKL's compatible mode against MKL's
own choice, each in a fresh process (the settings are read when torch loads), alternating rounds.

    .venv/bin/python bench/bench_numerics.py [--rounds 3]

Prints, per setting, the median and range over rounds of the per-product time (each round: the median of 5 × 50
products of 256×1024 by 1024×1024), and the ratio of the medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

PRODUCT = """
import time, torch
torch.set_num_threads(1)
a, b = torch.randn(256, 1024), torch.randn(1024, 1024)
for _ in range(5): a @ b
times = []
for _ in range(5):
    start = time.perf_counter()
    for _ in range(50): a @ b
    times.append((time.perf_counter() - start) / 50)
print(sorted(times)[2])
"""
SETTINGS = {"reproducible (MKL_CBWR=COMPATIBLE, ATen AVX2)": {"MKL_CBWR": "COMPATIBLE", "ATEN_CPU_CAPABILITY": "avx2"},
            "MKL's own choice": {}}


def product_seconds(settings: dict[str, str]) -> float:
    """Seconds per product in a fresh interpreter that imports torch alone (not this package, which sets the mode)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MKL_CBWR", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")}
    output = subprocess.run([sys.executable, "-c", PRODUCT], env={**env, **settings}, capture_output=True, text=True, check=True)
    return float(output.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    rounds = parser.parse_args().rounds
    results: dict[str, list[float]] = {name: [] for name in SETTINGS}
    for _ in range(rounds):
        for name, settings in SETTINGS.items():
            results[name].append(product_seconds(settings))
    for name, values in results.items():
        print(f"{name:<48} {statistics.median(values) * 1000:6.2f} ms ({min(values) * 1000:.2f}-{max(values) * 1000:.2f})")
    reproducible, native = (statistics.median(v) for v in results.values())
    print(f"reproducible / MKL's own choice: {reproducible / native:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
